/* lower_matmul.c — y[t, n] = sum_k x[t, k] W[n, k] + bias[n], then the fused
 * epilogue (GELU, residual adds), for t in [t0, T) and the kernel's rows
 * [lo, hi) of W.  W is [N, K] row-major in its storage dtype (f32, f16,
 * bf16), widened to f32 in registers; accumulation is f32.
 *
 * Loop nest (tile sizes are the op's tile attributes, else the defaults):
 *   for n-blocks of TN rows             (cache block: W rows stay in L2)
 *     for t-tiles of RT tokens          (RT = 1 for decode: pure GEMV)
 *       for n-tiles of RN rows          (register block)
 *         RN x RT vector accumulators over k in steps of the vector width
 *         horizontal sums, scalar k tail, epilogue, store
 * Tails (T % RT, rows % RN) reuse the same micro-kernel with RT or RN = 1.
 *
 * Each output element is one dot product accumulated in a fixed order that
 * does not depend on T, the tile position or the thread: logits are
 * bit-identical for any block size or thread count. */
#include "cg.h"

LLVMValueRef cg_gelu(Cg *c, LLVMValueRef x);

enum { MAX_RN = 8, MAX_RT = 8 };


typedef struct {
  const Op *op;
  int64_t K, N;
  int vw;
  LLVMTypeRef vf;           /* <vw x float> */
  LLVMValueRef x, w, y, bias, res[2], t0;
} Mm;

/* <vw x float> from vw elements of W (storage dtype) at element index idx. */
static LLVMValueRef load_wvec(Cg *c, const Mm *m, LLVMValueRef idx) {
  DType dt = m->op->in[1]->dtype;
  LLVMTypeRef et = dt == DT_F32 ? c->f32 : dt == DT_F16 ? c->f16 : c->i16;
  LLVMTypeRef vt = LLVMVectorType(et, (unsigned)m->vw);
  LLVMValueRef ld = LLVMBuildLoad2(c->b, vt, cg_gep(c, et, m->w, idx), "");
  LLVMSetAlignment(ld, (unsigned)dtype_size(dt));
  if (dt == DT_F32) return ld;
  if (dt == DT_F16) return LLVMBuildFPExt(c->b, ld, m->vf, "");
  LLVMTypeRef vi32 = LLVMVectorType(c->i32, (unsigned)m->vw);
  LLVMValueRef wide = LLVMBuildZExt(c->b, ld, vi32, "");
  LLVMValueRef sixteen[64];
  for (int i = 0; i < m->vw; i++) sixteen[i] = LLVMConstInt(c->i32, 16, 0);
  wide = LLVMBuildShl(c->b, wide, LLVMConstVector(sixteen, (unsigned)m->vw), "");
  return LLVMBuildBitCast(c->b, wide, m->vf, "");
}

static LLVMValueRef load_xvec(Cg *c, const Mm *m, LLVMValueRef idx) {
  LLVMValueRef ld = LLVMBuildLoad2(c->b, m->vf, cg_gep(c, c->f32, m->x, idx), "");
  LLVMSetAlignment(ld, 4);
  return ld;
}

static LLVMValueRef fma_vec(Cg *c, const Mm *m, LLVMValueRef a, LLVMValueRef b, LLVMValueRef acc) {
  LLVMValueRef args[3] = {a, b, acc};
  return cg_call_intrinsic(c, "llvm.fma", m->vf, args, 3);
}

/* Writes y[t, n] from the dot product `v`: bias, GELU, residuals, store. */
static void epilogue(Cg *c, const Mm *m, LLVMValueRef t, LLVMValueRef n, LLVMValueRef v) {
  if (m->bias) v = LLVMBuildFAdd(c->b, v, cg_load_f32(c, DT_F32, m->bias, n), "");
  if (m->op->a.gelu) v = cg_gelu(c, v);
  LLVMValueRef yi = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, LLVMBuildSub(c->b, t, m->t0, ""), cg_i64(c, m->N), ""), n, "");
  for (int i = 0; i < 2; i++)
    if (m->res[i]) v = LLVMBuildFAdd(c->b, v, cg_load_f32(c, DT_F32, m->res[i], yi), "");
  cg_store_f32(c, m->y, yi, v);
}

/* rn x rt outputs starting at (t, n).  packed: rows n.. form one packed
 * group of W (layout in ir.h), else W rows are row-major. */
static void micro_kernel(Cg *c, const Mm *m, int rn, int rt, LLVMValueRef t, LLVMValueRef n, int packed) {
  const int64_t K = m->K, Kv = K / m->vw * m->vw;
  LLVMValueRef acc[MAX_RN][MAX_RT];
  LLVMValueRef xrow[MAX_RT], wrow[MAX_RN];
  for (int j = 0; j < rt; j++)
    xrow[j] = LLVMBuildMul(c->b, LLVMBuildAdd(c->b, t, cg_i64(c, j), ""), cg_i64(c, K), "");
  /* element (i, k) of W: packed  n*K + k*rn + i*vw (k a multiple of vw),
   *                              tail n*K + Kv*rn + i*(K-Kv) + (k-Kv);
   *                     row-major (n+i)*K + k */
  LLVMValueRef gbase = LLVMBuildMul(c->b, n, cg_i64(c, K), "");
  for (int i = 0; i < rn; i++)
    wrow[i] = packed ? LLVMBuildAdd(c->b, gbase, cg_i64(c, (int64_t)i * m->vw), "")
                     : LLVMBuildMul(c->b, LLVMBuildAdd(c->b, n, cg_i64(c, i), ""), cg_i64(c, K), "");
  LLVMValueRef zero = LLVMConstNull(m->vf);
  if (Kv > 0) {
    /* the k loop carries rn*rt vector accumulators as phis */
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(c->b);
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "kv");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "kv_done");
    LLVMBuildBr(c->b, body);
    LLVMPositionBuilderAtEnd(c->b, body);
    LLVMValueRef k = LLVMBuildPhi(c->b, c->i64, "k");
    LLVMValueRef kz = cg_i64(c, 0);
    LLVMAddIncoming(k, &kz, &pre, 1);
    LLVMValueRef phis[MAX_RN][MAX_RT];
    for (int i = 0; i < rn; i++)
      for (int j = 0; j < rt; j++) {
        phis[i][j] = LLVMBuildPhi(c->b, m->vf, "acc");
        LLVMAddIncoming(phis[i][j], &zero, &pre, 1);
      }
    const int64_t PREFETCH_BYTES = m->op->a.prefetch;
    if (packed && rt == 1 && PREFETCH_BYTES > 0) {
      /* decode: the packed group is one stream; ask for the lines
       * PREFETCH_BYTES ahead, across page boundaries where hardware
       * prefetchers stop */
      int64_t step_bytes = (int64_t)rn * m->vw * dtype_size(m->op->in[1]->dtype);
      LLVMValueRef here = LLVMBuildAdd(c->b, wrow[0], LLVMBuildMul(c->b, k, cg_i64(c, rn), ""), "");
      LLVMValueRef base = cg_gep(c, LLVMInt8TypeInContext(c->ctx), m->w,
                                 LLVMBuildMul(c->b, here, cg_i64(c, dtype_size(m->op->in[1]->dtype)), ""));
      for (int64_t off = 0; off < step_bytes; off += 64) {
        LLVMValueRef args[4] = {cg_byte_offset(c, base, PREFETCH_BYTES + off), LLVMConstInt(c->i32, 0, 0),
                                LLVMConstInt(c->i32, 0, 0), LLVMConstInt(c->i32, 1, 0)};
        cg_call_intrinsic(c, "llvm.prefetch", c->ptr, args, 4);
      }
    }
    LLVMValueRef xv[MAX_RT];
    for (int j = 0; j < rt; j++) xv[j] = load_xvec(c, m, LLVMBuildAdd(c->b, xrow[j], k, ""));
    LLVMValueRef next[MAX_RN][MAX_RT];
    for (int i = 0; i < rn; i++) {
      LLVMValueRef wk = packed ? LLVMBuildMul(c->b, k, cg_i64(c, rn), "") : k;
      LLVMValueRef wv = load_wvec(c, m, LLVMBuildAdd(c->b, wrow[i], wk, ""));
      for (int j = 0; j < rt; j++) next[i][j] = fma_vec(c, m, xv[j], wv, phis[i][j]);
    }
    LLVMValueRef k2 = LLVMBuildNSWAdd(c->b, k, cg_i64(c, m->vw), "");
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(c->b);
    LLVMAddIncoming(k, &k2, &latch, 1);
    for (int i = 0; i < rn; i++)
      for (int j = 0; j < rt; j++) LLVMAddIncoming(phis[i][j], &next[i][j], &latch, 1);
    LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, k2, cg_i64(c, Kv), ""), body, done);
    LLVMPositionBuilderAtEnd(c->b, done);
    for (int i = 0; i < rn; i++)
      for (int j = 0; j < rt; j++) acc[i][j] = next[i][j];
  }
  for (int i = 0; i < rn; i++)
    for (int j = 0; j < rt; j++) {
      LLVMValueRef s;
      if (Kv > 0) {
        LLVMValueRef args[2] = {cg_f32(c, 0), acc[i][j]};
        s = cg_fast(cg_call_intrinsic(c, "llvm.vector.reduce.fadd", m->vf, args, 2));
      } else {
        s = cg_f32(c, 0);
      }
      for (int64_t k = Kv; k < K; k++) { /* scalar tail, K is a constant */
        LLVMValueRef xs = cg_load_f32(c, DT_F32, m->x, LLVMBuildAdd(c->b, xrow[j], cg_i64(c, k), ""));
        LLVMValueRef wi = packed ? LLVMBuildAdd(c->b, gbase, cg_i64(c, Kv * rn + i * (K - Kv) + (k - Kv)), "")
                                 : LLVMBuildAdd(c->b, wrow[i], cg_i64(c, k), "");
        LLVMValueRef ws = cg_load_f32(c, m->op->in[1]->dtype, m->w, wi);
        LLVMValueRef args[3] = {xs, ws, s};
        s = cg_call_intrinsic(c, "llvm.fma", c->f32, args, 3);
      }
      epilogue(c, m, LLVMBuildAdd(c->b, t, cg_i64(c, j), ""), LLVMBuildAdd(c->b, n, cg_i64(c, i), ""), s);
    }
}

/* for n in [nb, ne): rn-row tiles, then 1-row tail */
static void rows(Cg *c, const Mm *m, int rn, int rt, LLVMValueRef t, LLVMValueRef nb, LLVMValueRef ne) {
  LLVMValueRef last = LLVMBuildSub(c->b, ne, cg_i64(c, rn - 1), "");
  Loop n = cg_loop(c, nb, last, rn, "n");
  micro_kernel(c, m, rn, rt, t, n.i, m->op->in[1]->pack_rn == rn);
  cg_loop_end(c, &n);
  if (rn > 1) { /* the last N % rn rows, row-major in either layout */
    Loop n1 = cg_loop(c, n.i, ne, 1, "n1");
    micro_kernel(c, m, 1, rt, t, n1.i, 0);
    cg_loop_end(c, &n1);
  }
}

void cg_lower_matmul(Cg *c, const Op *op) {
  if (dtype_is_quant(op->in[1]->dtype)) { cg_lower_qmatmul(c, op); return; } /* q8_0, q4_0 */
  Mm mm = {.op = op, .K = op->in[0]->dims[1], .N = op->in[1]->dims[0], .vw = c->target->vector_width};
  Mm *m = &mm;
  m->vf = LLVMVectorType(c->f32, (unsigned)m->vw);
  const int64_t TN = op->a.tile_n > 0 ? op->a.tile_n : 64 * (op->a.tile_rn > 0 ? op->a.tile_rn : 4);
  const int RN = op->a.tile_rn > 0 ? op->a.tile_rn : 4;
  const int RT = op->a.tile_rt > 0 ? op->a.tile_rt : (c->target->vector_width >= 16 ? 4 : 2);
  PY_ASSERT(RN <= MAX_RN && RT <= MAX_RT);
  m->x = cg_value_ptr(c, op->in[0]);
  m->w = cg_value_ptr(c, op->in[1]);
  m->y = cg_value_ptr(c, op->out);
  m->bias = op->n_in > 2 ? cg_value_ptr(c, op->in[2]) : NULL;
  for (int i = 0; i < 2; i++)
    if (op->a.residual[i]) m->res[i] = cg_value_ptr(c, op->a.residual[i]);
  LLVMValueRef T = cg_run_field(c, RUN_NTOK);
  m->t0 = op->a.last_rows ? cg_run_field(c, RUN_LOGITS_FROM) : cg_i64(c, 0);

  /* items are groups of RN rows, so that packed groups never straddle two
   * threads' ranges; TN is a multiple of RN */
  PY_ASSERT(TN % RN == 0 && (!op->in[1]->pack_rn || (op->in[1]->pack_rn == RN && op->in[1]->pack_vw == m->vw)));
  LLVMValueRef n_lo = LLVMBuildMul(c->b, c->lo, cg_i64(c, RN), "");
  LLVMValueRef n_hi = cg_min_i64(c, LLVMBuildMul(c->b, c->hi, cg_i64(c, RN), ""), cg_i64(c, m->N));
  Loop nb = cg_loop(c, n_lo, n_hi, TN, "nb");
  LLVMValueRef ne = cg_min_i64(c, LLVMBuildAdd(c->b, nb.i, cg_i64(c, TN), ""), n_hi);
  Loop t = cg_loop(c, m->t0, LLVMBuildSub(c->b, T, cg_i64(c, RT - 1), ""), RT, "t");
  rows(c, m, RN, RT, t.i, nb.i, ne);
  cg_loop_end(c, &t);
  Loop t1 = cg_loop(c, t.i, T, 1, "t1");
  rows(c, m, RN, 1, t1.i, nb.i, ne);
  cg_loop_end(c, &t1);
  cg_loop_end(c, &nb);
}
