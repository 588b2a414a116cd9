/* neox.c — the GPT-NeoX network, one layer after another, as the IR's ops.
 *
 *   x = embed(ids)
 *   per layer:  a = dense(attention(rotary(q), rotary(k), v of qkv(ln1(x))))
 *               parallel:   x = x + a + mlp(ln2(x))
 *               sequential: h = x + a;  x = h + mlp(ln2(h))
 *   logits = unembed(final_ln(x))          (last rows only when asked)
 *
 * With hidden states asked for, a hidden_state op follows the embedding,
 * every layer but the last, and the final LayerNorm: the n_layer + 1 tensors
 * of Hugging Face's output_hidden_states, in its order.  With attentions,
 * an attention_probs op follows each attention (output_attentions).
 *
 * Weight names are short (l3.qkv.w); each records its checkpoint tensor. */
#include "neox.h"

#include <stdio.h>

typedef struct {
  Graph *g;
  DType wdt;
  char buf[160];
} Builder;

static Value *matrix(Builder *b, const char *name, const char *tensor, int64_t n, int64_t k) {
  int64_t dims[2] = {n, k};
  Value *v = ir_weight(b->g, tensor, b->wdt, 2, dims);
  v->name = arena_strdup(b->g->arena, name);
  return v;
}

static Value *vector(Builder *b, const char *name, const char *tensor, int64_t n) {
  int64_t dims[1] = {n};
  Value *v = ir_weight(b->g, tensor, DT_F32, 1, dims);
  v->name = arena_strdup(b->g->arena, name);
  return v;
}

/* Weight of layer l: short name "l<l>.<short>", tensor "gpt_neox.layers.<l>.<path>" */
#define LW(kind, l, shortname, path, ...)                                       \
  kind(b, arena_printf(g->arena, "l%d." shortname, l),                           \
       arena_printf(g->arena, "gpt_neox.layers.%d." path, l), __VA_ARGS__)

static Value *op1(Graph *g, OpKind k, Value *a0, const OpAttr *a, const char *name) {
  Value *in[1] = {a0};
  return ir_op(g, k, in, 1, a, name)->out;
}
static Value *op2(Graph *g, OpKind k, Value *a0, Value *a1, const OpAttr *a, const char *name) {
  Value *in[2] = {a0, a1};
  return ir_op(g, k, in, 2, a, name)->out;
}
static Value *op3(Graph *g, OpKind k, Value *a0, Value *a1, Value *a2, const OpAttr *a,
                  const char *name) {
  Value *in[3] = {a0, a1, a2};
  return ir_op(g, k, in, 3, a, name)->out;
}

static Value *layernorm(Graph *g, Value *x, Value *gamma, Value *beta, const char *name) {
  OpAttr a = {.eps = g->dims.eps};
  return op3(g, OP_LAYERNORM, x, gamma, beta, &a, name);
}

static Value *linear(Graph *g, Value *x, Value *w, Value *bias, const char *name) {
  Value *in[3] = {x, w, bias};
  return ir_op(g, OP_MATMUL, in, bias ? 3 : 2, NULL, name)->out;
}

static Value *layer(Builder *b, int l, Value *x) {
  Graph *g = b->g;
  const GraphDims *d = &g->dims;
  const int D = d->d_model, F = d->d_ff;
#define N(s) arena_printf(g->arena, "l%d." s, l)
  /* weights are created in statements of their own: argument evaluation
   * order is unspecified in C, and value ids must not depend on it */
  Value *ln1_g = LW(vector, l, "ln1.g", "input_layernorm.weight", D);
  Value *ln1_b = LW(vector, l, "ln1.b", "input_layernorm.bias", D);
  Value *ln1 = layernorm(g, x, ln1_g, ln1_b, N("ln1"));
  Value *qkv_b = d->attention_bias
                     ? LW(vector, l, "qkv.b", "attention.query_key_value.bias", 3 * D)
                     : NULL;
  Value *qkv_w = LW(matrix, l, "qkv.w", "attention.query_key_value.weight", 3 * D, D);
  Value *qkv = linear(g, ln1, qkv_w, qkv_b, N("qkv"));
  Value *parts[3];
  for (int p = 0; p < 3; p++) {
    OpAttr a = {.part = p, .n_head = d->n_head, .head_dim = d->head_dim};
    parts[p] = op1(g, OP_HEAD_SLICE, qkv, &a, arena_printf(g->arena, "l%d.%c", l, "qkv"[p]));
  }
  if (d->rotary_ndims > 0) {
    OpAttr a = {.n_head = d->n_head, .head_dim = d->head_dim, .rotary_ndims = d->rotary_ndims,
                .rotary_base = d->rotary_base};
    parts[0] = op1(g, OP_ROTARY, parts[0], &a, N("q_rot"));
    parts[1] = op1(g, OP_ROTARY, parts[1], &a, N("k_rot"));
  }
  OpAttr ca = {.layer = l, .n_head = d->n_head, .head_dim = d->head_dim};
  Value *kc = op2(g, OP_KV_STORE, parts[1], g->kcache[l], &ca, N("kcache"));
  Value *vc = op2(g, OP_KV_STORE, parts[2], g->vcache[l], &ca, N("vcache"));
  Value *att = op3(g, OP_ATTENTION, parts[0], kc, vc, &ca, N("attn"));
  if (g->attentions) op2(g, OP_ATTENTION_PROBS, parts[0], kc, &ca, N("attn_probs"));
  Value *dense_b = d->attention_bias ? LW(vector, l, "dense.b", "attention.dense.bias", D) : NULL;
  Value *dense_w = LW(matrix, l, "dense.w", "attention.dense.weight", D, D);
  Value *ao = linear(g, att, dense_w, dense_b, N("attn_out"));
  Value *h = x;
  if (!d->parallel_residual) h = op2(g, OP_ADD, x, ao, NULL, N("resid_attn"));
  Value *ln2_g = LW(vector, l, "ln2.g", "post_attention_layernorm.weight", D);
  Value *ln2_b = LW(vector, l, "ln2.b", "post_attention_layernorm.bias", D);
  Value *ln2 = layernorm(g, h, ln2_g, ln2_b, N("ln2"));
  Value *fc1_w = LW(matrix, l, "fc1.w", "mlp.dense_h_to_4h.weight", F, D);
  Value *fc1_b = LW(vector, l, "fc1.b", "mlp.dense_h_to_4h.bias", F);
  Value *up = linear(g, ln2, fc1_w, fc1_b, N("fc1"));
  Value *act = op1(g, OP_GELU, up, NULL, N("gelu"));
  Value *fc2_w = LW(matrix, l, "fc2.w", "mlp.dense_4h_to_h.weight", D, F);
  Value *fc2_b = LW(vector, l, "fc2.b", "mlp.dense_4h_to_h.bias", D);
  Value *down = linear(g, act, fc2_w, fc2_b, N("mlp_out"));
  if (d->parallel_residual) {
    Value *sum = op2(g, OP_ADD, x, ao, NULL, N("resid_attn"));
    return op2(g, OP_ADD, sum, down, NULL, N("resid"));
  }
  return op2(g, OP_ADD, h, down, NULL, N("resid"));
#undef N
}

/* hidden_state %x {slot}: x's rows also go to the caller's slot */
static void hidden_state(Graph *g, Value *x, int slot) {
  OpAttr a = {.slot = slot};
  op1(g, OP_HIDDEN_STATE, x, &a, arena_printf(g->arena, "hidden%d", slot));
}

Graph *ir_build_neox(Arena *arena, const GraphDims *d, DType wdtype, DType kvdtype, unsigned outputs) {
  Graph *g = ir_graph_new(arena, d);
  const bool hidden_states = outputs & NEOX_HIDDEN_STATES;
  g->n_hidden = hidden_states ? d->n_layer + 1 : 0;
  g->attentions = outputs & NEOX_ATTENTIONS;
  Builder bb = {.g = g, .wdt = wdtype}, *b = &bb;
  int64_t tdims[1] = {d->max_block};
  g->tokens = ir_value(g, VK_INPUT, DT_I32, "ids", 1, tdims, true);
  for (int l = 0; l < d->n_layer; l++) {
    int64_t cdims[2] = {d->max_ctx, d->d_model};
    g->kcache[l] = ir_value(g, VK_CACHE, kvdtype, arena_printf(arena, "l%d.k_cache", l), 2, cdims, false);
    g->kcache[l]->layer = l;
    g->vcache[l] = ir_value(g, VK_CACHE, kvdtype, arena_printf(arena, "l%d.v_cache", l), 2, cdims, false);
    g->vcache[l]->layer = l;
    g->vcache[l]->cache_kv = 1;
  }
  Value *embed = matrix(b, "embed_in.w", "gpt_neox.embed_in.weight", d->vocab, d->d_model);
  Value *x = op2(g, OP_EMBED, g->tokens, embed, NULL, "embed");
  for (int l = 0; l < d->n_layer; l++) {
    if (hidden_states) hidden_state(g, x, l);
    x = layer(b, l, x);
  }
  Value *fg = vector(b, "final_ln.g", "gpt_neox.final_layer_norm.weight", d->d_model);
  Value *fb = vector(b, "final_ln.b", "gpt_neox.final_layer_norm.bias", d->d_model);
  Value *xf = layernorm(g, x, fg, fb, "final_ln");
  if (hidden_states) hidden_state(g, xf, d->n_layer);
  Value *unembed = d->tied ? embed : matrix(b, "embed_out.w", "embed_out.weight", d->vocab, d->d_model);
  Value *in[2] = {xf, unembed};
  OpAttr la = {.last_rows = true};
  Op *lo = ir_op(g, OP_MATMUL, in, 2, &la, "logits");
  lo->out->kind = VK_OUTPUT;
  lo->out->dyn0 = true;
  g->logits = lo->out;
  return g;
}
