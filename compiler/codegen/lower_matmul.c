/* lower_matmul.c — y[t, n] = sum_k x[t, k] W[n, k] + bias[n], then the fused
 * epilogue (GELU, residual adds), for t in [t0, T) and the kernel's rows
 * [lo, hi) of W.  W is [N, K] row-major in its storage dtype (f32, f16,
 * bf16), converted to f32 as it is read; accumulation is f32.
 *
 * Loop nest: blocks of tile_n rows of W; inside, every token t; inside, the
 * rows of the block; inside, the K-long dot product (vectorised by LLVM).
 * A block of W stays in L1/L2 while all T tokens pass over it, and each
 * token's x row stays in L1 across the block. */
#include "cg.h"

LLVMValueRef cg_gelu(Cg *c, LLVMValueRef x);

void cg_lower_matmul(Cg *c, const Op *op) {
  const Value *xv = op->in[0], *wv = op->in[1], *bv = op->n_in > 2 ? op->in[2] : NULL;
  const int64_t K = xv->dims[1], N = wv->dims[0];
  const int64_t TN = op->a.tile_n > 0 ? op->a.tile_n : 16;
  LLVMValueRef x = cg_value_ptr(c, xv), w = cg_value_ptr(c, wv), y = cg_value_ptr(c, op->out);
  LLVMValueRef bias = bv ? cg_value_ptr(c, bv) : NULL;
  LLVMValueRef res[2] = {0};
  for (int i = 0; i < 2; i++)
    if (op->a.residual[i]) res[i] = cg_value_ptr(c, op->a.residual[i]);
  LLVMValueRef T = cg_run_field(c, RUN_NTOK);
  LLVMValueRef t0 = op->a.last_rows ? cg_run_field(c, RUN_LOGITS_FROM) : cg_i64(c, 0);
  LLVMValueRef acc = cg_alloca_array(c, c->f32, 1, "acc");

  Loop nb = cg_loop(c, c->lo, c->hi, TN, "nb");
  LLVMValueRef ne = cg_min_i64(c, LLVMBuildAdd(c->b, nb.i, cg_i64(c, TN), ""), c->hi);
  Loop t = cg_loop(c, t0, T, 1, "t");
  LLVMValueRef xrow = LLVMBuildMul(c->b, t.i, cg_i64(c, K), "");
  LLVMValueRef yrow = LLVMBuildMul(c->b, LLVMBuildSub(c->b, t.i, t0, ""), cg_i64(c, N), "");
  Loop n = cg_loop(c, nb.i, ne, 1, "n");
  LLVMValueRef wrow = LLVMBuildMul(c->b, n.i, cg_i64(c, K), "");
  LLVMBuildStore(c->b, cg_f32(c, 0), acc);
  Loop k = cg_loop(c, cg_i64(c, 0), cg_i64(c, K), 1, "k");
  LLVMValueRef xk = cg_load_f32(c, DT_F32, x, LLVMBuildAdd(c->b, xrow, k.i, ""));
  LLVMValueRef wk = cg_load_f32(c, wv->dtype, w, LLVMBuildAdd(c->b, wrow, k.i, ""));
  LLVMValueRef prod = cg_fast(LLVMBuildFMul(c->b, xk, wk, ""));
  LLVMBuildStore(c->b, cg_fast(LLVMBuildFAdd(c->b, LLVMBuildLoad2(c->b, c->f32, acc, ""), prod, "")), acc);
  cg_loop_end(c, &k);
  LLVMValueRef v = LLVMBuildLoad2(c->b, c->f32, acc, "");
  if (bias) v = LLVMBuildFAdd(c->b, v, cg_load_f32(c, DT_F32, bias, n.i), "");
  if (op->a.gelu) v = cg_gelu(c, v);
  LLVMValueRef yi = LLVMBuildAdd(c->b, yrow, n.i, "");
  for (int i = 0; i < 2; i++)
    if (res[i]) v = LLVMBuildFAdd(c->b, v, cg_load_f32(c, DT_F32, res[i], yi), "");
  cg_store_f32(c, y, yi, v);
  cg_loop_end(c, &n);
  cg_loop_end(c, &t);
  cg_loop_end(c, &nb);
}
