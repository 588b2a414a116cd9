/* fuse_qkv_rotary.c — one pass over the fused QKV rows per layer instead of
 * seven: the per-head split, the rotary embedding of q and k, and the K/V
 * cache writes become one op,
 *
 *   q = head_slice(qkv, q)  k = head_slice(qkv, k)  v = head_slice(qkv, v)
 *   qr = rotary(q)  kr = rotary(k)  kc = kv_store(kr, K)  vc = kv_store(v, V)
 *   a = attention(qr, kc, vc)
 *     ->
 *   qr = qkv_rotary(qkv, K, V)      (writes K[pos+t], V[pos+t] too)
 *   a = attention(qr, K, V)
 *
 * Legal when every intermediate has no other reader, except that qr and kc
 * may also be read by the layer's attention_probs op (pythiac --attentions),
 * which then reads the fused op's q and the K cache as attention does.
 * Attention still runs after the cache writes: it reads qr, which the fused
 * op defines. */
#include "pass.h"

static Op *def_of(const Value *v, OpKind k) {
  return v && v->def && v->def->kind == k ? v->def : NULL;
}

/* The head_slice of `part` behind v, through an optional rotary. */
static Op *slice_behind(Graph *g, Value *v, int part, Op **rot) {
  *rot = def_of(v, OP_ROTARY);
  if (*rot) {
    if (!pass_single_reader(g, (*rot)->in[0])) return NULL;
    v = (*rot)->in[0];
  }
  Op *s = def_of(v, OP_HEAD_SLICE);
  return s && s->a.part == part ? s : NULL;
}

/* v, an operand of an attention, is read by it once and otherwise only by
 * attention_probs ops. */
static int read_by_attention(const Graph *g, const Value *v) {
  return pass_readers_besides(g, v, OP_ATTENTION_PROBS) == 1 && g->logits != v;
}

int pass_fuse_qkv_rotary(Graph *g, const PassOptions *o, Err *e) {
  Op *next;
  for (Op *at = g->first; at; at = next) {
    next = at->next;
    if (at->kind != OP_ATTENTION) continue;
    Op *ks = def_of(at->in[1], OP_KV_STORE), *vs = def_of(at->in[2], OP_KV_STORE);
    if (!ks || !vs || !read_by_attention(g, at->in[0]) || !read_by_attention(g, at->in[1]) ||
        !pass_single_reader(g, at->in[2]) || !pass_single_reader(g, ks->in[0]) || !pass_single_reader(g, vs->in[0]))
      continue;
    Op *qrot, *krot, *vrot;
    Op *qs = slice_behind(g, at->in[0], 0, &qrot), *kss = slice_behind(g, ks->in[0], 1, &krot);
    Op *vss = slice_behind(g, vs->in[0], 2, &vrot);
    if (!qs || !kss || !vss || vrot || qs->in[0] != kss->in[0] || qs->in[0] != vss->in[0] ||
        (!qrot) != (!krot) ||
        (qrot && (qrot->a.rotary_ndims != krot->a.rotary_ndims || qrot->a.rotary_base != krot->a.rotary_base)) ||
        ks->in[1]->cache_kv != 0 || vs->in[1]->cache_kv != 1 || ks->in[1]->layer != at->a.layer ||
        vs->in[1]->layer != at->a.layer)
      continue;
    OpAttr a = {.n_head = qs->a.n_head, .head_dim = qs->a.head_dim, .layer = at->a.layer,
                .rotary_ndims = qrot ? qrot->a.rotary_ndims : 0,
                .rotary_base = qrot ? qrot->a.rotary_base : 0};
    Value *in[3] = {qs->in[0], ks->in[1], vs->in[1]};
    Op *f = ir_op(g, OP_QKV_ROTARY, in, 3, &a, at->in[0]->name);
    ir_move_before(g, f, at);
    Op *dead[7] = {qs, kss, vss, qrot, krot, ks, vs};
    for (int i = 0; i < 7; i++)
      if (dead[i]) ir_remove_op(g, dead[i]);
    ir_replace_uses(g, at->in[0], f->out, f);
    ir_replace_uses(g, at->in[1], ks->in[1], f);
    at->in[2] = vs->in[1];
  }
  ir_renumber(g);
  return 0;
}
