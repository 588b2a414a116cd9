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

enum { MAX_RN = 16, MAX_RT = 8 }; /* rn > 8 only for multi-stream decode tiles */
/* Stack buffers a kernel may use (pool threads have the default 8 MiB
 * stacks): a larger --tile falls back to the unbuffered loops. */
enum { MAX_WIDEN_BYTES = 1 << 20, MAX_ACCBUF_BYTES = 256 << 10 };


typedef struct {
  const Op *op;
  int64_t K, N;
  int vw;
  LLVMTypeRef vf;           /* <vw x float> */
  LLVMValueRef x, w, y, bias, res[2], t0;
  DType wdt;          /* dtype of the W the kernel reads (f32 once a block is widened) */
  int grn;            /* rows per packed group of W (its pack_rn), 0 = row-major */
  LLVMValueRef nbase; /* row of W at w[0]: 0, or the first row of a widened block */
} Mm;

/* <vw x float> from vw elements of W (storage dtype) at element index idx. */
static LLVMValueRef load_wvec(Cg *c, const Mm *m, LLVMValueRef idx) {
  DType dt = m->wdt;
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

/* Writes y[t, n .. n+rn) from the dot products v[0..rn): bias, GELU (on
 * all rn values as one vector: cg_math.c), residuals, store. */
static void epilogue(Cg *c, const Mm *m, int rn, LLVMValueRef t, LLVMValueRef n, LLVMValueRef *v) {
  for (int i = 0; i < rn; i++)
    if (m->bias) v[i] = LLVMBuildFAdd(c->b, v[i], cg_load_f32(c, DT_F32, m->bias, LLVMBuildAdd(c->b, n, cg_i64(c, i), "")), "");
  if (m->op->a.gelu) {
    LLVMValueRef g = LLVMGetPoison(LLVMVectorType(c->f32, (unsigned)rn));
    for (int i = 0; i < rn; i++) g = LLVMBuildInsertElement(c->b, g, v[i], LLVMConstInt(c->i32, (unsigned)i, 0), "");
    g = cg_gelu(c, g);
    for (int i = 0; i < rn; i++) v[i] = LLVMBuildExtractElement(c->b, g, LLVMConstInt(c->i32, (unsigned)i, 0), "");
  }
  LLVMValueRef yrow = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, LLVMBuildSub(c->b, t, m->t0, ""), cg_i64(c, m->N), ""), n, "");
  for (int i = 0; i < rn; i++) {
    LLVMValueRef yi = LLVMBuildAdd(c->b, yrow, cg_i64(c, i), "");
    for (int r = 0; r < 2; r++)
      if (m->res[r]) v[i] = LLVMBuildFAdd(c->b, v[i], cg_load_f32(c, DT_F32, m->res[r], yi), "");
    cg_store_f32(c, m->y, yi, v[i]);
  }
}

/* Where the micro-kernel's operands start: x rows of its rt tokens, W rows
 * (or the packed group) of its rn rows. */
typedef struct {
  LLVMValueRef xrow[MAX_RT], wrow[MAX_RN], gbase;
} Addr;

/* element (i, k) of W, with the register tile's row i in packed group
 * g = i / grn, row r = i % grn of that group (grn = pack_rn; a decode tile
 * spans several groups, one memory stream each):
 *   packed     (n + g*grn)*K + k*grn + r*vw         (k a multiple of vw),
 *         tail (n + g*grn)*K + Kv*grn + r*(K-Kv) + (k-Kv);
 *   row-major  (n+i)*K + k */
static Addr mk_addr(Cg *c, const Mm *m, int rn, int rt, LLVMValueRef t, LLVMValueRef n, int packed) {
  Addr a;
  for (int j = 0; j < rt; j++)
    a.xrow[j] = LLVMBuildMul(c->b, LLVMBuildAdd(c->b, t, cg_i64(c, j), ""), cg_i64(c, m->K), "");
  LLVMValueRef nr = LLVMBuildSub(c->b, n, m->nbase, "");
  a.gbase = LLVMBuildMul(c->b, nr, cg_i64(c, m->K), "");
  for (int i = 0; i < rn; i++)
    a.wrow[i] = packed ? LLVMBuildAdd(c->b, a.gbase, cg_i64(c, (int64_t)(i / m->grn) * m->grn * m->K +
                                                              (int64_t)(i % m->grn) * m->vw), "")
                       : LLVMBuildMul(c->b, LLVMBuildAdd(c->b, nr, cg_i64(c, i), ""), cg_i64(c, m->K), "");
  return a;
}

/* The vector k loop over [k_lo, k_hi) (multiples of vw, k_lo < k_hi), rn*rt
 * accumulators carried as phis from `in` to `out`.  Lane l of an
 * accumulator sums k = l, l + vw, ... in order, so splitting the range into
 * chunks does not change any result. */
static void mk_loop(Cg *c, const Mm *m, int rn, int rt, const Addr *a, int packed, LLVMValueRef k_lo,
                    LLVMValueRef k_hi, LLVMValueRef in[MAX_RN][MAX_RT], LLVMValueRef out[MAX_RN][MAX_RT]) {
  LLVMValueRef init[MAX_RN * MAX_RT], next[MAX_RN * MAX_RT];
  for (int i = 0; i < rn; i++)
    for (int j = 0; j < rt; j++) init[i * rt + j] = in[i][j];
  CarryLoop l = cg_carry_loop(c, k_lo, init, rn * rt, "kv");
  LLVMValueRef k = l.i;
  const int64_t PREFETCH_BYTES = m->op->a.prefetch;
  if (packed && rt == 1 && PREFETCH_BYTES > 0) {
    /* decode: each packed group is one stream; ask for its lines
     * PREFETCH_BYTES ahead, across page boundaries where hardware
     * prefetchers stop */
    int64_t step_bytes = (int64_t)m->grn * m->vw * dtype_size(m->wdt);
    for (int g = 0; g < rn; g += m->grn) {
      LLVMValueRef here = LLVMBuildAdd(c->b, a->wrow[g], LLVMBuildMul(c->b, k, cg_i64(c, m->grn), ""), "");
      LLVMValueRef base = cg_gep(c, LLVMInt8TypeInContext(c->ctx), m->w,
                                 LLVMBuildMul(c->b, here, cg_i64(c, dtype_size(m->wdt)), ""));
      for (int64_t off = 0; off < step_bytes; off += 64) {
        LLVMValueRef args[4] = {cg_byte_offset(c, base, PREFETCH_BYTES + off), LLVMConstInt(c->i32, 0, 0),
                                LLVMConstInt(c->i32, 0, 0), LLVMConstInt(c->i32, 1, 0)};
        cg_call_intrinsic(c, "llvm.prefetch", c->ptr, args, 4);
      }
    }
  }
  LLVMValueRef xv[MAX_RT];
  for (int j = 0; j < rt; j++) xv[j] = load_xvec(c, m, LLVMBuildAdd(c->b, a->xrow[j], k, ""));
  for (int i = 0; i < rn; i++) {
    LLVMValueRef wk = packed ? LLVMBuildMul(c->b, k, cg_i64(c, m->grn), "") : k;
    LLVMValueRef wv = load_wvec(c, m, LLVMBuildAdd(c->b, a->wrow[i], wk, ""));
    for (int j = 0; j < rt; j++) out[i][j] = fma_vec(c, m, xv[j], wv, l.phi[i * rt + j]);
  }
  for (int i = 0; i < rn; i++)
    for (int j = 0; j < rt; j++) next[i * rt + j] = out[i][j];
  cg_carry_loop_end(c, &l, m->vw, k_hi, next);
}

/* Horizontal sums, the scalar k tail (K % vw), the epilogue and the stores
 * of rn x rt outputs at (t, n); acc is NULL when K < vw. */
static void mk_finish(Cg *c, const Mm *m, int rn, int rt, LLVMValueRef t, LLVMValueRef n, const Addr *a,
                      int packed, LLVMValueRef acc[MAX_RN][MAX_RT]) {
  const int64_t K = m->K, Kv = K / m->vw * m->vw;
  LLVMValueRef out[MAX_RT][MAX_RN];
  for (int i = 0; i < rn; i++)
    for (int j = 0; j < rt; j++) {
      LLVMValueRef s;
      if (acc) {
        LLVMValueRef args[2] = {cg_f32(c, 0), acc[i][j]};
        s = cg_fast(cg_call_intrinsic(c, "llvm.vector.reduce.fadd", m->vf, args, 2));
      } else {
        s = cg_f32(c, 0);
      }
      for (int64_t k = Kv; k < K; k++) { /* scalar tail, K is a constant */
        LLVMValueRef xs = cg_load_f32(c, DT_F32, m->x, LLVMBuildAdd(c->b, a->xrow[j], cg_i64(c, k), ""));
        const int64_t g = i / (packed ? m->grn : 1), r = i % (packed ? m->grn : 1);
        LLVMValueRef wi = packed ? LLVMBuildAdd(c->b, a->gbase, cg_i64(c, g * m->grn * K + Kv * m->grn + r * (K - Kv) + (k - Kv)), "")
                                 : LLVMBuildAdd(c->b, a->wrow[i], cg_i64(c, k), "");
        LLVMValueRef ws = cg_load_f32(c, m->wdt, m->w, wi);
        LLVMValueRef args[3] = {xs, ws, s};
        s = cg_call_intrinsic(c, "llvm.fma", c->f32, args, 3);
      }
      out[j][i] = s;
    }
  for (int j = 0; j < rt; j++) epilogue(c, m, rn, LLVMBuildAdd(c->b, t, cg_i64(c, j), ""), n, out[j]);
}

/* rn x rt outputs starting at (t, n), the whole k range at once.  packed:
 * rows n.. form one packed group of W (layout in ir.h), else W rows are
 * row-major. */
static void micro_kernel(Cg *c, const Mm *m, int rn, int rt, LLVMValueRef t, LLVMValueRef n, int packed) {
  const int64_t Kv = m->K / m->vw * m->vw;
  Addr a = mk_addr(c, m, rn, rt, t, n, packed);
  LLVMValueRef zero[MAX_RN][MAX_RT], acc[MAX_RN][MAX_RT];
  for (int i = 0; i < rn; i++)
    for (int j = 0; j < rt; j++) zero[i][j] = LLVMConstNull(m->vf);
  if (Kv > 0) mk_loop(c, m, rn, rt, &a, packed, cg_i64(c, 0), cg_i64(c, Kv), zero, acc);
  mk_finish(c, m, rn, rt, t, n, &a, packed, Kv > 0 ? acc : NULL);
}

/* for n in [nb, ne): rn-row tiles, then 1-row tail.  A single token over
 * packed W first takes `streams` groups per tile, one stream each. */
static void rows(Cg *c, const Mm *m, int rn, int rt, LLVMValueRef t, LLVMValueRef nb, LLVMValueRef ne) {
  const int packed = m->grn == rn, streams = m->op->a.tile_streams;
  if (packed && rt == 1 && streams > 1) {
    LLVMValueRef lastw = LLVMBuildSub(c->b, ne, cg_i64(c, streams * rn - 1), "");
    Loop w = cg_loop(c, nb, lastw, streams * rn, "nw");
    micro_kernel(c, m, streams * rn, 1, t, w.i, 1);
    cg_loop_end(c, &w);
    nb = w.i;
  }
  LLVMValueRef last = LLVMBuildSub(c->b, ne, cg_i64(c, rn - 1), "");
  Loop n = cg_loop(c, nb, last, rn, "n");
  micro_kernel(c, m, rn, rt, t, n.i, packed);
  cg_loop_end(c, &n);
  if (rn > 1) { /* the last N % rn rows, row-major in either layout */
    Loop n1 = cg_loop(c, n.i, ne, 1, "n1");
    micro_kernel(c, m, 1, rt, t, n1.i, 0);
    cg_loop_end(c, &n1);
  }
}

/* Prefill: like rows(), with k split into chunks of kc so that the rt
 * activation rows of a chunk (rt * kc floats) stay in L1 while every row
 * group of the block passes over them.  Accumulators wait in a stack
 * buffer between chunks; by mk_loop's lane order the results are the same
 * bits as rows() gives. */
static void rows_chunked(Cg *c, const Mm *m, int rn, int rt, LLVMValueRef t, LLVMValueRef nb, LLVMValueRef ne,
                         int64_t tn, int64_t kc) {
  const int64_t Kv = m->K / m->vw * m->vw, gmax = tn / rn;
  const int packed = m->grn == rn;
  LLVMValueRef buf = cg_alloca_array(c, m->vf, gmax * rn * rt, "accbuf");
  LLVMValueRef G = LLVMBuildSDiv(c->b, LLVMBuildSub(c->b, ne, nb, ""), cg_i64(c, rn), "groups");
  LLVMValueRef slot[MAX_RN][MAX_RT];
#define SLOTS(gv)                                                                                  \
  for (int i = 0; i < rn; i++)                                                                     \
    for (int j = 0; j < rt; j++)                                                                   \
      slot[i][j] = cg_gep(c, m->vf, buf, LLVMBuildAdd(c->b, LLVMBuildMul(c->b, gv, cg_i64(c, rn * rt), ""), \
                                                      cg_i64(c, i * rt + j), ""));
  Loop z = cg_loop(c, cg_i64(c, 0), G, 1, "zg");
  SLOTS(z.i);
  for (int i = 0; i < rn; i++)
    for (int j = 0; j < rt; j++) LLVMBuildStore(c->b, LLVMConstNull(m->vf), slot[i][j]);
  cg_loop_end(c, &z);
  Loop k0 = cg_loop(c, cg_i64(c, 0), cg_i64(c, Kv), kc, "kc");
  LLVMValueRef k1 = cg_min_i64(c, LLVMBuildAdd(c->b, k0.i, cg_i64(c, kc), ""), cg_i64(c, Kv));
  Loop g = cg_loop(c, cg_i64(c, 0), G, 1, "g");
  LLVMValueRef n = LLVMBuildAdd(c->b, nb, LLVMBuildMul(c->b, g.i, cg_i64(c, rn), ""), "");
  Addr a = mk_addr(c, m, rn, rt, t, n, packed);
  SLOTS(g.i);
  LLVMValueRef in[MAX_RN][MAX_RT], out[MAX_RN][MAX_RT];
  for (int i = 0; i < rn; i++)
    for (int j = 0; j < rt; j++) in[i][j] = LLVMBuildLoad2(c->b, m->vf, slot[i][j], "");
  mk_loop(c, m, rn, rt, &a, packed, k0.i, k1, in, out);
  for (int i = 0; i < rn; i++)
    for (int j = 0; j < rt; j++) LLVMBuildStore(c->b, out[i][j], slot[i][j]);
  cg_loop_end(c, &g);
  cg_loop_end(c, &k0);
  Loop f = cg_loop(c, cg_i64(c, 0), G, 1, "fg");
  LLVMValueRef nf = LLVMBuildAdd(c->b, nb, LLVMBuildMul(c->b, f.i, cg_i64(c, rn), ""), "");
  Addr af = mk_addr(c, m, rn, rt, t, nf, packed);
  SLOTS(f.i);
  LLVMValueRef acc[MAX_RN][MAX_RT];
  for (int i = 0; i < rn; i++)
    for (int j = 0; j < rt; j++) acc[i][j] = LLVMBuildLoad2(c->b, m->vf, slot[i][j], "");
  mk_finish(c, m, rn, rt, t, nf, &af, packed, acc);
  cg_loop_end(c, &f);
#undef SLOTS
  /* the last N % rn rows of the block, whole k range */
  Loop n1 = cg_loop(c, LLVMBuildAdd(c->b, nb, LLVMBuildMul(c->b, G, cg_i64(c, rn), ""), ""), ne, 1, "n1");
  micro_kernel(c, m, 1, rt, t, n1.i, 0);
  cg_loop_end(c, &n1);
}

/* All tokens over the rows [nb, ne): RT-token tiles, then single tokens. */
static void token_tiles(Cg *c, const Mm *m, int RN, int RT, int64_t TN, LLVMValueRef T, LLVMValueRef nb,
                        LLVMValueRef ne) {
  Loop t = cg_loop(c, m->t0, LLVMBuildSub(c->b, T, cg_i64(c, RT - 1), ""), RT, "t");
  const int64_t Kv = m->K / m->vw * m->vw;
  const int64_t KC = m->op->a.tile_k > 0 ? m->op->a.tile_k : Kv;
  if (KC < Kv && TN * RT * m->vw * 4 <= MAX_ACCBUF_BYTES) rows_chunked(c, m, RN, RT, t.i, nb, ne, TN, KC);
  else rows(c, m, RN, RT, t.i, nb, ne);
  cg_loop_end(c, &t);
  Loop t1 = cg_loop(c, t.i, T, 1, "t1");
  rows(c, m, RN, 1, t1.i, nb, ne);
  cg_loop_end(c, &t1);
}

/* Prefill with 16-bit W: the block's rows [nb, ne) are widened to f32 once
 * into a stack buffer (same layout, rows counted from nb), so the register
 * tiles of all T tokens read f32 instead of converting W again per tile;
 * widening is exact, so the results are the same bits.  Decode (fewer than
 * 2 RT tokens) reads W directly: each weight is used once anyway. */
static void widened_block(Cg *c, const Mm *m, int RN, int RT, int64_t TN, LLVMValueRef T, LLVMValueRef nb,
                          LLVMValueRef ne, LLVMValueRef buf) {
  LLVMValueRef many = LLVMBuildICmp(c->b, LLVMIntSGE, LLVMBuildSub(c->b, T, m->t0, ""), cg_i64(c, 2 * RT), "");
  LLVMBasicBlockRef wide = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "widen");
  LLVMBasicBlockRef direct = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "direct");
  LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "block_done");
  LLVMBuildCondBr(c->b, many, wide, direct);
  LLVMPositionBuilderAtEnd(c->b, wide);
  LLVMValueRef e0 = LLVMBuildMul(c->b, nb, cg_i64(c, m->K), "");
  Loop e = cg_loop(c, e0, LLVMBuildMul(c->b, ne, cg_i64(c, m->K), ""), 1, "e");
  cg_store_f32(c, buf, LLVMBuildSub(c->b, e.i, e0, ""), cg_load_f32(c, m->wdt, m->w, e.i));
  cg_loop_end(c, &e);
  Mm wm = *m;
  wm.w = buf, wm.wdt = DT_F32, wm.nbase = nb;
  token_tiles(c, &wm, RN, RT, TN, T, nb, ne);
  LLVMBuildBr(c->b, join);
  LLVMPositionBuilderAtEnd(c->b, direct);
  token_tiles(c, m, RN, RT, TN, T, nb, ne);
  LLVMBuildBr(c->b, join);
  LLVMPositionBuilderAtEnd(c->b, join);
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
  m->wdt = op->in[1]->dtype;
  m->grn = op->in[1]->pack_rn;
  m->nbase = cg_i64(c, 0);
  m->y = cg_value_ptr(c, op->out);
  m->bias = op->n_in > 2 ? cg_value_ptr(c, op->in[2]) : NULL;
  for (int i = 0; i < 2; i++)
    if (op->a.residual[i]) m->res[i] = cg_value_ptr(c, op->a.residual[i]);
  LLVMValueRef T = cg_run_field(c, RUN_NTOK);
  m->t0 = op->a.last_rows ? cg_run_field(c, RUN_LOGITS_FROM) : cg_i64(c, 0);

  /* items are groups of RN rows, so that packed groups never straddle two
   * threads' ranges; TN is a multiple of RN */
  PY_ASSERT(TN % RN == 0 && (!op->in[1]->pack_rn || (op->in[1]->pack_rn == RN && op->in[1]->pack_vw == m->vw)));
  const int widen = m->wdt != DT_F32 && TN * m->K * 4 <= MAX_WIDEN_BYTES;
  LLVMValueRef wbuf = widen ? cg_alloca_array(c, c->f32, TN * m->K, "wblock") : NULL;
  LLVMValueRef n_lo = LLVMBuildMul(c->b, c->lo, cg_i64(c, RN), "");
  LLVMValueRef n_hi = cg_min_i64(c, LLVMBuildMul(c->b, c->hi, cg_i64(c, RN), ""), cg_i64(c, m->N));
  Loop nb = cg_loop(c, n_lo, n_hi, TN, "nb");
  LLVMValueRef ne = cg_min_i64(c, LLVMBuildAdd(c->b, nb.i, cg_i64(c, TN), ""), n_hi);
  if (widen) widened_block(c, m, RN, RT, TN, T, nb.i, ne, wbuf);
  else token_tiles(c, m, RN, RT, TN, T, nb.i, ne);
  cg_loop_end(c, &nb);
}
