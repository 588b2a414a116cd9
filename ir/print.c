/* print.c — the IR's stable text form (docs/ir.md).  One header line with the
 * model's dimensions, then one line per weight and cache, then one line per op
 * in execution order.  Placement (@arena+N, @blob+N) appears once planned.
 * Numbers print with fixed formats so dumps compare byte for byte. */
#include <stdlib.h>

#include "ir.h"

/* Shortest decimal that reads back as exactly x: dumps stay short yet two
 * different values never print alike. */
static const char *num(double x, char buf[32]) {
  for (int prec = 6; prec <= 17; prec++) {
    snprintf(buf, 32, "%.*g", prec, x);
    if (strtod(buf, NULL) == x) break;
  }
  return buf;
}

static void print_type(const Value *v, FILE *f) {
  fprintf(f, "%s[", dtype_name(v->dtype));
  for (int i = 0; i < v->rank; i++) {
    if (i) fputc(',', f);
    if (i == 0 && v->dyn0) fputc('T', f);
    else fprintf(f, "%lld", (long long)v->dims[i]);
  }
  fputc(']', f);
}

static const char *const recipe_names[] = {"tensor", "fold_ln_w", "fold_ln_b"};

static void print_weight(const Value *v, FILE *f) {
  fprintf(f, "  %%%s: ", v->name);
  print_type(v, f);
  if (v->recipe == WR_TENSOR) fprintf(f, " = weight \"%s\"", v->tensor);
  else {
    fprintf(f, " = weight %s(", recipe_names[v->recipe]);
    for (int i = 0; i < 3 && v->wargs[i]; i++) fprintf(f, "%s%%%s", i ? ", " : "", v->wargs[i]->name);
    fputc(')', f);
  }
  if (v->pack_rn && v->pack_vw) fprintf(f, " packed=%dx%d", v->pack_rn, v->pack_vw);
  else if (v->pack_rn) fprintf(f, " panels=%d", v->pack_rn);
  if (v->offset >= 0) fprintf(f, " @blob+%lld", (long long)v->offset);
  fputc('\n', f);
}

static void print_attrs(const Op *o, FILE *f) {
  const OpAttr *a = &o->a;
  char nb[32];
  int n = 0;
#define SEP() fputs(n++ ? ", " : " {", f)
  switch (o->kind) {
  case OP_LAYERNORM:
    SEP(); fprintf(f, "eps=%s%s", num(a->eps, nb), o->in[1] ? "" : ", affine=folded");
    break;
  case OP_HEAD_SLICE:
    SEP(); fprintf(f, "part=%c, n_head=%d, head_dim=%d", "qkv"[a->part], a->n_head, a->head_dim);
    break;
  case OP_ROTARY:
    SEP(); fprintf(f, "n_head=%d, head_dim=%d, rotary_ndims=%d, base=%s", a->n_head, a->head_dim,
                   a->rotary_ndims, num(a->rotary_base, nb));
    break;
  case OP_KV_STORE: SEP(); fprintf(f, "layer=%d", a->layer); break;
  case OP_HIDDEN_STATE: SEP(); fprintf(f, "slot=%d", a->slot); break;
  case OP_QKV_ROTARY:
    SEP(); fprintf(f, "layer=%d, n_head=%d, head_dim=%d, rotary_ndims=%d, base=%s", a->layer, a->n_head,
                   a->head_dim, a->rotary_ndims, num(a->rotary_base, nb));
    break;
  case OP_ATTENTION_PROBS:
    SEP(); fprintf(f, "layer=%d, n_head=%d, head_dim=%d", a->layer, a->n_head, a->head_dim);
    break;
  case OP_ATTENTION:
    SEP(); fprintf(f, "layer=%d, n_head=%d, head_dim=%d, causal", a->layer, a->n_head, a->head_dim);
    break;
  case OP_MATMUL:
    if (a->gelu) { SEP(); fputs("epilogue=gelu", f); }
    for (int i = 0; i < 2; i++)
      if (a->residual[i]) { SEP(); fprintf(f, "residual=%%%s", a->residual[i]->name); }
    if (a->last_rows) { SEP(); fputs("rows=last", f); }
    if (a->tile_n) { SEP(); fprintf(f, "tile=%d/%dx%d", a->tile_n, a->tile_rn, a->tile_rt); }
    if (a->tile_k) { SEP(); fprintf(f, "k_chunk=%d", a->tile_k); }
    if (a->tile_streams > 1) { SEP(); fprintf(f, "streams=%d", a->tile_streams); }
    if (a->stage_w) { SEP(); fputs("staged", f); }
    if (a->prefetch) { SEP(); fprintf(f, "prefetch=%d", a->prefetch); }
    break;
  default: break;
  }
  if (n) fputc('}', f);
#undef SEP
}

void ir_print(const Graph *g, FILE *f) {
  const GraphDims *d = &g->dims;
  char nb[32], nb2[32];
  fprintf(f,
          "graph {n_layer=%d, d_model=%d, n_head=%d, head_dim=%d, d_ff=%d, vocab=%d, "
          "max_ctx=%d, max_block=%d, rotary_ndims=%d, rotary_base=%s, eps=%s, "
          "parallel_residual=%d, tied=%d, attention_bias=%d}\n",
          d->n_layer, d->d_model, d->n_head, d->head_dim, d->d_ff, d->vocab, d->max_ctx,
          d->max_block, d->rotary_ndims, num(d->rotary_base, nb), num(d->eps, nb2), d->parallel_residual, d->tied,
          d->attention_bias);
  ir_recount_uses((Graph *)g);
  for (int i = 0; i < g->n_values; i++) {
    const Value *v = g->values[i];
    if (v->kind == VK_INPUT) {
      fprintf(f, "  %%%s: ", v->name);
      print_type(v, f);
      fputs(" = input\n", f);
    } else if (v->kind == VK_WEIGHT && v->n_uses) {
      print_weight(v, f);
    } else if (v->kind == VK_CACHE && !v->def) {
      fprintf(f, "  %%%s: ", v->name);
      print_type(v, f);
      fprintf(f, " = cache %c layer %d\n", "kv"[v->cache_kv], v->layer);
    }
  }
  for (const Op *o = g->first; o; o = o->next) {
    fprintf(f, "  %%%s: ", o->out->name);
    print_type(o->out, f);
    fprintf(f, " = %s ", op_names[o->kind]);
    for (int i = 0; i < o->n_in; i++) fprintf(f, "%s%%%s", i ? ", " : "", o->in[i]->name);
    print_attrs(o, f);
    if (o->out == g->logits) fputs(" -> logits", f);
    else if (o->out->offset >= 0 && o->out->kind == VK_TEMP)
      fprintf(f, " @arena+%lld", (long long)o->out->offset);
    fputc('\n', f);
  }
  if (g->arena_bytes) fprintf(f, "  ; arena %lld bytes\n", (long long)g->arena_bytes);
}
