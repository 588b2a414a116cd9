/* lower_qmatmul.c — y[t, n] = sum_k x[t, k] W[n, k] + bias[n], then the fused
 * epilogue, for W stored as q8_0 or q4_0 (llama.cpp's block formats, packed
 * as compiler/link/quantize.h describes) and x quantized to int8 per block of
 * 32 inside the kernel.  Same parallel axis as lower_matmul.c: items are
 * groups of RN rows of W.
 *
 * Loop nest:
 *   for token blocks of TB tokens           (TB: as many as a 512 KiB stack
 *                                            buffer holds, often all of T)
 *     quantize the TB rows of x into the buffer: per 32-block, d = max|x|/127,
 *       q = roundeven(x / d) (f32: x * (1/d)), and c = -OFF * sum(q)
 *     for n-blocks of TN rows               (cache block: W stays in L2)
 *       for t-tiles of RT tokens (then 1)   (decode: RT = 1, a pure GEMV that
 *                                            reads each weight byte once)
 *         for n-tiles of RN rows (then the single tail rows)
 *           RN x RT f32 vector accumulators over the chunks of K
 *
 * A chunk is CB blocks (CB = 2 with 512-bit vectors, else 1; when the block
 * count is odd the last chunk is one block); a chunk gives 8*CB i32 lanes,
 * each the dot product of 4 weight bytes and 4 activation bytes:
 *   VNNI     vpdpbusd(c, w_u8, x_s8)              (native with avx512vnni)
 *   MADDUBS  vpmaddwd(vpmaddubsw(w_u8, x_s8), 1) + c    (x86-64-v3, -v4)
 *            q8_0 there uses |w| and sign(x, w): u8 x s8 pairs of w + 128
 *            would saturate 16 bits; no correction c then
 *   GENERIC  the same lanes as VNNI in plain LLVM vector ops (x86-64, -v2)
 * The weight bytes are unsigned (q + 128, or the q4 nibble q + 8), so the
 * block's correction c = -OFF * sum(x_q) (OFF = 128 or 8) enters the first
 * lane of the block.  Then per lane, in chunk order:
 *   acc = fma(float(lane), f32(d_w) * d_x, acc)
 * and at the end acc is summed by halving (lanes l and l + L/2, ...), then
 * bias, GELU, residuals as in lower_matmul.c.  No fast-math flags: the
 * result is exactly reproducible by tests/test_quant.c's scalar model. */
#include <string.h>

#include "cg.h"

LLVMValueRef cg_gelu(Cg *c, LLVMValueRef x);

enum { MAX_RN = 8, MAX_RT = 8, XBUF_BYTES = 512 * 1024 };

typedef enum { DOT_VNNI, DOT_MADDUBS, DOT_GENERIC } DotKind;

typedef struct {
  const Op *op;
  DType dt;
  int64_t K, N, nb; /* nb: blocks of 32 along K */
  int cb, bq, rn;   /* blocks per chunk; quant bytes per block; rows per packed group */
  int off;          /* weight byte bias: 128 (q8_0) or 8 (q4_0) */
  DotKind dot;
  int64_t xs;       /* bytes per token in the buffer: K quants, nb f32 d_x, nb i32 c */
  LLVMValueRef x, w, y, bias, res[2], t0, xbuf, tb;
} Qm;

static LLVMTypeRef vt(LLVMTypeRef e, int n) { return LLVMVectorType(e, (unsigned)n); }

static LLVMValueRef shuffle(Cg *c, LLVMValueRef a, LLVMValueRef b, const int *mask, int n) {
  LLVMValueRef m[128];
  for (int i = 0; i < n; i++) m[i] = mask[i] < 0 ? LLVMGetPoison(c->i32) : LLVMConstInt(c->i32, (unsigned)mask[i], 0);
  return LLVMBuildShuffleVector(c->b, a, b ? b : LLVMGetPoison(LLVMTypeOf(a)), LLVMConstVector(m, (unsigned)n), "");
}

static LLVMValueRef splat_i(Cg *c, LLVMTypeRef e, int n, long long v) {
  LLVMValueRef k[128];
  for (int i = 0; i < n; i++) k[i] = LLVMConstInt(e, (unsigned long long)v, 1);
  return LLVMConstVector(k, (unsigned)n);
}

static LLVMValueRef load(Cg *c, LLVMTypeRef t, LLVMValueRef p, unsigned align) {
  LLVMValueRef ld = LLVMBuildLoad2(c->b, t, p, "");
  LLVMSetAlignment(ld, align);
  return ld;
}

/* An x86 intrinsic whose operand types vary between LLVM versions (i8 vs
 * i32 vectors): arguments are bitcast to the declared parameter types. */
static LLVMValueRef call_x86(Cg *c, const char *name, LLVMValueRef *args, int n) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  PY_ASSERT(id != 0);
  LLVMTypeRef ft = LLVMIntrinsicGetType(c->ctx, id, NULL, 0);
  LLVMTypeRef pt[4];
  LLVMGetParamTypes(ft, pt);
  LLVMValueRef a[4];
  for (int i = 0; i < n; i++) a[i] = LLVMBuildBitCast(c->b, args[i], pt[i], "");
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(c->mod, id, NULL, 0);
  return LLVMBuildCall2(c->b, ft, fn, a, (unsigned)n, "");
}

/* Chunk order of the 32*cw activation bytes: position p holds element
 * src(p) of the chunk (block src / 32), matching the order in which the
 * kernel unpacks the weights (q4_0 with cw = 2: low nibbles of both blocks,
 * then high nibbles).  Lane l covers positions 4l .. 4l+3. */
static int chunk_src(const Qm *m, int cw, int p) {
  if (m->dt == DT_Q4_0 && cw == 2) return (p / 16 % 2) * 32 + (p / 32) * 16 + p % 16;
  return p;
}
static int lane_block(const Qm *m, int cw, int l) { return chunk_src(m, cw, 4 * l) / 32; }

/* ------------------------------------------------------------- activations */

/* base + kb * scale + add bytes (kb a run-time i64) */
static LLVMValueRef at(Cg *c, LLVMValueRef base, LLVMValueRef kb, int64_t scale, int64_t add) {
  LLVMValueRef o = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, kb, cg_i64(c, scale), ""), cg_i64(c, add), "");
  return cg_gep(c, c->i8, base, o);
}

/* Quantizes the cw blocks from block kb of the x row at src into the buffer
 * row at dst: chunk-ordered quants at kb*32, d_x at K + 4*b, c at
 * K + 4*nb + 4*b. */
static void quantize_chunk(Cg *c, const Qm *m, LLVMValueRef src, LLVMValueRef dst, LLVMValueRef kb, int cw) {
  LLVMValueRef xv = load(c, vt(c->f32, 32 * cw), at(c, src, kb, 128, 0), 4);
  LLVMValueRef qb[2] = {NULL, NULL};
  for (int b = 0; b < cw; b++) {
    int idx[32], zero[32] = {0};
    for (int i = 0; i < 32; i++) idx[i] = b * 32 + i;
    LLVMValueRef v = cw == 1 ? xv : shuffle(c, xv, NULL, idx, 32);
    LLVMValueRef ab = cg_call_intrinsic(c, "llvm.fabs", vt(c->f32, 32), &v, 1);
    LLVMValueRef amax = cg_call_intrinsic(c, "llvm.vector.reduce.fmax", vt(c->f32, 32), &ab, 1);
    LLVMValueRef d = LLVMBuildFDiv(c->b, amax, cg_f32(c, 127.0), "dx");
    LLVMValueRef nz = LLVMBuildFCmp(c->b, LLVMRealONE, d, cg_f32(c, 0), "");
    LLVMValueRef id = LLVMBuildSelect(c->b, nz, LLVMBuildFDiv(c->b, cg_f32(c, 1.0), d, ""), cg_f32(c, 0), "id");
    LLVMValueRef idv = LLVMBuildInsertElement(c->b, LLVMGetPoison(vt(c->f32, 32)), id, LLVMConstInt(c->i32, 0, 0), "");
    idv = shuffle(c, idv, NULL, zero, 32);
    LLVMValueRef sc = LLVMBuildFMul(c->b, v, idv, "");
    sc = cg_call_intrinsic(c, "llvm.roundeven", vt(c->f32, 32), &sc, 1);
    LLVMValueRef qi = LLVMBuildFPToSI(c->b, sc, vt(c->i32, 32), "");
    LLVMValueRef sum = cg_call_intrinsic(c, "llvm.vector.reduce.add", vt(c->i32, 32), &qi, 1);
    LLVMValueRef corr = LLVMBuildMul(c->b, sum, LLVMConstInt(c->i32, (unsigned long long)(long long)-m->off, 1), "");
    LLVMBuildStore(c->b, d, at(c, dst, kb, 4, m->K + 4 * b));
    LLVMBuildStore(c->b, corr, at(c, dst, kb, 4, m->K + 4 * m->nb + 4 * b));
    qb[b] = LLVMBuildTrunc(c->b, qi, vt(c->i8, 32), "");
  }
  LLVMValueRef q = qb[0];
  if (cw == 2) {
    int perm[64];
    for (int p = 0; p < 64; p++) perm[p] = chunk_src(m, cw, p);
    q = shuffle(c, qb[0], qb[1], perm, 64);
  }
  LLVMValueRef st = LLVMBuildStore(c->b, q, at(c, dst, kb, 32, 0));
  LLVMSetAlignment(st, 1);
}

static void quantize_row(Cg *c, const Qm *m, LLVMValueRef t, LLVMValueRef row) {
  LLVMValueRef src = cg_gep(c, c->f32, m->x, LLVMBuildMul(c->b, t, cg_i64(c, m->K), ""));
  LLVMValueRef dst = cg_gep(c, c->i8, m->xbuf, LLVMBuildMul(c->b, row, cg_i64(c, m->xs), ""));
  Loop k = cg_loop(c, cg_i64(c, 0), cg_i64(c, m->nb / m->cb), 1, "qx");
  quantize_chunk(c, m, src, dst, LLVMBuildMul(c->b, k.i, cg_i64(c, m->cb), ""), m->cb);
  cg_loop_end(c, &k);
  if (m->nb % m->cb) quantize_chunk(c, m, src, dst, cg_i64(c, m->nb - 1), 1);
}

/* ------------------------------------------------------------------ kernel */

/* Lanes (8*cw i32) of one chunk of one row and one token: see the top. */
static LLVMValueRef dot(Cg *c, const Qm *m, int cw, LLVMValueRef w, LLVMValueRef x, LLVMValueRef corr) {
  const int n = 32 * cw, L = 8 * cw;
  if (m->dot == DOT_VNNI) {
    LLVMValueRef a[3] = {corr, w, x};
    return LLVMBuildBitCast(c->b, call_x86(c, cw == 2 ? "llvm.x86.avx512.vpdpbusd.512" : "llvm.x86.avx512.vpdpbusd.256", a, 3),
                            vt(c->i32, L), "");
  }
  if (m->dot == DOT_MADDUBS) {
    const char *ubsw = cw == 2 ? "llvm.x86.avx512.pmaddubs.w.512" : "llvm.x86.avx2.pmadd.ub.sw";
    const char *wd = cw == 2 ? "llvm.x86.avx512.pmaddw.d.512" : "llvm.x86.avx2.pmadd.wd";
    LLVMValueRef u = w, s = x;
    if (m->dt == DT_Q8_0) { /* |w| and sign(x, w): the pairs stay below 2^15 */
      LLVMValueRef ws = LLVMBuildXor(c->b, w, splat_i(c, c->i8, n, 0x80), "");
      LLVMValueRef args[2] = {ws, LLVMConstInt(LLVMInt1TypeInContext(c->ctx), 0, 0)};
      u = cg_call_intrinsic(c, "llvm.abs", vt(c->i8, n), args, 2);
      LLVMValueRef neg = LLVMBuildICmp(c->b, LLVMIntSLT, ws, LLVMConstNull(vt(c->i8, n)), "");
      s = LLVMBuildSelect(c->b, neg, LLVMBuildSub(c->b, LLVMConstNull(vt(c->i8, n)), x, ""), x, "");
    }
    LLVMValueRef a[2] = {u, s};
    LLVMValueRef p16 = call_x86(c, ubsw, a, 2);
    LLVMValueRef b[2] = {p16, splat_i(c, c->i16, 2 * L, 1)};
    LLVMValueRef p32 = LLVMBuildBitCast(c->b, call_x86(c, wd, b, 2), vt(c->i32, L), "");
    return m->dt == DT_Q8_0 ? p32 : LLVMBuildAdd(c->b, p32, corr, "");
  }
  LLVMValueRef p = LLVMBuildMul(c->b, LLVMBuildZExt(c->b, w, vt(c->i32, n), ""),
                                LLVMBuildSExt(c->b, x, vt(c->i32, n), ""), "");
  LLVMValueRef sum = corr;
  for (int r = 0; r < 4; r++) {
    int mask[32];
    for (int l = 0; l < L; l++) mask[l] = 4 * l + r;
    sum = LLVMBuildAdd(c->b, sum, shuffle(c, p, NULL, mask, L), "");
  }
  return sum;
}

/* Widens an 8-lane tail-chunk vector to the accumulators' L lanes with zeros. */
static LLVMValueRef widen(Cg *c, LLVMValueRef v, int from, int to) {
  if (from == to) return v;
  int mask[16];
  for (int l = 0; l < to; l++) mask[l] = l < from ? l : from;
  return shuffle(c, v, LLVMConstNull(LLVMTypeOf(v)), mask, to);
}

typedef struct {
  int rn, rt;
  LLVMValueRef sc, q;           /* the group's scale and quant areas */
  LLVMValueRef xrow[MAX_RT];    /* buffer rows of the rt tokens */
} Tile;

/* acc[i][j] (L lanes) += the chunk of cw blocks from block kb. */
static void chunk_step(Cg *c, const Qm *m, const Tile *tl, LLVMValueRef kb, int cw,
                       LLVMValueRef acc[MAX_RN][MAX_RT]) {
  const int rn = tl->rn, rt = tl->rt, Lc = 8 * cw, L = 8 * m->cb;
  const int signed_dot = m->dot == DOT_MADDUBS && m->dt == DT_Q8_0;
  int bmask[16], cmask[16];
  for (int l = 0; l < Lc; l++) {
    bmask[l] = lane_block(m, cw, l);
    cmask[l] = bmask[l]; /* c goes to the block's first lane only (index cw: a zero) */
    for (int k = 0; k < l; k++)
      if (lane_block(m, cw, k) == bmask[l]) cmask[l] = cw;
  }
  /* the rn*cw scales of the chunk, [block][row] */
  LLVMValueRef sv = load(c, vt(c->f16, rn * cw), at(c, tl->sc, kb, 2 * rn, 0), 2);
  sv = LLVMBuildFPExt(c->b, sv, vt(c->f32, rn * cw), "");
  LLVMValueRef dw[MAX_RN], wq[MAX_RN], dx[MAX_RT], xq[MAX_RT], corr[MAX_RT];
  for (int i = 0; i < rn; i++) {
    int mask[16];
    for (int l = 0; l < Lc; l++) mask[l] = bmask[l] * rn + i;
    dw[i] = shuffle(c, sv, NULL, mask, Lc);
  }
  for (int j = 0; j < rt; j++) {
    xq[j] = load(c, vt(c->i8, 32 * cw), at(c, tl->xrow[j], kb, 32, 0), 1);
    LLVMValueRef d = load(c, vt(c->f32, cw), at(c, tl->xrow[j], kb, 4, m->K), 4);
    dx[j] = shuffle(c, d, NULL, bmask, Lc);
    corr[j] = LLVMConstNull(vt(c->i32, Lc));
    if (!signed_dot) {
      LLVMValueRef cv = load(c, vt(c->i32, cw), at(c, tl->xrow[j], kb, 4, m->K + 4 * m->nb), 4);
      corr[j] = shuffle(c, cv, LLVMConstNull(vt(c->i32, cw)), cmask, Lc);
    }
  }
  for (int i = 0; i < rn; i++) {
    LLVMValueRef p = at(c, tl->q, kb, (int64_t)rn * m->bq, (int64_t)i * cw * m->bq);
    if (m->dt == DT_Q8_0) {
      wq[i] = load(c, vt(c->i8, 32 * cw), p, 1);
    } else { /* low nibbles of the chunk's blocks, then high nibbles */
      LLVMValueRef b = load(c, vt(c->i8, 16 * cw), p, 1);
      LLVMValueRef lo = LLVMBuildAnd(c->b, b, splat_i(c, c->i8, 16 * cw, 15), "");
      LLVMValueRef hi = LLVMBuildLShr(c->b, b, splat_i(c, c->i8, 16 * cw, 4), "");
      int cat[64];
      for (int k = 0; k < 32 * cw; k++) cat[k] = k;
      wq[i] = shuffle(c, lo, hi, cat, 32 * cw);
    }
  }
  for (int i = 0; i < rn; i++)
    for (int j = 0; j < rt; j++) {
      LLVMValueRef isum = dot(c, m, cw, wq[i], xq[j], corr[j]);
      LLVMValueRef f = LLVMBuildSIToFP(c->b, isum, vt(c->f32, Lc), "");
      LLVMValueRef s = LLVMBuildFMul(c->b, dw[i], dx[j], "");
      LLVMValueRef args[3] = {widen(c, f, Lc, L), widen(c, s, Lc, L), acc[i][j]};
      acc[i][j] = cg_call_intrinsic(c, "llvm.fma", vt(c->f32, L), args, 3);
    }
}

/* Writes y[t, n] from the dot product v: bias, GELU, residuals, store. */
static void epilogue(Cg *c, const Qm *m, LLVMValueRef t, LLVMValueRef n, LLVMValueRef v) {
  if (m->bias) v = LLVMBuildFAdd(c->b, v, cg_load_f32(c, DT_F32, m->bias, n), "");
  if (m->op->a.gelu) v = cg_gelu(c, v);
  LLVMValueRef yi = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, LLVMBuildSub(c->b, t, m->t0, ""), cg_i64(c, m->N), ""), n, "");
  for (int i = 0; i < 2; i++)
    if (m->res[i]) v = LLVMBuildFAdd(c->b, v, cg_load_f32(c, DT_F32, m->res[i], yi), "");
  cg_store_f32(c, m->y, yi, v);
}

/* rn x rt outputs at (t, n); the rows form one packed group of rn rows at
 * byte offset goff of W. */
static void micro_kernel(Cg *c, const Qm *m, int rn, int rt, LLVMValueRef t, LLVMValueRef n, LLVMValueRef goff) {
  const int L = 8 * m->cb;
  const int64_t nch = m->nb / m->cb;
  Tile tl = {.rn = rn, .rt = rt};
  tl.sc = cg_gep(c, c->i8, m->w, goff);
  tl.q = cg_byte_offset(c, tl.sc, ((int64_t)rn * m->nb * 2 + 63) / 64 * 64);
  for (int j = 0; j < rt; j++) {
    LLVMValueRef row = LLVMBuildSub(c->b, LLVMBuildAdd(c->b, t, cg_i64(c, j), ""), m->tb, "");
    tl.xrow[j] = cg_gep(c, c->i8, m->xbuf, LLVMBuildMul(c->b, row, cg_i64(c, m->xs), ""));
  }
  LLVMValueRef acc[MAX_RN][MAX_RT];
  LLVMValueRef zero = LLVMConstNull(vt(c->f32, L));
  for (int i = 0; i < rn; i++)
    for (int j = 0; j < rt; j++) acc[i][j] = zero;
  if (nch > 0) { /* the chunk loop carries rn*rt vector accumulators as phis */
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(c->b);
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "qk");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "qk_done");
    LLVMBuildBr(c->b, body);
    LLVMPositionBuilderAtEnd(c->b, body);
    LLVMValueRef k = LLVMBuildPhi(c->b, c->i64, "chunk");
    LLVMValueRef kz = cg_i64(c, 0);
    LLVMAddIncoming(k, &kz, &pre, 1);
    LLVMValueRef phis[MAX_RN][MAX_RT];
    for (int i = 0; i < rn; i++)
      for (int j = 0; j < rt; j++) {
        phis[i][j] = acc[i][j] = LLVMBuildPhi(c->b, vt(c->f32, L), "acc");
        LLVMAddIncoming(phis[i][j], &zero, &pre, 1);
      }
    chunk_step(c, m, &tl, LLVMBuildMul(c->b, k, cg_i64(c, m->cb), ""), m->cb, acc);
    LLVMValueRef k2 = LLVMBuildNSWAdd(c->b, k, cg_i64(c, 1), "");
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(c->b);
    LLVMAddIncoming(k, &k2, &latch, 1);
    for (int i = 0; i < rn; i++)
      for (int j = 0; j < rt; j++) LLVMAddIncoming(phis[i][j], &acc[i][j], &latch, 1);
    LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, k2, cg_i64(c, nch), ""), body, done);
    LLVMPositionBuilderAtEnd(c->b, done);
  }
  if (m->nb % m->cb) chunk_step(c, m, &tl, cg_i64(c, m->nb - 1), 1, acc);
  for (int i = 0; i < rn; i++)
    for (int j = 0; j < rt; j++) {
      LLVMValueRef v = acc[i][j];
      for (int w = L; w > 1; w /= 2) { /* lanes l and l + w/2, in that order */
        int lo[16], hi[16];
        for (int l = 0; l < w / 2; l++) lo[l] = l, hi[l] = l + w / 2;
        v = LLVMBuildFAdd(c->b, shuffle(c, v, NULL, lo, w / 2), shuffle(c, v, NULL, hi, w / 2), "");
      }
      v = LLVMBuildExtractElement(c->b, v, LLVMConstInt(c->i32, 0, 0), "");
      epilogue(c, m, LLVMBuildAdd(c->b, t, cg_i64(c, j), ""), LLVMBuildAdd(c->b, n, cg_i64(c, i), ""), v);
    }
}

/* for n in [nb, ne): RN-row groups, then the single tail rows */
static void rows(Cg *c, const Qm *m, int rt, LLVMValueRef t, LLVMValueRef nb, LLVMValueRef ne) {
  const int RN = m->rn;
  const int64_t gb = ir_qgroup_bytes(m->dt, RN, m->K), full = m->N / RN;
  Loop n = cg_loop(c, nb, LLVMBuildSub(c->b, ne, cg_i64(c, RN - 1), ""), RN, "n");
  micro_kernel(c, m, RN, rt, t, n.i, LLVMBuildMul(c->b, LLVMBuildSDiv(c->b, n.i, cg_i64(c, RN), ""), cg_i64(c, gb), ""));
  cg_loop_end(c, &n);
  if (RN > 1 && m->N % RN) {
    Loop n1 = cg_loop(c, n.i, ne, 1, "n1");
    LLVMValueRef goff = LLVMBuildAdd(c->b, cg_i64(c, full * gb),
                                     LLVMBuildMul(c->b, LLVMBuildSub(c->b, n1.i, cg_i64(c, full * RN), ""),
                                                  cg_i64(c, ir_qgroup_bytes(m->dt, 1, m->K)), ""), "");
    micro_kernel(c, m, 1, rt, t, n1.i, goff);
    cg_loop_end(c, &n1);
  }
}

void cg_lower_qmatmul(Cg *c, const Op *op) {
  const Value *W = op->in[1];
  Qm mm = {.op = op, .dt = W->dtype, .K = W->dims[1], .N = W->dims[0]}, *m = &mm;
  PY_ASSERT(dtype_is_quant(m->dt) && m->K % 32 == 0 && W->pack_rn > 0);
  m->nb = m->K / 32;
  m->cb = W->pack_vw / 32;
  m->rn = W->pack_rn;
  m->bq = m->dt == DT_Q8_0 ? 32 : 16;
  m->off = m->dt == DT_Q8_0 ? 128 : 8;
  const CgTarget *tg = c->target;
  m->dot = tg->has_vnni ? DOT_VNNI : tg->vector_width >= 8 ? DOT_MADDUBS : DOT_GENERIC;
  PY_ASSERT(m->cb == (tg->vector_width >= 16 ? 2 : 1));
  const int RN = op->a.tile_rn > 0 ? op->a.tile_rn : 4;
  const int RT = op->a.tile_rt > 0 ? op->a.tile_rt : (tg->vector_width >= 16 ? 4 : 2);
  const int64_t TN = op->a.tile_n > 0 ? op->a.tile_n : 64 * RN;
  PY_ASSERT(RN == m->rn && RN <= MAX_RN && RT <= MAX_RT && TN % RN == 0);
  m->xs = (m->K + 8 * m->nb + 63) / 64 * 64;
  int64_t TB = XBUF_BYTES / m->xs;
  if (TB > c->g->dims.max_block) TB = c->g->dims.max_block;
  if (TB >= RT) TB -= TB % RT;
  if (TB < 1) TB = 1;
  m->x = cg_value_ptr(c, op->in[0]);
  m->w = cg_value_ptr(c, W);
  m->y = cg_value_ptr(c, op->out);
  m->bias = op->n_in > 2 ? cg_value_ptr(c, op->in[2]) : NULL;
  for (int i = 0; i < 2; i++)
    if (op->a.residual[i]) m->res[i] = cg_value_ptr(c, op->a.residual[i]);
  m->xbuf = cg_alloca_array(c, c->i8, TB * m->xs, "xq");
  LLVMValueRef T = cg_run_field(c, RUN_NTOK);
  m->t0 = op->a.last_rows ? cg_run_field(c, RUN_LOGITS_FROM) : cg_i64(c, 0);
  LLVMValueRef n_lo = LLVMBuildMul(c->b, c->lo, cg_i64(c, RN), "");
  LLVMValueRef n_hi = cg_min_i64(c, LLVMBuildMul(c->b, c->hi, cg_i64(c, RN), ""), cg_i64(c, m->N));

  Loop tb = cg_loop(c, m->t0, T, TB, "tb");
  m->tb = tb.i;
  LLVMValueRef tbe = cg_min_i64(c, LLVMBuildAdd(c->b, tb.i, cg_i64(c, TB), ""), T);
  Loop tq = cg_loop(c, tb.i, tbe, 1, "tq");
  quantize_row(c, m, tq.i, LLVMBuildSub(c->b, tq.i, tb.i, ""));
  cg_loop_end(c, &tq);
  Loop nb = cg_loop(c, n_lo, n_hi, TN, "nb");
  LLVMValueRef ne = cg_min_i64(c, LLVMBuildAdd(c->b, nb.i, cg_i64(c, TN), ""), n_hi);
  Loop t = cg_loop(c, tb.i, LLVMBuildSub(c->b, tbe, cg_i64(c, RT - 1), ""), RT, "t");
  rows(c, m, RT, t.i, nb.i, ne);
  cg_loop_end(c, &t);
  if (RT > 1) {
    Loop t1 = cg_loop(c, t.i, tbe, 1, "t1");
    rows(c, m, 1, t1.i, nb.i, ne);
    cg_loop_end(c, &t1);
  }
  cg_loop_end(c, &nb);
  cg_loop_end(c, &tb);
}
