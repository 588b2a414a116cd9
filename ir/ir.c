/* ir.c — graph construction, shape rules, use counts.
 *
 * Shape rules live in infer_shape(): the builder and every pass create ops
 * through ir_op(), so a result's type is always derived, never written by
 * hand; ir_verify() re-derives and compares. */
#include "ir.h"

#include <string.h>

const char *const op_names[OP_COUNT] = {
#define X(e, n, a, f) n,
    IR_OPS(X)
#undef X
};
const int op_arity[OP_COUNT] = {
#define X(e, n, a, f) a,
    IR_OPS(X)
#undef X
};
const unsigned op_flags[OP_COUNT] = {
#define X(e, n, a, f) f,
    IR_OPS(X)
#undef X
};

static const char *const dtype_names[] = {"f32", "f16", "bf16", "i32", "q8_0", "q4_0"};

const char *dtype_name(DType t) { return dtype_names[t]; }
int dtype_size(DType t) {
  return t == DT_F16 || t == DT_BF16 ? 2 : t == DT_Q8_0 ? 34 : t == DT_Q4_0 ? 18 : 4;
}

int64_t ir_qgroup_bytes(DType t, int rn, int64_t K) {
  int64_t nb = K / 32, qb = t == DT_Q8_0 ? 32 : 16;
  return ((int64_t)rn * nb * 2 + 63) / 64 * 64 + ((int64_t)rn * nb * qb + 63) / 64 * 64;
}

int dtype_parse(const char *s, DType *out) {
  for (int i = 0; i < 6; i++)
    if (!strcmp(s, dtype_names[i])) {
      *out = (DType)i;
      return 0;
    }
  return -1;
}

Graph *ir_graph_new(Arena *a, const GraphDims *d) {
  Graph *g = arena_alloc(a, sizeof *g);
  g->arena = a;
  g->dims = *d;
  g->kcache = arena_alloc(a, sizeof(Value *) * (size_t)(d->n_layer + 1));
  g->vcache = arena_alloc(a, sizeof(Value *) * (size_t)(d->n_layer + 1));
  return g;
}

Value *ir_value(Graph *g, ValueKind k, DType t, const char *name, int rank,
                const int64_t *dims, bool dyn0) {
  PY_ASSERT(rank >= 1 && rank <= 3);
  Value *v = arena_alloc(g->arena, sizeof *v);
  v->id = g->n_values;
  v->kind = k;
  v->dtype = t;
  v->rank = rank;
  for (int i = 0; i < rank; i++) v->dims[i] = dims[i];
  v->dyn0 = dyn0;
  v->offset = -1;
  v->name = name ? arena_strdup(g->arena, name) : arena_printf(g->arena, "v%d", v->id);
  if (g->n_values == g->cap_values) {
    int cap = g->cap_values ? g->cap_values * 2 : 256;
    Value **nv = arena_alloc(g->arena, sizeof(Value *) * (size_t)cap);
    if (g->n_values) memcpy(nv, g->values, sizeof(Value *) * (size_t)g->n_values);
    g->values = nv;
    g->cap_values = cap;
  }
  g->values[g->n_values++] = v;
  return v;
}

Value *ir_weight(Graph *g, const char *tensor, DType t, int rank,
                 const int64_t *dims) {
  Value *v = ir_value(g, VK_WEIGHT, t, tensor, rank, dims, false);
  v->recipe = WR_TENSOR;
  v->tensor = v->name;
  return v;
}

int64_t ir_value_bytes(const Value *v) {
  if (dtype_is_quant(v->dtype) && v->rank == 2) { /* ceil(N / pack_rn) groups, the last zero-padded */
    int rn = v->pack_rn > 0 ? v->pack_rn : 1;
    return (v->dims[0] + rn - 1) / rn * ir_qgroup_bytes(v->dtype, rn, v->dims[1]);
  }
  if (v->pack_rn > 0 && v->rank == 2) /* ceil(N / pack_rn) panels, the last zero-padded */
    return (v->dims[0] + v->pack_rn - 1) / v->pack_rn * v->pack_rn * v->dims[1] * dtype_size(v->dtype);
  int64_t n = dtype_size(v->dtype);
  for (int i = 0; i < v->rank; i++) n *= v->dims[i];
  return n;
}

/* The K/V caches hold f32 or f16 (docs/ir.md); kernels read them as f32. */
static bool cache_dtype_ok(const Value *v) { return v->dtype == DT_F32 || v->dtype == DT_F16; }

/* Derives the result type of op kind k from its operands; returns 0 and
 * fills rank/dims, or -1 with a message if the operands do not fit. */
static int infer_shape(const Graph *g, OpKind k, Value *const *in,
                       const OpAttr *a, int *rank, int64_t *dims, Err *e) {
  const int64_t T = g->dims.max_block;
  const Value *x = in[0];
  switch (k) {
  case OP_EMBED:
    if (x->dtype != DT_I32 || x->rank != 1 || in[1]->rank != 2)
      return err_set(e, "embed: expected i32[T] ids and a [V, D] table");
    if (dtype_is_quant(in[1]->dtype))
      return err_set(e, "embed: the table cannot be block-quantized (rows are gathered)");
    *rank = 2, dims[0] = T, dims[1] = in[1]->dims[1];
    return 0;
  case OP_LAYERNORM: /* gamma and beta absent once folded into a matmul */
    if (x->rank != 2 || (in[1] && (!in[2] || in[1]->rank != 1 || in[2]->rank != 1 ||
                                   in[1]->dims[0] != x->dims[1] || in[2]->dims[0] != x->dims[1])))
      return err_set(e, "layernorm: expected x[T, D] and either gamma[D], beta[D] or neither");
    *rank = 2, dims[0] = T, dims[1] = x->dims[1];
    return 0;
  case OP_MATMUL: {
    const Value *w = in[1], *b = in[2];
    if (x->rank != 2 || w->rank != 2 || w->dims[1] != x->dims[1])
      return err_set(e, "matmul: expected x[T, K] and w[N, K], got x[%lld, %lld] w[%lld, %lld]",
                     (long long)x->dims[0], (long long)x->dims[1],
                     (long long)w->dims[0], (long long)w->dims[1]);
    if (b && (b->rank != 1 || b->dims[0] != w->dims[0] || b->dtype != DT_F32))
      return err_set(e, "matmul: bias must be f32[N]");
    if (x->dtype != DT_F32 || w->kind != VK_WEIGHT)
      return err_set(e, "matmul: expected f32 activations and a weight matrix");
    if (dtype_is_quant(w->dtype) && w->dims[1] % 32)
      return err_set(e, "matmul: a %s weight needs K a multiple of 32, got %lld", dtype_name(w->dtype),
                     (long long)w->dims[1]);
    for (int i = 0; i < 2; i++)
      if (a->residual[i] && (a->residual[i]->rank != 2 || a->residual[i]->dims[1] != w->dims[0] ||
                             a->residual[i]->dtype != DT_F32))
        return err_set(e, "matmul: residual must be f32[T, N]");
    *rank = 2, dims[0] = T, dims[1] = w->dims[0];
    return 0;
  }
  case OP_GELU:
    *rank = x->rank;
    memcpy(dims, x->dims, sizeof x->dims);
    return 0;
  case OP_ADD:
    if (x->rank != in[1]->rank || x->dims[1] != in[1]->dims[1])
      return err_set(e, "add: operand shapes differ");
    *rank = x->rank;
    memcpy(dims, x->dims, sizeof x->dims);
    return 0;
  case OP_HEAD_SLICE:
    if (x->rank != 2 || x->dims[1] != 3LL * a->n_head * a->head_dim || a->part < 0 || a->part > 2)
      return err_set(e, "head_slice: expected qkv[T, 3 * n_head * head_dim]");
    *rank = 2, dims[0] = T, dims[1] = (int64_t)a->n_head * a->head_dim;
    return 0;
  case OP_ROTARY:
    if (x->rank != 2 || x->dims[1] != (int64_t)a->n_head * a->head_dim ||
        a->rotary_ndims < 0 || a->rotary_ndims > a->head_dim || a->rotary_ndims % 2)
      return err_set(e, "rotary: expected x[T, n_head * head_dim] and even rotary_ndims <= head_dim");
    *rank = 2, dims[0] = T, dims[1] = x->dims[1];
    return 0;
  case OP_KV_STORE:
    if (in[1]->kind != VK_CACHE || !cache_dtype_ok(in[1]) || x->rank != 2 || x->dims[1] != in[1]->dims[1])
      return err_set(e, "kv_store: expected x[T, D] and a cache [max_ctx, D]");
    *rank = 2, dims[0] = in[1]->dims[0], dims[1] = in[1]->dims[1];
    return 0;
  case OP_ATTENTION:
    if (in[1]->kind != VK_CACHE || in[2]->kind != VK_CACHE || !cache_dtype_ok(in[1]) || !cache_dtype_ok(in[2]) ||
        x->rank != 2 || x->dims[1] != (int64_t)a->n_head * a->head_dim || in[1]->dims[1] != x->dims[1] ||
        in[2]->dims[1] != x->dims[1] || in[1]->cache_kv != 0 || in[2]->cache_kv != 1 ||
        in[1]->layer != a->layer || in[2]->layer != a->layer)
      return err_set(e, "attention: expected q[T, D] and the K, V caches [max_ctx, D] of its layer");
    *rank = 2, dims[0] = T, dims[1] = x->dims[1];
    return 0;
  case OP_QKV_ROTARY:
    if (x->rank != 2 || x->dims[1] != 3LL * a->n_head * a->head_dim || in[1]->kind != VK_CACHE ||
        in[2]->kind != VK_CACHE || !cache_dtype_ok(in[1]) || !cache_dtype_ok(in[2]) ||
        in[1]->dims[1] != (int64_t)a->n_head * a->head_dim ||
        in[2]->dims[1] != in[1]->dims[1] || in[1]->cache_kv != 0 || in[2]->cache_kv != 1 ||
        in[1]->layer != a->layer || in[2]->layer != a->layer ||
        a->rotary_ndims < 0 || a->rotary_ndims > a->head_dim || a->rotary_ndims % 2)
      return err_set(e, "qkv_rotary: expected qkv[T, 3 * n_head * head_dim] and K, V caches");
    *rank = 2, dims[0] = T, dims[1] = (int64_t)a->n_head * a->head_dim;
    return 0;
  case OP_HIDDEN_STATE:
    if (x->rank != 2 || x->dtype != DT_F32 || x->dims[1] != g->dims.d_model || a->slot < 0 ||
        a->slot >= g->n_hidden)
      return err_set(e, "hidden_state: expected x f32[T, d_model] and a slot in [0, %d), got slot %d",
                     g->n_hidden, a->slot);
    *rank = 2, dims[0] = T, dims[1] = x->dims[1];
    return 0;
  case OP_ATTENTION_PROBS:
    if (!g->attentions || in[1]->kind != VK_CACHE || !cache_dtype_ok(in[1]) || in[1]->cache_kv != 0 ||
        in[1]->layer != a->layer || a->layer < 0 || a->layer >= g->dims.n_layer || x->rank != 2 ||
        x->dtype != DT_F32 || x->dims[1] != (int64_t)a->n_head * a->head_dim || in[1]->dims[1] != x->dims[1])
      return err_set(e, "attention_probs: expected q f32[T, D] and the K cache [max_ctx, D] of its layer "
                        "in a graph with attentions");
    *rank = 3, dims[0] = T, dims[1] = a->n_head, dims[2] = in[1]->dims[0];
    return 0;
  case OP_COUNT:
    break;
  }
  return err_set(e, "unknown op %d", (int)k);
}

static int expected_inputs(OpKind k, Value *const *in) {
  if (k == OP_MATMUL) return in[2] ? 3 : 2;
  if (k == OP_LAYERNORM) return in[1] ? 3 : 1;
  return op_arity[k];
}

Op *ir_op(Graph *g, OpKind k, Value **in, int n_in, const OpAttr *a,
          const char *name) {
  Op *op = arena_alloc(g->arena, sizeof *op);
  op->id = g->n_ops++;
  op->kind = k;
  for (int i = 0; i < n_in; i++) op->in[i] = in[i];
  op->n_in = n_in;
  if (a) op->a = *a;
  int rank;
  int64_t dims[3] = {0};
  Err e = {0};
  if (infer_shape(g, k, op->in, &op->a, &rank, dims, &e)) {
    fprintf(stderr, "internal error: building %s: %s\n", op_names[k], e.msg);
    abort();
  }
  ValueKind vk = k == OP_KV_STORE          ? VK_CACHE
                : k == OP_HIDDEN_STATE     ? VK_HIDDEN
                : k == OP_ATTENTION_PROBS ? VK_ATTN
                                           : VK_TEMP;
  /* results are f32, but a kv_store's result is its cache, of the cache's dtype */
  op->out = ir_value(g, vk, k == OP_KV_STORE ? in[1]->dtype : DT_F32, name, rank, dims, vk != VK_CACHE);
  op->out->def = op;
  if (k == OP_KV_STORE) {
    op->out->layer = in[1]->layer;
    op->out->cache_kv = in[1]->cache_kv;
  }
  op->prev = g->last;
  if (g->last) g->last->next = op;
  else g->first = op;
  g->last = op;
  return op;
}

void ir_move_before(Graph *g, Op *op, Op *before) {
  ir_remove_op(g, op);
  op->next = before;
  op->prev = before->prev;
  if (before->prev) before->prev->next = op;
  else g->first = op;
  before->prev = op;
}

void ir_renumber(Graph *g) {
  int id = 0;
  for (Op *o = g->first; o; o = o->next) o->id = id++;
  g->n_ops = id;
}

void ir_remove_op(Graph *g, Op *op) {
  if (op->prev) op->prev->next = op->next;
  else g->first = op->next;
  if (op->next) op->next->prev = op->prev;
  else g->last = op->prev;
  op->next = op->prev = NULL;
}

void ir_replace_uses(Graph *g, Value *from, Value *to, Op *after) {
  for (Op *o = after ? after->next : g->first; o; o = o->next) {
    for (int i = 0; i < o->n_in; i++)
      if (o->in[i] == from) o->in[i] = to;
    for (int i = 0; i < 2; i++)
      if (o->a.residual[i] == from) o->a.residual[i] = to;
  }
  if (g->logits == from) g->logits = to;
}

void ir_recount_uses(Graph *g) {
  for (int i = 0; i < g->n_values; i++) g->values[i]->n_uses = 0;
  for (Op *o = g->first; o; o = o->next) {
    for (int i = 0; i < o->n_in; i++)
      if (o->in[i]) o->in[i]->n_uses++;
    for (int i = 0; i < 2; i++)
      if (o->a.residual[i]) o->a.residual[i]->n_uses++;
  }
  for (int i = 0; i < g->n_values; i++) {
    Value *v = g->values[i];
    if (v->kind == VK_WEIGHT)
      for (int j = 0; j < 3; j++)
        if (v->wargs[j]) v->wargs[j]->n_uses++;
  }
  if (g->logits) g->logits->n_uses++;
}

/* How many ops of kind k (hidden_state or attention_probs) write index i:
 * a hidden state's slot, an attention_probs' layer. */
static int writers_of(const Graph *g, OpKind k, int i) {
  int n = 0;
  for (const Op *o = g->first; o; o = o->next)
    n += o->kind == k && (k == OP_HIDDEN_STATE ? o->a.slot : o->a.layer) == i;
  return n;
}

/* Every hidden-state slot is written by exactly one op (the shape rule has
 * already refused slots outside [0, n_hidden)). */
static int verify_hidden_slots(const Graph *g, Err *e) {
  for (int s = 0; s < g->n_hidden; s++) {
    int n = writers_of(g, OP_HIDDEN_STATE, s);
    if (n != 1) return err_set(e, "graph: hidden-state slot %d is written by %d ops, expected 1", s, n);
  }
  return 0;
}

/* With attentions, every layer's probabilities are written by exactly one
 * op; without, by none (the shape rule refuses the op). */
static int verify_attention_probs(const Graph *g, Err *e) {
  for (int l = 0; g->attentions && l < g->dims.n_layer; l++) {
    int n = writers_of(g, OP_ATTENTION_PROBS, l);
    if (n != 1)
      return err_set(e, "graph: the attention probabilities of layer %d are written by %d ops, expected 1", l, n);
  }
  return 0;
}

int ir_verify(const Graph *g, Err *e) {
  /* defined[]: a temp may only be read after the op that defines it */
  char *defined = calloc((size_t)g->n_values + 1, 1);
  int rc = 0;
  for (Op *o = g->first; o && !rc; o = o->next) {
    const char *on = op_names[o->kind];
    if (o->n_in != expected_inputs(o->kind, o->in)) {
      rc = err_set(e, "op %s (%s): %d operands, expected %d", on, o->out->name, o->n_in,
                   expected_inputs(o->kind, o->in));
      break;
    }
    Value *uses[5] = {o->in[0], o->in[1], o->in[2], o->a.residual[0], o->a.residual[1]};
    for (int i = 0; i < 5 && !rc; i++) {
      Value *v = uses[i];
      if (!v) continue;
      if ((v->kind == VK_TEMP || (v->kind == VK_CACHE && v->def)) && !defined[v->id])
        rc = err_set(e, "op %s (%s): operand %%%s used before it is defined", on,
                     o->out->name, v->name);
      if (v->kind == VK_OUTPUT || v->kind == VK_HIDDEN || v->kind == VK_ATTN)
        rc = err_set(e, "op %s: reads the graph output %%%s", on, v->name);
    }
    if (rc) break;
    int rank;
    int64_t dims[3] = {0};
    if (infer_shape(g, o->kind, o->in, &o->a, &rank, dims, e)) {
      rc = -1;
      break;
    }
    if (rank != o->out->rank || memcmp(dims, o->out->dims, sizeof(int64_t) * (size_t)rank)) {
      rc = err_set(e, "op %s: result %%%s has the wrong shape", on, o->out->name);
      break;
    }
    if (o->out->def != o) {
      rc = err_set(e, "op %s: result %%%s does not point back to its op", on, o->out->name);
      break;
    }
    if (o->a.last_rows && o->out != g->logits)
      rc = err_set(e, "op %s: last_rows only applies to the logits", on);
    defined[o->out->id] = 1;
  }
  if (!rc && (!g->logits || !g->logits->def || !defined[g->logits->id]))
    rc = err_set(e, "graph: logits are never computed");
  if (!rc) rc = verify_hidden_slots(g, e);
  if (!rc) rc = verify_attention_probs(g, e);
  free(defined);
  return rc;
}
