/* lower_attention.c — causal attention of the rows [pos, pos + T) over the
 * K/V cache of one layer, one (row, head) pair per item, with an online
 * softmax: no score matrix is stored.
 *
 *   s_j = (q . k_j) / sqrt(head_dim)  for j <= pos + t
 *   out = sum_j softmax(s)_j v_j
 *
 * Items are ordered zig-zag over rows (t = 0, T-1, 1, T-2, ...) so that the
 * contiguous chunks handed to threads carry equal causal work. */
#include <math.h>

#include "cg.h"

void cg_lower_attention(Cg *c, const Op *op) {
  const int64_t H = op->a.n_head, Dh = op->a.head_dim, D = H * Dh;
  LLVMValueRef q = cg_value_ptr(c, op->in[0]), kc = cg_value_ptr(c, op->in[1]);
  LLVMValueRef vc = cg_value_ptr(c, op->in[2]), y = cg_value_ptr(c, op->out);
  LLVMValueRef T = cg_run_field(c, RUN_NTOK), pos = cg_run_field(c, RUN_POS);
  LLVMValueRef acc = cg_alloca_array(c, c->f32, Dh, "acc");
  LLVMValueRef dot = cg_alloca_array(c, c->f32, 1, "dot");
  LLVMValueRef mx = cg_alloca_array(c, c->f32, 1, "max");
  LLVMValueRef den = cg_alloca_array(c, c->f32, 1, "den");
  const double scale = 1.0 / sqrt((double)Dh);

  Loop it = cg_loop(c, c->lo, c->hi, 1, "item");
  LLVMValueRef j2 = LLVMBuildSDiv(c->b, it.i, cg_i64(c, H), "");
  LLVMValueRef h = LLVMBuildSRem(c->b, it.i, cg_i64(c, H), "");
  LLVMValueRef half = LLVMBuildSDiv(c->b, j2, cg_i64(c, 2), "");
  LLVMValueRef odd = LLVMBuildTrunc(c->b, LLVMBuildSRem(c->b, j2, cg_i64(c, 2), ""),
                                    LLVMInt1TypeInContext(c->ctx), "");
  LLVMValueRef t = LLVMBuildSelect(c->b, odd,
                                   LLVMBuildSub(c->b, LLVMBuildSub(c->b, T, cg_i64(c, 1), ""), half, ""),
                                   half, "t");
  LLVMValueRef qoff = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, t, cg_i64(c, D), ""),
                                   LLVMBuildMul(c->b, h, cg_i64(c, Dh), ""), "");
  LLVMValueRef hoff = LLVMBuildMul(c->b, h, cg_i64(c, Dh), "");
  LLVMValueRef n_keys = LLVMBuildAdd(c->b, LLVMBuildAdd(c->b, pos, t, ""), cg_i64(c, 1), "");
  LLVMBuildStore(c->b, LLVMConstReal(c->f32, -INFINITY), mx);
  LLVMBuildStore(c->b, cg_f32(c, 0), den);
  Loop z = cg_loop(c, cg_i64(c, 0), cg_i64(c, Dh), 1, "z");
  cg_store_f32(c, acc, z.i, cg_f32(c, 0));
  cg_loop_end(c, &z);

  Loop j = cg_loop(c, cg_i64(c, 0), n_keys, 1, "j");
  LLVMValueRef koff = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, j.i, cg_i64(c, D), ""), hoff, "");
  LLVMBuildStore(c->b, cg_f32(c, 0), dot);
  Loop d = cg_loop(c, cg_i64(c, 0), cg_i64(c, Dh), 1, "d");
  LLVMValueRef p = cg_fast(LLVMBuildFMul(c->b, cg_load_f32(c, DT_F32, q, LLVMBuildAdd(c->b, qoff, d.i, "")),
                                         cg_load_f32(c, DT_F32, kc, LLVMBuildAdd(c->b, koff, d.i, "")), ""));
  LLVMBuildStore(c->b, cg_fast(LLVMBuildFAdd(c->b, LLVMBuildLoad2(c->b, c->f32, dot, ""), p, "")), dot);
  cg_loop_end(c, &d);
  LLVMValueRef s = LLVMBuildFMul(c->b, LLVMBuildLoad2(c->b, c->f32, dot, ""), cg_f32(c, scale), "s");
  LLVMValueRef m_old = LLVMBuildLoad2(c->b, c->f32, mx, "");
  LLVMValueRef m_new = cg_call_intrinsic(c, "llvm.maxnum", c->f32, (LLVMValueRef[]){m_old, s}, 2);
  /* rescale what was accumulated under the old maximum: exp(-inf) = 0 */
  LLVMValueRef dm = LLVMBuildFSub(c->b, m_old, m_new, "");
  LLVMValueRef corr = cg_call_intrinsic(c, "llvm.exp", c->f32, &dm, 1);
  LLVMValueRef ds = LLVMBuildFSub(c->b, s, m_new, "");
  LLVMValueRef pj = cg_call_intrinsic(c, "llvm.exp", c->f32, &ds, 1);
  LLVMBuildStore(c->b, m_new, mx);
  LLVMBuildStore(c->b, LLVMBuildFAdd(c->b, LLVMBuildFMul(c->b, LLVMBuildLoad2(c->b, c->f32, den, ""), corr, ""), pj, ""), den);
  Loop e = cg_loop(c, cg_i64(c, 0), cg_i64(c, Dh), 1, "e");
  LLVMValueRef a = cg_load_f32(c, DT_F32, acc, e.i);
  LLVMValueRef vv = cg_load_f32(c, DT_F32, vc, LLVMBuildAdd(c->b, koff, e.i, ""));
  cg_store_f32(c, acc, e.i, cg_fast(LLVMBuildFAdd(c->b, cg_fast(LLVMBuildFMul(c->b, a, corr, "")),
                                                  cg_fast(LLVMBuildFMul(c->b, pj, vv, "")), "")));
  cg_loop_end(c, &e);
  cg_loop_end(c, &j);

  LLVMValueRef inv = LLVMBuildFDiv(c->b, cg_f32(c, 1.0), LLVMBuildLoad2(c->b, c->f32, den, ""), "");
  Loop o = cg_loop(c, cg_i64(c, 0), cg_i64(c, Dh), 1, "o");
  cg_store_f32(c, y, LLVMBuildAdd(c->b, qoff, o.i, ""),
               LLVMBuildFMul(c->b, cg_load_f32(c, DT_F32, acc, o.i), inv, ""));
  cg_loop_end(c, &o);
  cg_loop_end(c, &it);
}
