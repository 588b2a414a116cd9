/* test_ir.c — the IR and its passes, without LLVM or files other than the
 * goldens:
 *
 *   1. IR dump goldens: ir_build_neox on small GraphDims (parallel and
 *      sequential residual, tied, no attention bias, no rotary, full rotary),
 *      the pipeline with verify_each, ir_print to memory, compared byte for
 *      byte with tests/data/ir/NAME.ir.  UPDATE_GOLDEN=1 rewrites them (read
 *      the diff before committing: a golden is only as right as its review).
 *   2. Verifier: hand-broken graphs must be refused, naming the op.
 *   3. plan_memory: temps alive at the same time never share bytes; offsets
 *      64-aligned; the arena holds every temp.
 *   4. plan_weights: every weight an op reads has a 64-aligned slot of its
 *      own, in first-read order; weights no op reads have none.
 *   5. Pass behaviour: what each fusion pass leaves behind, and that the
 *      fusion-off pipeline keeps the builder's ops.
 *   6. Hidden states: where the builder puts the hidden_state ops, that the
 *      passes keep them reading the right values, and the verifier's rules.
 *
 * Prints "N passed, N failed"; exits non-zero on any failure. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"
#include "ir/neox.h"
#include "passes/pass.h"

#define TEST_FILE "test_ir.c"
#include "check.h"

/* ------------------------------------------------------------- graphs --- */

/* The "no fusion" list, as pythiac --no-fuse builds it: every optional pass
 * of the pipeline table. */
static char NO_FUSE[512];

static void init_no_fuse(void) {
  for (int i = 0; i < pass_count; i++)
    if (pass_pipeline[i].optional) {
      size_t n = strlen(NO_FUSE);
      snprintf(NO_FUSE + n, sizeof NO_FUSE - n, "%s%s", n ? "," : "", pass_pipeline[i].name);
    }
}

/* The disabled list of --fuse=KEEP: every optional pass but KEEP (a comma
 * list).  Returns a static buffer, one of a few in rotation. */
static const char *fuse_only(const char *keep) {
  static char bufs[4][512];
  static int next;
  char *out = bufs[next++ % 4], padded[256], name[96];
  out[0] = 0;
  snprintf(padded, sizeof padded, ",%s,", keep);
  for (int i = 0; i < pass_count; i++) {
    snprintf(name, sizeof name, ",%s,", pass_pipeline[i].name);
    if (!pass_pipeline[i].optional || strstr(padded, name)) continue;
    size_t n = strlen(out);
    snprintf(out + n, 512 - n, "%s%s", n ? "," : "", pass_pipeline[i].name);
  }
  return out;
}

typedef struct {
  const char *name;
  GraphDims d;
  DType wdt;
} Case;

/* Small shapes, each a different corner of GPT-NeoX:
 *   par_f16        Pythia's own choices (parallel residual, untied, biases,
 *                  partial rotary), 16-bit weights: LayerNorms stay affine
 *   seq_tied_f32   sequential residual, tied unembedding, no attention
 *                  biases, no rotary at all (rotary_ndims 0), f32 weights
 *   par_f32_rot    parallel, rotary over the whole head, odd widths, another
 *                  eps and base, f32 weights: every LayerNorm folds */
static const Case CASES[] = {
    {"par_f16",
     {.n_layer = 2, .d_model = 8, .n_head = 2, .head_dim = 4, .d_ff = 32, .vocab = 16,
      .max_ctx = 16, .rotary_ndims = 2, .max_block = 8, .rotary_base = 10000, .eps = 1e-5,
      .parallel_residual = true, .tied = false, .attention_bias = true},
     DT_F16},
    {"seq_tied_f32",
     {.n_layer = 2, .d_model = 8, .n_head = 2, .head_dim = 4, .d_ff = 32, .vocab = 16,
      .max_ctx = 16, .rotary_ndims = 0, .max_block = 8, .rotary_base = 10000, .eps = 1e-5,
      .parallel_residual = false, .tied = true, .attention_bias = false},
     DT_F32},
    {"par_f32_rot",
     {.n_layer = 1, .d_model = 12, .n_head = 3, .head_dim = 4, .d_ff = 44, .vocab = 21,
      .max_ctx = 32, .rotary_ndims = 4, .max_block = 5, .rotary_base = 500, .eps = 1e-6,
      .parallel_residual = true, .tied = false, .attention_bias = true},
     DT_F32},
};
enum { N_CASES = sizeof CASES / sizeof CASES[0] };

/* Options as pythiac passes them for --target=x86-64-v3 (8 f32 lanes). */
static PassOptions opts(const char *disabled) {
  return (PassOptions){.disabled = disabled, .verify_each = 1, .vector_width = 8};
}

/* Builds a case with the extra outputs asked for (NeoxOutputs) and runs the
 * pipeline; NULL (and a failure) if either fails. */
static Graph *build_with(Arena *a, const Case *c, unsigned outputs, const PassOptions *o, int line) {
  Graph *g = ir_build_neox(a, &c->d, c->wdt, DT_F32, outputs);
  Err e = {0};
  int rc = ir_verify(g, &e);
  reportf(rc == 0, line, "the builder's graph verifies", "%s: %s", c->name, e.msg);
  if (rc) return NULL;
  if (!o) return g;
  rc = pass_run_pipeline(g, o, &e);
  reportf(rc == 0, line, "the pipeline runs (verify_each)", "%s: %s", c->name, e.msg);
  return rc ? NULL : g;
}

static Graph *build(Arena *a, const Case *c, const PassOptions *o, int line) {
  return build_with(a, c, 0, o, line);
}

static char *dump(const Graph *g) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  ir_print(g, f);
  fclose(f);
  return buf;
}

static Op *find_op(Graph *g, const char *result_name) {
  for (Op *o = g->first; o; o = o->next)
    if (!strcmp(o->out->name, result_name)) return o;
  return NULL;
}

static int count_ops(const Graph *g, OpKind k) {
  int n = 0;
  for (const Op *o = g->first; o; o = o->next) n += o->kind == k;
  return n;
}

/* The checkpoint tensor a matmul's weight comes from (through a recipe). */
static const char *weight_tensor(const Op *mm) {
  const Value *w = mm->in[1];
  return w->recipe == WR_TENSOR ? w->tensor : w->wargs[0]->tensor;
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && !strcmp(s + n - m, suffix);
}

/* ------------------------------------------------------------ goldens --- */

static const char *src_dir(void) {
  const char *s = getenv("SRC_DIR");
  if (s && *s) return s;
  static char dir[1024];
  snprintf(dir, sizeof dir, "%s", __FILE__); /* .../tests/test_ir.c */
  char *slash = strrchr(dir, '/');
  if (slash) *slash = 0;
  slash = strrchr(dir, '/');
  if (slash) *slash = 0;
  else snprintf(dir, sizeof dir, ".");
  return dir;
}

static char *read_all(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, n = 0;
  char *s = malloc(cap);
  for (size_t got; (got = fread(s + n, 1, cap - n - 1, f)) > 0;) {
    n += got;
    if (n + 1 == cap) s = realloc(s, cap *= 2);
  }
  fclose(f);
  s[n] = 0;
  return s;
}

/* First differing line of two texts, for the failure message. */
static void first_diff(const char *want, const char *got, char *out, size_t n) {
  int line = 1;
  const char *w = want, *g = got;
  while (*w && *w == *g) {
    if (*w == '\n') line++;
    w++, g++;
  }
  while (w > want && w[-1] != '\n') w--, g--;
  int wl = (int)strcspn(w, "\n"), gl = (int)strcspn(g, "\n");
  snprintf(out, n, "line %d\n      want: %.*s\n      got:  %.*s", line, wl, w, gl, g);
}

static void golden(const char *file, const Graph *g, int line) {
  char path[1200];
  snprintf(path, sizeof path, "%s/tests/data/ir/%s", src_dir(), file);
  char *got = dump(g);
  const char *upd = getenv("UPDATE_GOLDEN");
  if (upd && *upd && strcmp(upd, "0")) {
    FILE *f = fopen(path, "wb");
    bool ok = f && fputs(got, f) >= 0;
    if (f && fclose(f)) ok = false;
    reportf(ok, line, "golden written", "%s", path);
    if (ok) fprintf(stderr, "test_ir: wrote %s\n", path);
    free(got);
    return;
  }
  char *want = read_all(path);
  if (!want) {
    reportf(false, line, "golden exists", "%s (run with UPDATE_GOLDEN=1 to create it)", path);
    free(got);
    return;
  }
  char d[1024] = "";
  if (strcmp(want, got)) first_diff(want, got, d, sizeof d);
  reportf(!strcmp(want, got), line, "IR dump equals its golden", "%s: %s", path, d);
  free(want);
  free(got);
}

static void test_goldens(void) {
  for (int i = 0; i < N_CASES; i++) {
    const Case *c = &CASES[i];
    char file[128];
    for (int fused = 1; fused >= 0; fused--) {
      Arena a = {0};
      PassOptions o = opts(fused ? NULL : NO_FUSE);
      Graph *g = build(&a, c, &o, __LINE__);
      if (g) {
        snprintf(file, sizeof file, "%s%s.ir", c->name, fused ? "" : ".nofuse");
        golden(file, g, __LINE__);
        /* the dump is a pure function of the graph */
        char *d1 = dump(g), *d2 = dump(g);
        CHECK(!strcmp(d1, d2));
        free(d1);
        free(d2);
      }
      arena_free(&a);
    }
  }
  /* --fuse=fuse_epilogue --tile=6,8,1 on the Pythia-like graph: the generic
   * epilogue fusion alone takes both parallel-branch adds, one per matmul,
   * and the tile override is recorded on every matmul */
  Arena a = {0};
  PassOptions o = opts(fuse_only("fuse_epilogue"));
  o.tile_n = 6, o.tile_rn = 8, o.tile_rt = 1;
  Graph *g = build(&a, &CASES[0], &o, __LINE__);
  if (g) golden("par_f16.fuse_epilogue.tile6.ir", g, __LINE__);
  arena_free(&a);
}

/* ----------------------------------------------------------- verifier --- */

typedef void (*Breaker)(Graph *g);

static void break_use_before_def(Graph *g) { find_op(g, "l0.ln1")->in[0] = find_op(g, "l0.attn")->out; }
static void break_residual_before_def(Graph *g) {
  /* after fusion: l0.resid's residual is l0.attn_out; point it at a later temp */
  find_op(g, "l0.resid")->a.residual[1] = find_op(g, "final_ln")->out;
}
static void break_result_shape(Graph *g) { find_op(g, "l0.qkv")->out->dims[1] = 7; }
static void break_arity_gelu(Graph *g) {
  Op *o = find_op(g, "l0.gelu");
  o->in[1] = o->in[0];
  o->n_in = 2;
}
static void break_arity_layernorm(Graph *g) { find_op(g, "l0.ln2")->n_in = 2; }
static void break_no_logits(Graph *g) { ir_remove_op(g, g->logits->def); }
static void break_last_rows(Graph *g) { find_op(g, "l0.attn_out")->a.last_rows = true; }
static void break_removed_producer(Graph *g) { ir_remove_op(g, find_op(g, "l0.gelu")); }
static void break_reads_output(Graph *g) { find_op(g, "final_ln")->in[0] = g->logits; }
static void break_operand_shape(Graph *g) {
  Op *o = find_op(g, "l0.attn_out"); /* x[T, 8] times W[8, 8]: give it the qkv rows */
  o->in[0] = find_op(g, "l0.qkv")->out;
}

static void verify_fails(const char *what, Breaker brk, bool fused, const char *op_name,
                         const char *msg_part, int line) {
  Arena a = {0};
  PassOptions o = opts(fused ? NULL : NO_FUSE);
  Graph *g = build(&a, &CASES[0], &o, line);
  if (!g) {
    arena_free(&a);
    return;
  }
  brk(g);
  Err e = {0};
  int rc = ir_verify(g, &e);
  reportf(rc == -1 && e.set && strstr(e.msg, op_name) && strstr(e.msg, msg_part), line, what,
         "want an error naming \"%s\" and saying \"%s\"; got rc %d: %s", op_name, msg_part, rc,
         e.set ? e.msg : "(no error)");
  arena_free(&a);
}

static void test_verifier(void) {
  verify_fails("operand used before its definition", break_use_before_def, false, "layernorm",
               "used before it is defined", __LINE__);
  verify_fails("fused residual used before its definition", break_residual_before_def, true,
               "matmul", "used before it is defined", __LINE__);
  verify_fails("wrong result shape", break_result_shape, false, "matmul", "wrong shape", __LINE__);
  verify_fails("operand shapes that do not fit", break_operand_shape, false, "matmul",
               "expected x[T, K] and w[N, K]", __LINE__);
  verify_fails("wrong operand count (gelu)", break_arity_gelu, false, "gelu",
               "2 operands, expected 1", __LINE__);
  verify_fails("wrong operand count (layernorm)", break_arity_layernorm, false, "layernorm",
               "2 operands, expected 3", __LINE__);
  verify_fails("logits never computed", break_no_logits, true, "logits", "never computed", __LINE__);
  verify_fails("last_rows on a matmul that is not the logits", break_last_rows, false, "matmul",
               "last_rows only applies to the logits", __LINE__);
  verify_fails("reader of a removed op", break_removed_producer, false, "matmul",
               "used before it is defined", __LINE__);
  verify_fails("an op reads the logits", break_reads_output, true, "layernorm",
               "reads the graph output", __LINE__);
}

/* -------------------------------------------------------- plan_memory --- */

static void check_memory_plan(const Graph *g, const char *name) {
  int n = g->n_values;
  int *def = malloc(sizeof(int) * (size_t)n), *last = malloc(sizeof(int) * (size_t)n);
  for (int i = 0; i < n; i++) def[i] = last[i] = -1;
  int idx = 0;
  for (const Op *o = g->first; o; o = o->next, idx++) {
    const Value *uses[5] = {o->in[0], o->in[1], o->in[2], o->a.residual[0], o->a.residual[1]};
    for (int i = 0; i < 5; i++)
      if (uses[i]) last[uses[i]->id] = idx;
    def[o->out->id] = idx;
  }
  int bad_align = 0, bad_end = 0, overlaps = 0, unplaced = 0, temps = 0;
  char first[256] = "";
  for (const Op *o = g->first; o; o = o->next) {
    const Value *v = o->out;
    if (v->kind != VK_TEMP) continue;
    temps++;
    if (v->offset < 0) {
      unplaced++;
      continue;
    }
    bad_align += v->offset % 64 != 0;
    bad_end += v->offset + ir_value_bytes(v) > g->arena_bytes;
    int lv = last[v->id] > def[v->id] ? last[v->id] : def[v->id];
    for (const Op *p = o->next; p; p = p->next) {
      const Value *u = p->out;
      if (u->kind != VK_TEMP || u->offset < 0) continue;
      int lu = last[u->id] > def[u->id] ? last[u->id] : def[u->id];
      bool live_together = def[u->id] <= lv && def[v->id] <= lu;
      bool share = u->offset < v->offset + ir_value_bytes(v) && v->offset < u->offset + ir_value_bytes(u);
      if (live_together && share) {
        if (!overlaps++)
          snprintf(first, sizeof first, "%%%s [%d,%d] @%lld and %%%s [%d,%d] @%lld", v->name, def[v->id],
                   lv, (long long)v->offset, u->name, def[u->id], lu, (long long)u->offset);
      }
    }
  }
  CHECKF(temps > 0 && unplaced == 0, "%s: %d of %d temps unplaced", name, unplaced, temps);
  CHECKF(bad_align == 0, "%s: %d temps not 64-aligned", name, bad_align);
  CHECKF(bad_end == 0, "%s: %d temps end beyond arena_bytes %lld", name, bad_end,
         (long long)g->arena_bytes);
  CHECKF(overlaps == 0, "%s: %d pairs of simultaneously live temps share bytes, e.g. %s", name,
         overlaps, first);
  /* the logits and the KV cache are not in the arena */
  CHECK(g->logits->kind == VK_OUTPUT && g->logits->offset < 0);
  free(def);
  free(last);
}

/* ------------------------------------------------------- plan_weights --- */

static void check_weight_plan(const Graph *g, const char *name) {
  /* weights in first-read order */
  const Value **order = calloc((size_t)g->n_values, sizeof *order);
  char *seen = calloc((size_t)g->n_values, 1);
  int nw = 0;
  for (const Op *o = g->first; o; o = o->next)
    for (int i = 0; i < o->n_in; i++) {
      const Value *v = o->in[i];
      if (v && v->kind == VK_WEIGHT && !seen[v->id]) seen[v->id] = 1, order[nw++] = v;
    }
  int unplaced = 0, bad_align = 0, out_of_order = 0, bad_end = 0, stray = 0;
  char first[256] = "";
  for (int i = 0; i < nw; i++) {
    const Value *w = order[i];
    if (w->offset < 0) {
      unplaced++;
      continue;
    }
    bad_align += w->offset % 64 != 0;
    bad_end += w->offset + ir_value_bytes(w) > g->weights_bytes;
    /* increasing offsets + each ends before the next starts = no overlap */
    if (i + 1 < nw && order[i + 1]->offset >= 0 &&
        w->offset + ir_value_bytes(w) > order[i + 1]->offset && !out_of_order++)
      snprintf(first, sizeof first, "%%%s @%lld+%lld then %%%s @%lld", w->name, (long long)w->offset,
               (long long)ir_value_bytes(w), order[i + 1]->name, (long long)order[i + 1]->offset);
  }
  for (int i = 0; i < g->n_values; i++) {
    const Value *v = g->values[i];
    if (v->kind == VK_WEIGHT && !seen[v->id] && v->offset >= 0) stray++;
  }
  CHECKF(nw > 0 && unplaced == 0, "%s: %d of %d read weights unplaced", name, unplaced, nw);
  CHECKF(bad_align == 0, "%s: %d weights not 64-aligned", name, bad_align);
  CHECKF(out_of_order == 0, "%s: weights overlap or are not in first-read order: %s", name, first);
  CHECKF(bad_end == 0, "%s: weights end beyond weights_bytes", name);
  CHECKF(stray == 0, "%s: %d weights that no op reads were given blob space", name, stray);
  CHECKF(g->weights_bytes % 4096 == 0, "%s: weights_bytes %lld not a whole page", name,
         (long long)g->weights_bytes);
  free(order);
  free(seen);
}

static void test_plans(void) {
  const char *modes[] = {NULL, NO_FUSE, "fold_layernorm", "fuse_epilogue", fuse_only("fuse_qkv_rotary")};
  for (int i = 0; i < N_CASES; i++)
    for (int m = 0; m < 5; m++) {
      Arena a = {0};
      PassOptions o = opts(modes[m]);
      Graph *g = build(&a, &CASES[i], &o, __LINE__);
      if (g) {
        char name[160];
        snprintf(name, sizeof name, "%s (off: %s)", CASES[i].name, modes[m] ? modes[m] : "none");
        check_memory_plan(g, name);
        check_weight_plan(g, name);
      }
      arena_free(&a);
    }
  /* a bigger shape, where sizes differ and the arena really is reused */
  Case big = CASES[0];
  big.d = (GraphDims){.n_layer = 3, .d_model = 64, .n_head = 4, .head_dim = 16, .d_ff = 256,
                      .vocab = 512, .max_ctx = 128, .rotary_ndims = 4, .max_block = 128,
                      .rotary_base = 10000, .eps = 1e-5, .parallel_residual = true,
                      .attention_bias = true};
  big.name = "tiny-like";
  Arena a = {0};
  PassOptions o = opts(NULL);
  Graph *g = build(&a, &big, &o, __LINE__);
  if (g) {
    check_memory_plan(g, big.name);
    check_weight_plan(g, big.name);
    /* reuse: much less than the sum of all temps */
    int64_t sum = 0;
    for (Op *op = g->first; op; op = op->next)
      if (op->out->kind == VK_TEMP) sum += ir_value_bytes(op->out);
    CHECKF(g->arena_bytes < sum / 3, "arena %lld, temps %lld", (long long)g->arena_bytes, (long long)sum);
  }
  arena_free(&a);
}

/* ---------------------------------------------------- pass behaviour --- */

static void test_parallel_f16_fused(void) {
  Arena a = {0};
  PassOptions o = opts(NULL);
  const Case *c = &CASES[0];
  Graph *g = build(&a, c, &o, __LINE__);
  if (!g) {
    arena_free(&a);
    return;
  }
  CHECK(count_ops(g, OP_GELU) == 0);
  CHECK(count_ops(g, OP_ADD) == 0);
  int fc2 = 0, fc2_ok = 0;
  Value *x = find_op(g, "embed")->out; /* layer 0's input */
  for (Op *op = g->first; op; op = op->next) {
    if (op->kind != OP_MATMUL || !ends_with(weight_tensor(op), "mlp.dense_4h_to_h.weight")) continue;
    fc2++;
    Value *r0 = op->a.residual[0], *r1 = op->a.residual[1];
    /* residual[0] = the layer's input x, residual[1] = the attention branch */
    fc2_ok += r0 == x && r1 && r1->def && r1->def->kind == OP_MATMUL &&
              ends_with(weight_tensor(r1->def), "attention.dense.weight") && op->a.gelu == false &&
              op->in[0]->def->a.gelu;
    x = op->out; /* the next layer's input */
  }
  CHECK(fc2 == c->d.n_layer);
  CHECKF(fc2_ok == fc2, "%d of %d fc2 matmuls carry residual=x, residual=attn_out", fc2_ok, fc2);
  /* 16-bit weights: no LayerNorm is folded */
  int ln = 0, affine = 0;
  for (Op *op = g->first; op; op = op->next)
    if (op->kind == OP_LAYERNORM) ln++, affine += op->n_in == 3 && op->in[1] && op->in[2];
  CHECK(ln == 2 * c->d.n_layer + 1);
  CHECKF(affine == ln, "%d of %d LayerNorms keep gamma, beta with f16 weights", affine, ln);
  arena_free(&a);

  /* the same with bf16 weights */
  Case b = *c;
  b.wdt = DT_BF16;
  g = build(&a, &b, &o, __LINE__);
  if (g) {
    affine = 0;
    for (Op *op = g->first; op; op = op->next) affine += op->kind == OP_LAYERNORM && op->n_in == 3;
    CHECKF(affine == 2 * b.d.n_layer + 1, "bf16: %d LayerNorms affine", affine);
  }
  arena_free(&a);
}

static void test_fold_f32(void) {
  for (int i = 1; i < N_CASES; i++) {
    const Case *c = &CASES[i];
    Arena a = {0};
    PassOptions o = opts(NULL);
    Graph *g = build(&a, c, &o, __LINE__);
    if (!g) {
      arena_free(&a);
      continue;
    }
    int ln = 0, folded = 0, recipes = 0, mm_after = 0;
    for (Op *op = g->first; op; op = op->next) {
      if (op->kind == OP_LAYERNORM) {
        ln++;
        folded += op->n_in == 1 && !op->in[1] && !op->in[2];
      }
      /* every matmul that reads a LayerNorm reads folded weights and a folded bias */
      if (op->kind == OP_MATMUL && op->in[0]->def && op->in[0]->def->kind == OP_LAYERNORM) {
        mm_after++;
        recipes += op->n_in == 3 && op->in[1]->recipe == WR_FOLD_LN_W &&
                   op->in[2]->recipe == WR_FOLD_LN_B && op->in[1]->dtype == DT_F32 &&
                   op->in[2]->dtype == DT_F32 && op->in[1]->wargs[1] && op->in[2]->wargs[1];
      }
    }
    CHECK(ln == 2 * c->d.n_layer + 1);
    /* with tied embeddings the final LayerNorm stays: its matmul's W is the
     * table `embed` reads, and folding would store it twice */
    int expect = c->d.tied ? ln - 1 : ln;
    CHECKF(folded == expect, "%s: %d of %d LayerNorms folded with f32 weights", c->name, folded, expect);
    CHECKF(recipes == expect && mm_after == ln, "%s: %d of %d matmuls after a LayerNorm fold", c->name,
           recipes, mm_after);
    /* gamma and beta themselves are no longer read by any op: not in the blob */
    int stray = 0;
    for (int v = 0; v < g->n_values; v++) {
      const Value *w = g->values[v];
      if (w->kind == VK_WEIGHT && w->tensor && strstr(w->tensor, "layernorm") && w->offset >= 0) stray++;
      if (w->kind == VK_WEIGHT && w->tensor && strstr(w->tensor, "layer_norm") && w->offset >= 0) stray++;
    }
    CHECKF(stray == (c->d.tied ? 2 : 0), "%s: %d LayerNorm parameters still placed", c->name, stray);
    arena_free(&a);
  }
  /* tied + f32: the final LayerNorm keeps its affine; the unembedding reads
   * the very table the embed op reads (stored once) */
  Arena a = {0};
  PassOptions o = opts(NULL);
  Graph *g = build(&a, &CASES[1], &o, __LINE__);
  if (g) {
    Op *emb = find_op(g, "embed"), *lo = g->logits->def;
    CHECK(emb->in[1]->recipe == WR_TENSOR && !strcmp(emb->in[1]->tensor, "gpt_neox.embed_in.weight"));
    CHECK(lo->in[1] == emb->in[1] && lo->in[0]->def->kind == OP_LAYERNORM && lo->in[0]->def->in[1]);
    CHECK(lo->a.last_rows && !lo->a.residual[0] && !lo->a.gelu);
  }
  arena_free(&a);
}

static void test_sequential_fused(void) {
  Arena a = {0};
  PassOptions o = opts(NULL);
  const Case *c = &CASES[1];
  Graph *g = build(&a, c, &o, __LINE__);
  if (!g) {
    arena_free(&a);
    return;
  }
  CHECK(count_ops(g, OP_GELU) == 0);
  CHECK(count_ops(g, OP_ADD) == 0);
  CHECK(count_ops(g, OP_ROTARY) == 0); /* rotary_ndims 0: no rotary op at all */
  Value *x = find_op(g, "embed")->out;
  int ok = 0;
  for (int l = 0; l < c->d.n_layer; l++) {
    char n1[32], n2[32];
    snprintf(n1, sizeof n1, "l%d.resid_attn", l); /* attn_out, renamed by the fusion */
    snprintf(n2, sizeof n2, "l%d.resid", l);      /* mlp_out, renamed */
    Op *h = find_op(g, n1), *y = find_op(g, n2);
    ok += h && y && h->kind == OP_MATMUL && y->kind == OP_MATMUL && h->a.residual[0] == x &&
          !h->a.residual[1] && y->a.residual[0] == h->out && !y->a.residual[1] &&
          h->n_in == 2 /* no attention bias */;
    if (y) x = y->out;
  }
  CHECKF(ok == c->d.n_layer, "%d of %d layers: h = x + attn (fused), x' = h + mlp (fused)", ok,
         c->d.n_layer);
  arena_free(&a);

  /* fuse_parallel_residual leaves a sequential graph alone */
  g = build(&a, c, NULL, __LINE__);
  if (g) {
    char *before = dump(g);
    Err e = {0};
    CHECK(pass_fuse_parallel_residual(g, &o, &e) == 0);
    char *after = dump(g);
    CHECK(!strcmp(before, after));
    free(before);
    free(after);
  }
  arena_free(&a);
}

static char *run_pass(Graph *g, PassFn fn, int line);

/* fuse_qkv_rotary: split, rotary and cache writes of every layer in one op,
 * attention reading the layer's caches directly. */
static void test_qkv_rotary(void) {
  for (int i = 0; i < N_CASES; i++) {
    const Case *c = &CASES[i];
    Arena a = {0};
    PassOptions o = opts(NULL);
    Graph *g = build(&a, c, &o, __LINE__);
    if (!g) {
      arena_free(&a);
      continue;
    }
    CHECK(count_ops(g, OP_HEAD_SLICE) == 0 && count_ops(g, OP_ROTARY) == 0 && count_ops(g, OP_KV_STORE) == 0);
    CHECK(count_ops(g, OP_QKV_ROTARY) == c->d.n_layer);
    int ok = 0, l = 0;
    for (Op *op = g->first; op; op = op->next) {
      if (op->kind != OP_ATTENTION) continue;
      Op *f = op->in[0]->def;
      ok += f && f->kind == OP_QKV_ROTARY && f->next == op && op->a.layer == l &&
            op->in[1] == g->kcache[l] && op->in[2] == g->vcache[l] && f->in[1] == g->kcache[l] &&
            f->in[2] == g->vcache[l] && f->a.layer == l && f->a.rotary_ndims == c->d.rotary_ndims &&
            (c->d.rotary_ndims == 0 || f->a.rotary_base == c->d.rotary_base) &&
            f->in[0]->def->kind == OP_MATMUL && ends_with(weight_tensor(f->in[0]->def), "query_key_value.weight");
      l++;
    }
    CHECKF(ok == c->d.n_layer, "%s: %d of %d layers fused as qkv_rotary -> attention", c->name, ok,
           c->d.n_layer);
    /* op ids follow list order again */
    int id = 0, in_order = 1;
    for (Op *op = g->first; op; op = op->next) in_order &= op->id == id++;
    CHECK(in_order && g->n_ops == id);
    arena_free(&a);
  }
  /* an intermediate with a second reader keeps its layer unfused */
  Arena a = {0};
  Graph *g = build(&a, &CASES[0], NULL, __LINE__);
  if (g) {
    Value *kr = find_op(g, "l0.k_rot")->out;
    Value *in[2] = {kr, kr};
    ir_op(g, OP_ADD, in, 2, NULL, "extra_reader");
    char *d = run_pass(g, pass_fuse_qkv_rotary, __LINE__);
    CHECKF(count_ops(g, OP_QKV_ROTARY) == 1 && find_op(g, "l0.k_rot") && !find_op(g, "l1.k_rot") &&
           find_op(g, "l0.kcache") && find_op(g, "l1.q_rot")->kind == OP_QKV_ROTARY, "%s", d);
    free(d);
  }
  arena_free(&a);
}

/* Prefill staging of 16-bit W (tile_matmul.c): on by default, where K is
 * chunked it caps TN so the f32 chunk is 512 KiB (512 rows x 256); f32 W
 * is never staged; --no-stage keeps 1024-row blocks and no flag; a --tile
 * whose staged chunk exceeds 1 MiB is refused. */
static void test_staging(void) {
  const Case big = {"big_f16",
                    {.n_layer = 1, .d_model = 1024, .n_head = 8, .head_dim = 128, .d_ff = 4096, .vocab = 64,
                     .max_ctx = 16, .rotary_ndims = 32, .max_block = 64, .rotary_base = 10000, .eps = 1e-5,
                     .parallel_residual = true, .attention_bias = true},
                    DT_F16};
  Case big32 = big;
  big32.wdt = DT_F32;
  Arena a = {0};
  PassOptions o = opts(NULL);
  o.vector_width = 16;
  Graph *g = build(&a, &big, &o, __LINE__);
  const Op *fc2 = g ? find_op(g, "l0.resid") : NULL;
  if (fc2) CHECKF(fc2->a.stage_w && fc2->a.tile_n == 512 && fc2->a.tile_k == 256, "tile_n %d k %d staged %d",
                  fc2->a.tile_n, fc2->a.tile_k, fc2->a.stage_w);
  arena_free(&a);
  g = build(&a, &big32, &o, __LINE__);
  fc2 = g ? find_op(g, "l0.resid") : NULL;
  if (fc2) CHECKF(!fc2->a.stage_w && fc2->a.tile_n == 1024, "f32: tile_n %d staged %d", fc2->a.tile_n, fc2->a.stage_w);
  arena_free(&a);
  o.no_stage = 1;
  g = build(&a, &big, &o, __LINE__);
  fc2 = g ? find_op(g, "l0.resid") : NULL;
  if (fc2) {
    CHECKF(!fc2->a.stage_w && fc2->a.tile_n == 1024, "--no-stage: tile_n %d staged %d", fc2->a.tile_n, fc2->a.stage_w);
    char *d = dump(g);
    CHECK(!strstr(d, "staged"));
    free(d);
  }
  arena_free(&a);
  /* --max-block 8192: the staged x chunk (8192 x 272 floats) would pass 4 MiB of
   * stack: not staged, and the IR says so */
  Case huge = big;
  huge.d.max_block = 8192;
  o.no_stage = 0;
  g = build(&a, &huge, &o, __LINE__);
  fc2 = g ? find_op(g, "l0.resid") : NULL;
  if (fc2) CHECKF(!fc2->a.stage_w, "max_block 8192: staged %d", fc2->a.stage_w);
  arena_free(&a);
  o.tile_n = 2048;
  o.tile_k = 256;
  g = ir_build_neox(&a, &big.d, big.wdt, DT_F32, 0);
  Err e = {0};
  /* parked accumulators (64 x 2048 floats) fit; the staged chunk (2 MiB) does not */
  CHECKF(pass_run_pipeline(g, &o, &e) == -1 && strstr(e.msg, "staged W"), "%s", e.msg);
  arena_free(&a);
}

/* Op counts per kind of the builder's graph vs. after the pipeline. */
static void test_no_fuse_keeps_ops(void) {
  for (int i = 0; i < N_CASES; i++) {
    Arena a = {0}, b = {0};
    Graph *g0 = build(&a, &CASES[i], NULL, __LINE__);
    PassOptions o = opts(NO_FUSE);
    Graph *g = build(&b, &CASES[i], &o, __LINE__);
    if (g0 && g) {
      int same = 0;
      for (int k = 0; k < OP_COUNT; k++) same += count_ops(g0, (OpKind)k) == count_ops(g, (OpKind)k);
      CHECKF(same == OP_COUNT && g->n_ops == g0->n_ops, "%s: op counts differ", CASES[i].name);
      int plain = 0, mms = 0;
      for (Op *op = g->first; op; op = op->next)
        if (op->kind == OP_MATMUL) {
          mms++;
          plain += !op->a.gelu && !op->a.residual[0] && op->in[1]->recipe == WR_TENSOR &&
                   op->a.tile_n > 0 && op->a.tile_n % op->a.tile_rn == 0;
        }
      CHECKF(plain == mms, "%s: %d of %d matmuls unfused and tiled", CASES[i].name, plain, mms);
      int affine = 0;
      for (Op *op = g->first; op; op = op->next) affine += op->kind == OP_LAYERNORM && op->n_in == 3;
      CHECK(affine == count_ops(g, OP_LAYERNORM));
    }
    arena_free(&a);
    arena_free(&b);
  }
}

static void test_single_passes(void) {
  const Case *c = &CASES[0];
  const int L = c->d.n_layer;
  Arena a = {0};
  /* fuse_parallel_residual alone: both adds of a layer go, the GELU stays */
  PassOptions o = opts(fuse_only("fuse_parallel_residual"));
  Graph *g = build(&a, c, &o, __LINE__);
  if (g) {
    CHECK(count_ops(g, OP_ADD) == 0);
    CHECK(count_ops(g, OP_GELU) == L);
  }
  arena_free(&a);
  /* fuse_epilogue alone (--fuse=fuse_epilogue): attn_out takes x, the MLP's
   * down projection takes the attention sum */
  o = opts(fuse_only("fuse_epilogue"));
  g = build(&a, c, &o, __LINE__);
  if (g) {
    CHECK(count_ops(g, OP_ADD) == 0 && count_ops(g, OP_GELU) == 0);
    Op *sum = find_op(g, "l0.resid_attn"), *y = find_op(g, "l0.resid");
    CHECK(sum && sum->kind == OP_MATMUL && sum->a.residual[0] == find_op(g, "embed")->out &&
          !sum->a.residual[1]);
    CHECK(y && y->kind == OP_MATMUL && y->a.residual[0] == sum->out && !y->a.residual[1]);
  }
  arena_free(&a);
  /* required passes cannot be switched off: the list names them in vain */
  o = opts("tile_matmul,plan_weights,plan_memory");
  g = build(&a, c, &o, __LINE__);
  if (g) {
    CHECK(g->arena_bytes > 0 && g->weights_bytes > 0);
    CHECK(g->logits->def->a.tile_n > 0);
  }
  arena_free(&a);
  /* --tile override, TN rounded up to a multiple of the panel rows */
  o = opts(NULL);
  o.tile_n = 10, o.tile_rn = 8, o.tile_rt = 3;
  g = build(&a, c, &o, __LINE__);
  if (g) {
    int ok = 0, n = 0;
    for (Op *op = g->first; op; op = op->next)
      if (op->kind == OP_MATMUL) n++, ok += op->a.tile_n == 16 && op->a.tile_rn == 8 && op->a.tile_rt == 3;
    CHECKF(ok == n, "%d of %d matmuls tiled 16/8x3", ok, n);
  }
  arena_free(&a);
  /* panel rows that are not a multiple of the vector width (8), or more
   * than 8 vectors, are refused, naming the pass */
  const int bad_rn[] = {9, 12, 72};
  for (int i = 0; i < 3; i++) {
    o = opts(NULL);
    o.tile_rn = bad_rn[i];
    g = ir_build_neox(&a, &c->d, c->wdt, DT_F32, 0);
    Err e = {0};
    CHECKF(pass_run_pipeline(g, &o, &e) == -1 && strstr(e.msg, "pass tile_matmul:") && strstr(e.msg, "RN"), "RN %d: %s",
           bad_rn[i], e.msg);
    arena_free(&a);
  }
  /* default tiles, 256-bit vectors: panels of 2 vectors, 6 tokens, ~1 MiB
   * of W per block (at most 1024 rows), 4 decode streams; k chunks of 256
   * only where K is longer */
  o = opts(NULL);
  g = build(&a, c, &o, __LINE__);
  if (g) {
    const OpAttr *t = &g->logits->def->a;
    CHECKF(t->tile_n == 1024 && t->tile_rn == 16 && t->tile_rt == 6 && t->tile_streams == 4 && t->tile_k == 0,
           "tile %d/%dx%d streams %d k %d", t->tile_n, t->tile_rn, t->tile_rt, t->tile_streams, t->tile_k);
  }
  arena_free(&a);
  o.vector_width = 16; /* AVX-512: 32-row panels, 12 tokens, 8 streams */
  g = build(&a, c, &o, __LINE__);
  if (g) CHECK(g->logits->def->a.tile_rt == 12 && g->logits->def->a.tile_rn == 32 && g->logits->def->a.tile_streams == 8);
  arena_free(&a);
  test_staging();
}

/* Hand-built graphs for the legality conditions the GPT-NeoX builder never
 * exercises: ids -> embed -> (body) -> logits. */
static const GraphDims MINI = {.n_layer = 0, .d_model = 8, .n_head = 2, .head_dim = 4, .d_ff = 16,
                               .vocab = 16, .max_ctx = 16, .max_block = 4, .rotary_base = 10000,
                               .eps = 1e-5};

static Value *mini_begin(Arena *a, Graph **gp) {
  Graph *g = *gp = ir_graph_new(a, &MINI);
  int64_t td[1] = {MINI.max_block}, ed[2] = {MINI.vocab, MINI.d_model};
  g->tokens = ir_value(g, VK_INPUT, DT_I32, "ids", 1, td, true);
  Value *in[2] = {g->tokens, ir_weight(g, "embed", DT_F32, 2, ed)};
  return ir_op(g, OP_EMBED, in, 2, NULL, "x")->out;
}

static void mini_end(Graph *g, Value *x) {
  int64_t ud[2] = {MINI.vocab, MINI.d_model};
  Value *in[2] = {x, ir_weight(g, "unembed", DT_F32, 2, ud)};
  OpAttr la = {.last_rows = true};
  Op *lo = ir_op(g, OP_MATMUL, in, 2, &la, "logits");
  lo->out->kind = VK_OUTPUT;
  g->logits = lo->out;
}

static Value *mini_mm(Graph *g, Value *x, const char *name, const OpAttr *at) {
  int64_t wd[2] = {MINI.d_model, MINI.d_model};
  Value *in[2] = {x, ir_weight(g, arena_printf(g->arena, "%s.w", name), DT_F32, 2, wd)};
  return ir_op(g, OP_MATMUL, in, 2, at, name)->out;
}

static Value *mini_ln(Graph *g, Value *x, const char *name) {
  int64_t vd[1] = {MINI.d_model};
  Value *in[3] = {x, ir_weight(g, arena_printf(g->arena, "%s.g", name), DT_F32, 1, vd),
                  ir_weight(g, arena_printf(g->arena, "%s.b", name), DT_F32, 1, vd)};
  OpAttr at = {.eps = 1e-5};
  return ir_op(g, OP_LAYERNORM, in, 3, &at, name)->out;
}

static Value *mini_op2(Graph *g, OpKind k, Value *a0, Value *a1, const char *name) {
  Value *in[2] = {a0, a1};
  return ir_op(g, k, in, a1 ? 2 : 1, NULL, name)->out;
}

/* Runs one pass on g, verifies, and returns the dump (caller frees). */
static char *run_pass(Graph *g, PassFn fn, int line) {
  Err e = {0};
  PassOptions o = opts(NULL);
  int rc = ir_verify(g, &e);
  reportf(rc == 0, line, "hand-built graph verifies", "%s", e.msg);
  rc = fn(g, &o, &e) || ir_verify(g, &e);
  reportf(rc == 0, line, "pass runs and the result verifies", "%s", e.msg);
  return dump(g);
}

static void test_legality(void) {
  Arena a = {0};
  Graph *g;
  /* gelu after a matmul that already adds a residual: the epilogue order is
   * bias, gelu, residual, so gelu(x W + r) cannot be fused */
  Value *x = mini_begin(&a, &g);
  OpAttr ra = {.residual = {x}};
  Value *y = mini_mm(g, x, "mm", &ra);
  mini_end(g, mini_op2(g, OP_GELU, y, NULL, "act"));
  char *d = run_pass(g, pass_fuse_epilogue, __LINE__);
  CHECKF(count_ops(g, OP_GELU) == 1 && !y->def->a.gelu, "%s", d);
  free(d);
  arena_free(&a);

  /* a matmul result read twice cannot take an add: the other reader wants
   * the value without it */
  x = mini_begin(&a, &g);
  y = mini_mm(g, x, "mm", NULL);
  Value *s = mini_op2(g, OP_ADD, x, y, "sum");
  mini_end(g, mini_op2(g, OP_ADD, s, y, "sum2"));
  d = run_pass(g, pass_fuse_epilogue, __LINE__);
  CHECKF(!y->def->a.residual[0], "%s", d);
  free(d);
  arena_free(&a);

  /* the residual operand must exist before the matmul runs */
  x = mini_begin(&a, &g);
  y = mini_mm(g, x, "mm", NULL);
  Value *late = mini_ln(g, x, "late");
  mini_end(g, mini_op2(g, OP_ADD, late, y, "sum"));
  d = run_pass(g, pass_fuse_epilogue, __LINE__);
  CHECKF(count_ops(g, OP_ADD) == 1 && !y->def->a.residual[0], "%s", d);
  free(d);
  arena_free(&a);

  /* the same add with the residual defined first is fused, and a third add
   * finds no free residual slot after two */
  x = mini_begin(&a, &g);
  Value *r1 = mini_ln(g, x, "r1"), *r2 = mini_ln(g, x, "r2"), *r3 = mini_ln(g, x, "r3");
  y = mini_mm(g, x, "mm", NULL);
  Value *t = mini_op2(g, OP_ADD, y, r1, "t1");
  t = mini_op2(g, OP_ADD, r2, t, "t2");
  mini_end(g, mini_op2(g, OP_ADD, t, r3, "t3"));
  d = run_pass(g, pass_fuse_epilogue, __LINE__);
  CHECKF(count_ops(g, OP_ADD) == 1 && y->def->a.residual[0] == r1 && y->def->a.residual[1] == r2 &&
         !strcmp(y->name, "t2"), "%s", d);
  free(d);
  arena_free(&a);

  /* a LayerNorm with a reader that is not a matmul keeps its affine; one
   * read only by matmuls folds into each of them */
  x = mini_begin(&a, &g);
  Value *n1 = mini_ln(g, x, "n1");
  Value *p = mini_mm(g, n1, "p", NULL);
  Value *q = mini_op2(g, OP_ADD, n1, p, "q");
  Value *n2 = mini_ln(g, q, "n2");
  Value *u = mini_mm(g, n2, "u", NULL), *v = mini_mm(g, n2, "v", NULL);
  mini_end(g, mini_op2(g, OP_ADD, u, v, "uv"));
  d = run_pass(g, pass_fold_layernorm, __LINE__);
  CHECKF(n1->def->n_in == 3 && p->def->in[1]->recipe == WR_TENSOR, "%s", d);
  CHECKF(n2->def->n_in == 1 && u->def->in[1]->recipe == WR_FOLD_LN_W && v->def->in[1]->recipe == WR_FOLD_LN_W &&
         u->def->in[2]->recipe == WR_FOLD_LN_B && !u->def->in[2]->wargs[2], "%s", d);
  free(d);
  arena_free(&a);

  /* a LayerNorm read by the logits matmul as its residual is not folded */
  x = mini_begin(&a, &g);
  n1 = mini_ln(g, x, "n1");
  ra = (OpAttr){.residual = {n1}};
  mini_end(g, mini_mm(g, n1, "mm", &ra));
  d = run_pass(g, pass_fold_layernorm, __LINE__);
  CHECKF(n1->def->n_in == 3, "%s", d);
  free(d);
  arena_free(&a);
}

static void test_pipeline_table(void) {
  /* the passes docs/passes.md describes: in this order (others may sit
   * between them), fusion optional, tiling and planning required, planning
   * last */
  static const char *const order[] = {"fold_layernorm", "fuse_parallel_residual", "fuse_epilogue",
                                      "tile_matmul",    "plan_weights",           "plan_memory"};
  static const int optional[] = {1, 1, 1, 0, 0, 0};
  int at = -1;
  for (int k = 0; k < 6; k++) {
    int found = -1;
    for (int i = 0; i < pass_count; i++)
      if (!strcmp(pass_pipeline[i].name, order[k])) found = i;
    CHECKF(found > at && pass_pipeline[found < 0 ? 0 : found].optional == optional[k],
           "pass %s at %d (after %d), optional %d", order[k], found, at,
           found < 0 ? -1 : pass_pipeline[found].optional);
    at = found;
  }
  CHECK(at == pass_count - 1);
  Err e = {0};
  CHECK(pass_check_names("fuse_epilogue,fold_layernorm", 1, &e) == 0);
  e = (Err){0};
  CHECKF(pass_check_names("fuse_epilogue,bogus", 1, &e) == -1 && strstr(e.msg, "\"bogus\""), "%s", e.msg);
  e = (Err){0};
  CHECKF(pass_check_names("plan_memory", 1, &e) == -1 && strstr(e.msg, "switched off"), "%s", e.msg);
  e = (Err){0};
  CHECK(pass_check_names("plan_memory", 0, &e) == 0);
  PassOptions o = opts("fuse_epilogue");
  CHECK(pass_is_disabled(&o, "fuse_epilogue") && !pass_is_disabled(&o, "fuse") &&
        !pass_is_disabled(&o, "fold_layernorm"));

  /* --print-after=PASS prints once, "; after PASS" then the dump */
  Arena a = {0};
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  o = opts(NULL);
  o.print_after = "fuse_epilogue";
  o.print_to = f;
  Graph *g = build(&a, &CASES[0], &o, __LINE__);
  fclose(f);
  if (g) {
    CHECKF(!strncmp(buf, "; after fuse_epilogue\ngraph {", 29), "%.60s", buf);
    CHECK(strstr(buf + 1, "; after") == NULL);
    CHECK(strstr(buf, "@arena+") == NULL); /* memory is planned later */
  }
  free(buf);
  arena_free(&a);
  /* --print-after=all prints after every pass that ran */
  f = open_memstream(&buf, &len);
  o = opts(NO_FUSE);
  o.print_after = "all";
  o.print_to = f;
  g = build(&a, &CASES[0], &o, __LINE__);
  fclose(f);
  if (g) {
    int n = 0;
    for (const char *p = buf; (p = strstr(p, "; after ")); p++) n++;
    int required = 0;
    for (int i = 0; i < pass_count; i++) required += !pass_pipeline[i].optional;
    CHECKF(n == required, "%d dumps, %d required passes", n, required);
    CHECK(!strstr(buf, "; after fold_layernorm") && strstr(buf, "; after plan_memory"));
  }
  free(buf);
  arena_free(&a);
}

/* Value ids, names and the text do not depend on anything but the dims. */
static void test_builder(void) {
  Arena a = {0}, b = {0};
  Graph *g1 = build(&a, &CASES[0], NULL, __LINE__), *g2 = build(&b, &CASES[0], NULL, __LINE__);
  if (g1 && g2) {
    char *d1 = dump(g1), *d2 = dump(g2);
    CHECK(!strcmp(d1, d2));
    /* unplanned: no placement annotations, no arena line */
    CHECK(!strstr(d1, "@blob+") && !strstr(d1, "@arena+") && !strstr(d1, "; arena"));
    CHECK(strstr(d1, "-> logits\n") != NULL);
    free(d1);
    free(d2);
    const GraphDims *d = &CASES[0].d;
    int per_layer_rot = 1 + 1 + 3 + 2 + 2 + 1 + 1 + 1 + 1 + 1 + 1 + 2; /* ln1 qkv slices rot kv attn dense ln2 fc1 gelu fc2 adds */
    CHECKF(g1->n_ops == 1 + d->n_layer * per_layer_rot + 2, "%d ops", g1->n_ops);
    CHECK(g1->logits->def->a.last_rows && g1->logits->kind == VK_OUTPUT && g1->logits->dyn0);
    /* head_slice parts q, k, v in order, each [T, n_head*head_dim] */
    Op *q = find_op(g1, "l0.q"), *k = find_op(g1, "l0.k"), *v = find_op(g1, "l0.v");
    CHECK(q && k && v && q->a.part == 0 && k->a.part == 1 && v->a.part == 2 &&
          q->out->dims[1] == d->d_model && q->in[0] == k->in[0]);
    /* kv_store results are the caches, attention reads them */
    Op *att = find_op(g1, "l0.attn");
    CHECK(att && att->in[1]->kind == VK_CACHE && att->in[1]->def && att->in[1]->def->kind == OP_KV_STORE &&
          att->in[2]->cache_kv == 1 && att->in[1]->cache_kv == 0 && att->a.layer == 0);
  }
  arena_free(&a);
  arena_free(&b);
}

/* ------------------------------------------------------ hidden states --- */

/* The value slot s's hidden_state op reads, or NULL. */
static const Value *hidden_input(const Graph *g, int slot) {
  for (const Op *o = g->first; o; o = o->next)
    if (o->kind == OP_HIDDEN_STATE && o->a.slot == slot) return o->in[0];
  return NULL;
}

static void test_hidden_states(void) {
  for (int fused = 1; fused >= 0; fused--) {
    Arena a = {0};
    const Case *c = &CASES[1]; /* f32 (LayerNorms fold), sequential, tied */
    const int L = c->d.n_layer;
    PassOptions o = opts(fused ? NULL : NO_FUSE);
    Graph *g = build_with(&a, c, NEOX_HIDDEN_STATES, &o, __LINE__);
    if (!g) {
      arena_free(&a);
      continue;
    }
    if (fused) golden("seq_tied_f32.hidden.ir", g, __LINE__);
    CHECK(g->n_hidden == L + 1 && count_ops(g, OP_HIDDEN_STATE) == L + 1);
    /* Hugging Face's order: the embeddings, each later layer's input, the final LayerNorm */
    CHECK(hidden_input(g, 0) == find_op(g, "embed")->out);
    char name[32];
    for (int l = 1; l < L; l++) {
      snprintf(name, sizeof name, "l%d.ln1", l);
      CHECKF(hidden_input(g, l) == find_op(g, name)->in[0], "slot %d", l);
    }
    Op *fln = find_op(g, "final_ln");
    CHECK(hidden_input(g, L) == fln->out);
    /* the final LayerNorm's output is a hidden state, so its affine stays;
     * the layers' LayerNorms still fold (f32 weights) when fusion is on */
    CHECK(fln->in[1] != NULL);
    CHECK(fused ? find_op(g, "l0.ln1")->in[1] == NULL : find_op(g, "l0.ln1")->in[1] != NULL);
    /* a fused residual still delivers the layer output the slot reads */
    if (fused) CHECK(hidden_input(g, 1)->def->kind == OP_MATMUL);
    /* slots are not arena temps */
    for (const Op *op = g->first; op; op = op->next)
      if (op->kind == OP_HIDDEN_STATE) CHECK(op->out->kind == VK_HIDDEN && op->out->offset < 0);
    arena_free(&a);
  }
  /* the verifier: each slot exactly once, f32[T, d_model] operands, no reader */
  const char *what[3] = {"a slot written twice", "a hidden state of the wrong width", "a hidden state read"};
  const char *msg[3] = {"slot 0 is written by 2 ops", "hidden_state: expected x f32[T, d_model]",
                        "reads the graph output"};
  for (int k = 0; k < 3; k++) {
    Arena a = {0};
    Graph *g = ir_build_neox(&a, &CASES[0].d, CASES[0].wdt, DT_F32, NEOX_HIDDEN_STATES);
    Op *h1 = NULL;
    for (Op *op = g->first; op; op = op->next)
      if (op->kind == OP_HIDDEN_STATE && op->a.slot == 1) h1 = op;
    if (k == 0) h1->a.slot = 0;
    if (k == 1) h1->in[0] = find_op(g, "l0.qkv")->out;
    if (k == 2) find_op(g, "final_ln")->in[0] = h1->out;
    Err e = {0};
    int rc = ir_verify(g, &e);
    reportf(rc == -1 && strstr(e.msg, msg[k]), __LINE__, what[k], "want \"%s\"; got rc %d: %s", msg[k], rc,
            e.set ? e.msg : "(no error)");
    arena_free(&a);
  }
}

/* ------------------------------------------------- attention probabilities --- */

/* Two ops' byte ranges in the arena meet. */
static bool arena_overlap(const Value *x, const Value *y) {
  return x->offset < y->offset + ir_value_bytes(y) && y->offset < x->offset + ir_value_bytes(x);
}

static void test_attentions(void) {
  for (int fused = 1; fused >= 0; fused--) {
    Arena a = {0};
    const Case *c = &CASES[0]; /* partial rotary: q and k go through rotary before the cache */
    const int L = c->d.n_layer;
    PassOptions o = opts(fused ? NULL : NO_FUSE);
    Graph *g = build_with(&a, c, NEOX_ATTENTIONS, &o, __LINE__);
    if (!g) {
      arena_free(&a);
      continue;
    }
    if (fused) golden("par_f16.attn.ir", g, __LINE__);
    CHECK(g->attentions && count_ops(g, OP_ATTENTION_PROBS) == L);
    /* the probabilities do not stop qkv_rotary from fusing */
    CHECK(count_ops(g, OP_QKV_ROTARY) == (fused ? L : 0));
    char pn[32], an[32];
    for (int l = 0; l < L; l++) {
      snprintf(pn, sizeof pn, "l%d.attn_probs", l);
      snprintf(an, sizeof an, "l%d.attn", l);
      Op *p = find_op(g, pn), *at = find_op(g, an);
      /* the same q and K cache as its layer's attention, read after it */
      CHECKF(p && at && p->in[0] == at->in[0] && p->in[1] == at->in[1] && p->a.layer == l && at->id < p->id,
             "layer %d", l);
      if (!p || !at) continue;
      CHECKF(p->out->kind == VK_ATTN && p->out->offset < 0 && p->out->rank == 3 &&
                 p->out->dims[1] == c->d.n_head && p->out->dims[2] == c->d.max_ctx,
             "layer %d: f32[T, n_head, max_ctx], not an arena temp", l);
      /* q stays live through the probabilities: nothing defined between
       * its op and them takes its bytes */
      for (Op *op = p->in[0]->def->next; op && op != p; op = op->next)
        if (op->out->kind == VK_TEMP) CHECKF(!arena_overlap(op->out, p->in[0]), "layer %d: %s over q", l, op->out->name);
    }
    arena_free(&a);
  }
  /* the verifier: each layer exactly once, only in a graph with attentions,
   * no reader, the K cache of its own layer */
  const char *what[4] = {"a layer's probabilities written twice", "probabilities in a graph without attentions",
                         "probabilities read", "probabilities over another layer's cache"};
  const char *msg[4] = {"layer 0 are written by 2 ops", "in a graph with attentions", "reads the graph output",
                        "the K cache [max_ctx, D] of its layer"};
  for (int k = 0; k < 4; k++) {
    Arena a = {0};
    Graph *g = ir_build_neox(&a, &CASES[0].d, CASES[0].wdt, DT_F32, NEOX_ATTENTIONS);
    Op *p0 = find_op(g, "l0.attn_probs"), *p1 = find_op(g, "l1.attn_probs");
    if (k == 0) p1->a.layer = 0, p1->in[1] = p0->in[1];
    if (k == 1) g->attentions = false;
    if (k == 2) find_op(g, "l0.attn_out")->in[0] = p0->out;
    if (k == 3) p1->in[1] = p0->in[1];
    Err e = {0};
    int rc = ir_verify(g, &e);
    reportf(rc == -1 && strstr(e.msg, msg[k]), __LINE__, what[k], "want \"%s\"; got rc %d: %s", msg[k], rc,
            e.set ? e.msg : "(no error)");
    arena_free(&a);
  }
}

int main(void) {
  init_no_fuse();
  test_builder();
  test_goldens();
  test_verifier();
  test_plans();
  test_parallel_f16_fused();
  test_fold_f32();
  test_sequential_fused();
  test_qkv_rotary();
  test_no_fuse_keeps_ops();
  test_single_passes();
  test_legality();
  test_pipeline_table();
  test_hidden_states();
  test_attentions();
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}
