/* lower_matmul.c — y[t, n] = sum_k x[t, k] W[n, k] + bias[n], then the fused
 * epilogue (GELU, residual adds), for t in [t0, T) and the kernel's panels
 * of W.  W (f32, f16, bf16) is packed in panels of P rows stored k-major
 * (element (n, k) at (n/P)*P*K + k*P + n%P, the last panel zero-padded:
 * ir.h), so one k step of a panel is P consecutive values: P/vw vectors,
 * widened to f32 in registers.  One f32 accumulator lane per output.
 *
 * Register tile: MR tokens x P rows, MR * P/vw vector accumulators; per k
 * step, P/vw vector loads of W and MR broadcasts of x[t, k].  No horizontal
 * sums; the epilogue works on whole vectors of outputs.
 *
 * Loop nests (tile sizes are the op's tile attributes, set by tile_matmul):
 *   prefill (at least 4 tokens):
 *     for cache blocks of TN rows of W
 *       for k chunks of KC                   (x[:, chunk] stays in L2)
 *         staged (16-bit W, stage_w): the block's W chunk widened to f32
 *           and the x chunk copied at a padded row stride, both on the
 *           stack, where the token tiles read them
 *         for token tiles of MR, then 4, then 1 tokens
 *           for panels in the block: tile over the chunk (the block's W
 *             chunk stays in L1/L2), the accumulators of all T x TN
 *             outputs parked in a stack buffer between chunks
 *   decode (1 to 3 tokens): per token, S panels at a time over all of K,
 *     one memory stream each (several streams keep more of the memory
 *     system busy than one), then the leftovers S/2, S/4, ... at a time.
 *
 * Every output is one dot product accumulated with FMAs in increasing k
 * from k = 0, whatever the path, tile, chunk or thread: logits are
 * bit-identical for any block size or thread count, and decode gives the
 * bits prefill gives. */
#include "cg.h"

enum { MAX_MR = 16, MAX_NV = 8, MAX_S = 8 };

typedef struct {
  const Op *op;
  int64_t K, N, P, TN, KC;
  int vw, nv, MR, S;        /* nv = P / vw vectors per panel row */
  LLVMTypeRef vf;           /* <vw x float> */
  LLVMValueRef x, w, t0, T, xbuf;
  CgEpilogue ep; /* y, bias, residuals */
  DType wdt;
} Mm;

/* P/vw accumulators per token row of a tile, per stream */
typedef LLVMValueRef Acc[MAX_MR * MAX_S][MAX_NV];

/* Where a k loop reads W and x: the packed weights and the activations
 * themselves, or a block's k chunk of both staged (stage_chunk).  Panel s
 * of the tile starts at element base[s] and row k of it at base[s] + (k -
 * k0) * P; x[t, k] is at x[(t - xt0) * xs + k - xk0]. */
typedef struct {
  LLVMValueRef ptr, k0;
  DType dt;
  LLVMValueRef base[MAX_S];
  LLVMValueRef x, xt0, xk0;
  int64_t xs;
} WView;

/* <vw x float> from vw elements of w (dtype dt) at element index idx. */
static LLVMValueRef load_wvec(Cg *c, const Mm *m, LLVMValueRef w, DType dt, LLVMValueRef idx) {
  LLVMTypeRef et = dt == DT_F32 ? c->f32 : dt == DT_F16 ? c->f16 : c->i16;
  LLVMTypeRef vt = LLVMVectorType(et, (unsigned)m->vw);
  LLVMValueRef ld = LLVMBuildLoad2(c->b, vt, cg_gep(c, et, w, idx), "");
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

/* First element of the panel holding row n (a multiple of P). */
static LLVMValueRef panel_base(Cg *c, const Mm *m, LLVMValueRef n) {
  return LLVMBuildMul(c->b, n, cg_i64(c, m->K), "");
}

/* Masked vector load/store of f32 at p[idx ..] (lanes off: 0); a plain one
 * when mask is NULL. */
static LLVMValueRef masked_load(Cg *c, LLVMTypeRef vf, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef mask) {
  if (!mask) {
    LLVMValueRef ld = LLVMBuildLoad2(c->b, vf, cg_gep(c, c->f32, p, idx), "");
    LLVMSetAlignment(ld, 4);
    return ld;
  }
  LLVMValueRef a[4] = {cg_gep(c, c->f32, p, idx), LLVMConstInt(c->i32, 4, 0), mask, LLVMConstNull(vf)};
  LLVMTypeRef ov[2] = {vf, c->ptr};
  unsigned id = LLVMLookupIntrinsicID("llvm.masked.load", 16);
  return LLVMBuildCall2(c->b, LLVMIntrinsicGetType(c->ctx, id, ov, 2), LLVMGetIntrinsicDeclaration(c->mod, id, ov, 2),
                        a, 4, "");
}

static void masked_store(Cg *c, LLVMValueRef v, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef mask) {
  if (!mask) {
    LLVMSetAlignment(LLVMBuildStore(c->b, v, cg_gep(c, c->f32, p, idx)), 4);
    return;
  }
  LLVMValueRef a[4] = {v, cg_gep(c, c->f32, p, idx), LLVMConstInt(c->i32, 4, 0), mask};
  LLVMTypeRef ov[2] = {LLVMTypeOf(v), c->ptr};
  unsigned id = LLVMLookupIntrinsicID("llvm.masked.store", 17);
  LLVMBuildCall2(c->b, LLVMIntrinsicGetType(c->ctx, id, ov, 2), LLVMGetIntrinsicDeclaration(c->mod, id, ov, 2), a, 4,
                 "");
}

void cg_matmul_epilogue(Cg *c, const CgEpilogue *e, LLVMValueRef t, LLVMValueRef n, LLVMValueRef v) {
  LLVMTypeRef vf = LLVMTypeOf(v);
  const unsigned lanes = LLVMGetVectorSize(vf);
  LLVMValueRef mask = NULL; /* none when no padded row can reach this vector */
  if (e->N % e->granule) {
    LLVMValueRef iota[64];
    PY_ASSERT(lanes <= 64);
    for (unsigned l = 0; l < lanes; l++) iota[l] = LLVMConstInt(c->i64, l, 0);
    mask = LLVMBuildICmp(c->b, LLVMIntSLT, LLVMConstVector(iota, lanes),
                         cg_splat(c, LLVMBuildSub(c->b, cg_i64(c, e->N), n, ""), lanes), "");
  }
  if (e->bias) v = LLVMBuildFAdd(c->b, v, masked_load(c, vf, e->bias, n, mask), "");
  if (e->op->a.gelu) v = cg_gelu(c, v);
  LLVMValueRef yi = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, LLVMBuildSub(c->b, t, e->t0, ""), cg_i64(c, e->N), ""), n, "");
  for (int r = 0; r < 2; r++)
    if (e->res[r]) v = LLVMBuildFAdd(c->b, v, masked_load(c, vf, e->res[r], yi, mask), "");
  masked_store(c, v, e->y, yi, mask);
}

/* y[t, n .. n + P) from one token's accumulators, a vector at a time. */
static void epilogue(Cg *c, const Mm *m, LLVMValueRef t, LLVMValueRef n, LLVMValueRef *acc) {
  for (int v = 0; v < m->nv; v++)
    cg_matmul_epilogue(c, &m->ep, t, LLVMBuildAdd(c->b, n, cg_i64(c, (int64_t)v * m->vw), ""), acc[v]);
}

/* The packed W's panels from row n on, `streams` of them. */
static WView packed_view(Cg *c, const Mm *m, int streams, LLVMValueRef n) {
  WView w = {.ptr = m->w, .k0 = cg_i64(c, 0), .dt = m->wdt, .x = m->x, .xt0 = cg_i64(c, 0), .xk0 = cg_i64(c, 0), .xs = m->K};
  for (int s = 0; s < streams; s++) w.base[s] = panel_base(c, m, LLVMBuildAdd(c->b, n, cg_i64(c, s * m->P), ""));
  return w;
}

/* The k loop over [k_lo, k_hi) of mr tokens from t times `streams` panels
 * of W (wv), accumulators carried from `in` to `out`. */
static void tile_loop(Cg *c, const Mm *m, int mr, int streams, LLVMValueRef t, const WView *w, LLVMValueRef k_lo,
                      LLVMValueRef k_hi, Acc in, Acc out) {
  const int na = mr * streams * m->nv;
  LLVMValueRef init[MAX_MR * MAX_S * MAX_NV] = {0}, next[MAX_MR * MAX_S * MAX_NV] = {0};
  for (int a = 0; a < mr * streams; a++)
    for (int v = 0; v < m->nv; v++) init[a * m->nv + v] = in[a][v];
  CarryLoop l = cg_carry_loop(c, k_lo, init, na, "k");
  LLVMValueRef k = l.i;
  LLVMValueRef wv[MAX_S][MAX_NV];
  for (int s = 0; s < streams; s++) {
    LLVMValueRef row = LLVMBuildAdd(c->b, w->base[s], LLVMBuildMul(c->b, LLVMBuildSub(c->b, k, w->k0, ""), cg_i64(c, m->P), ""), "");
    if (m->op->a.prefetch > 0 && mr == 1 && w->ptr == m->w) { /* decode: prefetcht0 ahead in each stream */
      LLVMValueRef p = cg_gep(c, LLVMInt8TypeInContext(c->ctx), w->ptr,
                              LLVMBuildMul(c->b, row, cg_i64(c, dtype_size(w->dt)), ""));
      for (int64_t off = 0; off < m->P * dtype_size(w->dt); off += 64)
        cg_prefetch_t0(c, cg_byte_offset(c, p, m->op->a.prefetch + off));
    }
    for (int v = 0; v < m->nv; v++)
      wv[s][v] = load_wvec(c, m, w->ptr, w->dt, LLVMBuildAdd(c->b, row, cg_i64(c, (int64_t)v * m->vw), ""));
  }
  /* one broadcast of x[t+j, k] at a time, used at once: MR broadcasts
   * live together would not fit the registers beside the accumulators */
  for (int j = 0; j < mr; j++) {
    LLVMValueRef xr = LLVMBuildSub(c->b, LLVMBuildAdd(c->b, t, cg_i64(c, j), ""), w->xt0, "");
    LLVMValueRef xi = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, xr, cg_i64(c, w->xs), ""), LLVMBuildSub(c->b, k, w->xk0, ""), "");
    LLVMValueRef xs = cg_splat(c, cg_load_f32(c, DT_F32, w->x, xi), (unsigned)m->vw);
    for (int s = 0; s < streams; s++)
      for (int v = 0; v < m->nv; v++) {
        int a = s * mr + j;
        out[a][v] = cg_fma(c, xs, wv[s][v], l.phi[a * m->nv + v]);
        next[a * m->nv + v] = out[a][v];
      }
  }
  cg_carry_loop_end(c, &l, 1, k_hi, next);
}

static void zero_acc(const Mm *m, int n_rows, Acc a) {
  for (int i = 0; i < n_rows; i++)
    for (int v = 0; v < m->nv; v++) a[i][v] = LLVMConstNull(m->vf);
}

/* Decode: token t over panels [p_lo, p_hi) (row units), S at a time,
 * then the leftover panels S/2, S/4, ... at a time, down to 1: a thread's
 * last few panels (a third of them at pythia-160m's d_model 768: 12 per
 * thread, S = 8) still read as several streams, not one by one. */
static void stream_panels(Cg *c, const Mm *m, LLVMValueRef t, LLVMValueRef n_lo, LLVMValueRef n_hi) {
  Acc zero, acc;
  zero_acc(m, MAX_S, zero);
  LLVMValueRef nb = n_lo;
  for (int g = m->S; g >= 1; g = g > 1 ? g / 2 : 0) {
    Loop w = cg_loop(c, nb, LLVMBuildSub(c->b, n_hi, cg_i64(c, (g - 1) * m->P), ""), g * m->P, "nw");
    WView wv = packed_view(c, m, g, w.i);
    tile_loop(c, m, 1, g, t, &wv, cg_i64(c, 0), cg_i64(c, m->K), zero, acc);
    for (int s = 0; s < g; s++) epilogue(c, m, t, LLVMBuildAdd(c->b, w.i, cg_i64(c, s * m->P), ""), acc[s]);
    cg_loop_end(c, &w);
    nb = w.i;
  }
}

/* The staged chunk's panel holding row n of the block starting at nb. */
static WView staged_view(Cg *c, const Mm *m, LLVMValueRef staged, LLVMValueRef nb, LLVMValueRef n, LLVMValueRef k0) {
  LLVMValueRef pi = LLVMBuildSDiv(c->b, LLVMBuildSub(c->b, n, nb, ""), cg_i64(c, m->P), "");
  WView w = {.ptr = staged, .k0 = k0, .dt = DT_F32, .x = m->xbuf, .xt0 = m->t0, .xk0 = k0, .xs = m->KC + IR_STAGED_X_PAD};
  w.base[0] = LLVMBuildMul(c->b, pi, cg_i64(c, m->KC * m->P), "");
  return w;
}

/* Widens the block [nb, ne)'s rows k in [k0, k1) of 16-bit W to f32 in
 * staged (panel i of the block at i * KC * P, row k at (k - k0) * P), so
 * the token tiles that pass over the chunk load f32 and spend no
 * conversion per use: one conversion per element instead of one per token
 * tile, exact, and the FMA ports do only FMAs. */
static void stage_chunk(Cg *c, const Mm *m, LLVMValueRef nb, LLVMValueRef ne, LLVMValueRef k0, LLVMValueRef k1,
                        LLVMValueRef staged) {
  Loop p = cg_loop(c, nb, ne, m->P, "sp");
  WView src = packed_view(c, m, 1, p.i);
  WView dst = staged_view(c, m, staged, nb, p.i, k0);
  Loop k = cg_loop(c, k0, k1, 1, "sk");
  LLVMValueRef off = LLVMBuildMul(c->b, k.i, cg_i64(c, m->P), "");
  LLVMValueRef doff = LLVMBuildMul(c->b, LLVMBuildSub(c->b, k.i, k0, ""), cg_i64(c, m->P), "");
  for (int v = 0; v < m->nv; v++) {
    LLVMValueRef vo = cg_i64(c, (int64_t)v * m->vw);
    LLVMValueRef x = load_wvec(c, m, src.ptr, src.dt, LLVMBuildAdd(c->b, LLVMBuildAdd(c->b, src.base[0], off, ""), vo, ""));
    LLVMValueRef di = LLVMBuildAdd(c->b, LLVMBuildAdd(c->b, dst.base[0], doff, ""), vo, "");
    LLVMSetAlignment(LLVMBuildStore(c->b, x, cg_gep(c, c->f32, staged, di)), 64);
  }
  cg_loop_end(c, &k);
  cg_loop_end(c, &p);
}

/* Copies x[t0 .. T, k0 .. k1) to staged_x at row stride XS = KC + 16:
 * rows of x are K floats apart, a multiple of 4 KiB at Pythia's sizes
 * (16 KiB at d_model 4096, 64 KiB for the down projection's input), so a
 * register tile's MR rows all fall in one L1 set (and, 64 KiB apart, in
 * few L2 sets) and evict one another; XS floats apart they do not.
 * Measured on the 6.9B down projection, 1 thread: 1127-1157 -> 959-964 us
 * per token. */
static void stage_x(Cg *c, const Mm *m, LLVMValueRef k0, LLVMValueRef k1) {
  Loop t = cg_loop(c, m->t0, m->T, 1, "xt");
  LLVMValueRef src = LLVMBuildMul(c->b, t.i, cg_i64(c, m->K), "");
  LLVMValueRef dst = LLVMBuildMul(c->b, LLVMBuildSub(c->b, t.i, m->t0, ""), cg_i64(c, m->KC + IR_STAGED_X_PAD), "");
  Loop k = cg_loop(c, k0, k1, 1, "xk");
  cg_store_f32(c, m->xbuf, LLVMBuildAdd(c->b, dst, LLVMBuildSub(c->b, k.i, k0, ""), ""),
               cg_load_f32(c, DT_F32, m->x, LLVMBuildAdd(c->b, src, k.i, "")));
  cg_loop_end(c, &k);
  cg_loop_end(c, &t);
}

/* Tokens [t, t + mr) over the panels of the block [nb, ne) and k in
 * [k0, k1): accumulators start at 0 (first chunk) or from buf, and go to
 * the epilogue (last chunk) or back to buf.  buf holds one slot per
 * (token - t0, panel of the block, vector). */
static void block_tile(Cg *c, const Mm *m, int mr, LLVMValueRef t, LLVMValueRef nb, LLVMValueRef ne,
                       LLVMValueRef k0, LLVMValueRef k1, LLVMValueRef buf, LLVMValueRef staged) {
  Acc zero, in, out;
  zero_acc(m, mr, zero);
  Loop p = cg_loop(c, nb, ne, m->P, "np");
  WView wv = staged ? staged_view(c, m, staged, nb, p.i, k0) : packed_view(c, m, 1, p.i);
  if (!buf) { /* one chunk: the whole k range */
    tile_loop(c, m, mr, 1, t, &wv, k0, k1, zero, out);
    for (int j = 0; j < mr; j++) epilogue(c, m, LLVMBuildAdd(c->b, t, cg_i64(c, j), ""), p.i, out[j]);
    cg_loop_end(c, &p);
    return;
  }
  const int64_t ppb = m->TN / m->P; /* panels per block */
  LLVMValueRef pi = LLVMBuildSDiv(c->b, LLVMBuildSub(c->b, p.i, nb, ""), cg_i64(c, m->P), "");
  LLVMValueRef tr = LLVMBuildSub(c->b, t, m->t0, "");
  LLVMValueRef slot[MAX_MR][MAX_NV];
  for (int j = 0; j < mr; j++)
    for (int v = 0; v < m->nv; v++) {
      LLVMValueRef row = LLVMBuildAdd(c->b, tr, cg_i64(c, j), "");
      LLVMValueRef idx = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, LLVMBuildAdd(c->b, LLVMBuildMul(c->b, row, cg_i64(c, ppb), ""), pi, ""),
                                                         cg_i64(c, m->nv), ""), cg_i64(c, v), "");
      slot[j][v] = cg_gep(c, m->vf, buf, idx);
    }
  LLVMValueRef first = LLVMBuildICmp(c->b, LLVMIntEQ, k0, cg_i64(c, 0), "");
  LLVMValueRef last = LLVMBuildICmp(c->b, LLVMIntEQ, k1, cg_i64(c, m->K), "");
  for (int j = 0; j < mr; j++)
    for (int v = 0; v < m->nv; v++)
      in[j][v] = LLVMBuildSelect(c->b, first, LLVMConstNull(m->vf), LLVMBuildLoad2(c->b, m->vf, slot[j][v], ""), "");
  tile_loop(c, m, mr, 1, t, &wv, k0, k1, in, out);
  LLVMBasicBlockRef fin = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "fin");
  LLVMBasicBlockRef park = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "park");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "panel_done");
  LLVMBuildCondBr(c->b, last, fin, park);
  LLVMPositionBuilderAtEnd(c->b, fin);
  for (int j = 0; j < mr; j++) epilogue(c, m, LLVMBuildAdd(c->b, t, cg_i64(c, j), ""), p.i, out[j]);
  LLVMBuildBr(c->b, done);
  LLVMPositionBuilderAtEnd(c->b, park);
  for (int j = 0; j < mr; j++)
    for (int v = 0; v < m->nv; v++) LLVMBuildStore(c->b, out[j][v], slot[j][v]);
  LLVMBuildBr(c->b, done);
  LLVMPositionBuilderAtEnd(c->b, done);
  cg_loop_end(c, &p);
}

/* Prefill of the block [nb, ne): for each k chunk, every token tile (MR,
 * then 4, then 1 tokens) over every panel.  The x rows of a chunk (T x KC
 * floats) are reused by all panels of the block, the block's W chunk (TN x
 * KC) by all token tiles, and across chunks the accumulators of all T x TN
 * outputs wait in buf. */
static void block(Cg *c, const Mm *m, LLVMValueRef nb, LLVMValueRef ne, LLVMValueRef buf, LLVMValueRef staged) {
  int tiles[3] = {m->MR, m->MR > 4 ? 4 : 0, m->MR > 1 ? 1 : 0};
  Loop kc = cg_loop(c, cg_i64(c, 0), cg_i64(c, m->K), m->KC, "kc");
  LLVMValueRef k1 = cg_min_i64(c, LLVMBuildAdd(c->b, kc.i, cg_i64(c, m->KC), ""), cg_i64(c, m->K));
  if (staged) {
    stage_chunk(c, m, nb, ne, kc.i, k1, staged);
    stage_x(c, m, kc.i, k1);
  }
  LLVMValueRef t = m->t0;
  for (int i = 0; i < 3; i++) {
    if (!tiles[i]) continue;
    Loop tl = cg_loop(c, t, LLVMBuildSub(c->b, m->T, cg_i64(c, tiles[i] - 1), ""), tiles[i], "t");
    block_tile(c, m, tiles[i], tl.i, nb, ne, kc.i, k1, buf, staged);
    cg_loop_end(c, &tl);
    t = tl.i;
  }
  cg_loop_end(c, &kc);
}

void cg_lower_matmul(Cg *c, const Op *op) {
  if (dtype_is_quant(op->in[1]->dtype)) { cg_lower_qmatmul(c, op); return; } /* q8_0, q4_0 */
  Mm mm = {.op = op, .K = op->in[0]->dims[1], .N = op->in[1]->dims[0], .vw = c->target->vector_width};
  Mm *m = &mm;
  m->vf = LLVMVectorType(c->f32, (unsigned)m->vw);
  m->P = op->in[1]->pack_rn;
  m->nv = (int)(m->P / m->vw);
  m->MR = op->a.tile_rt;
  m->S = op->a.tile_streams > 0 ? op->a.tile_streams : 1;
  m->TN = op->a.tile_n;
  m->KC = op->a.tile_k > 0 ? op->a.tile_k : m->K;
  PY_ASSERT(m->P > 0 && m->P % m->vw == 0 && m->nv <= MAX_NV && op->a.tile_rn == m->P);
  PY_ASSERT(m->MR >= 1 && m->MR <= MAX_MR && m->S <= MAX_S && m->TN % m->P == 0);
  m->x = cg_value_ptr(c, op->in[0]);
  m->w = cg_value_ptr(c, op->in[1]);
  m->wdt = op->in[1]->dtype;
  m->T = cg_run_field(c, RUN_NTOK);
  m->t0 = op->a.last_rows ? cg_run_field(c, RUN_LOGITS_FROM) : cg_i64(c, 0);
  m->ep = (CgEpilogue){.op = op, .y = cg_value_ptr(c, op->out), .t0 = m->t0, .N = m->N, .granule = m->P};
  m->ep.bias = op->n_in > 2 ? cg_value_ptr(c, op->in[2]) : NULL;
  for (int i = 0; i < 2; i++)
    if (op->a.residual[i]) m->ep.res[i] = cg_value_ptr(c, op->a.residual[i]);

  /* items are panels: rows [lo*P, hi*P), the last panel padded past N */
  LLVMValueRef n_lo = LLVMBuildMul(c->b, c->lo, cg_i64(c, m->P), "");
  LLVMValueRef n_hi = LLVMBuildMul(c->b, c->hi, cg_i64(c, m->P), "");
  const int64_t buf_vecs = (int64_t)c->g->dims.max_block * m->TN / m->vw;
  PY_ASSERT(m->KC >= m->K || buf_vecs * m->vw * 4 <= IR_MATMUL_ACCBUF_MAX);
  LLVMValueRef buf = m->KC < m->K ? cg_alloca_array(c, m->vf, buf_vecs, "accbuf") : NULL;
  /* staged W and x chunks (KC <= K), sized by tile_matmul (ir.h) */
  const int64_t staged_floats = m->TN * m->KC, staged_x_floats = (int64_t)c->g->dims.max_block * (m->KC + IR_STAGED_X_PAD);
  PY_ASSERT(!op->a.stage_w || (m->wdt != DT_F32 && staged_floats * 4 <= IR_STAGED_W_MAX &&
                               staged_x_floats * 4 <= IR_STAGED_X_MAX));
  LLVMValueRef staged = op->a.stage_w ? cg_alloca_array(c, c->f32, staged_floats, "staged_w") : NULL;
  if (staged) m->xbuf = cg_alloca_array(c, c->f32, staged_x_floats, "staged_x");

  LLVMValueRef few = LLVMBuildICmp(c->b, LLVMIntSLT, LLVMBuildSub(c->b, m->T, m->t0, ""), cg_i64(c, 4), "");
  LLVMBasicBlockRef dec = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "decode");
  LLVMBasicBlockRef pre = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "prefill");
  LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "matmul_done");
  LLVMBuildCondBr(c->b, few, dec, pre);
  LLVMPositionBuilderAtEnd(c->b, dec);
  Loop t = cg_loop(c, m->t0, m->T, 1, "t");
  stream_panels(c, m, t.i, n_lo, n_hi);
  cg_loop_end(c, &t);
  LLVMBuildBr(c->b, join);
  LLVMPositionBuilderAtEnd(c->b, pre);
  Loop nb = cg_loop(c, n_lo, n_hi, m->TN, "nb");
  block(c, m, nb.i, cg_min_i64(c, LLVMBuildAdd(c->b, nb.i, cg_i64(c, m->TN), ""), n_hi), buf, staged);
  cg_loop_end(c, &nb);
  LLVMBuildBr(c->b, join);
  LLVMPositionBuilderAtEnd(c->b, join);
}
