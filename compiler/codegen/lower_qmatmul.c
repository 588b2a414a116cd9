/* lower_qmatmul.c — y[t, n] = sum_k x[t, k] W[n, k] + bias[n], then the fused
 * epilogue, for W stored as q8_0 or q4_0 (llama.cpp's block formats, packed
 * as compiler/link/quantize.h describes: groups of L rows, L = 16 with
 * 512-bit vectors, else 8, one i32 lane per row) and x quantized to int8 per
 * block of 32 inside the kernel.  Items of the parallel axis are groups of
 * L rows (tile_rn = L), as in lower_matmul.c.
 *
 * Loop nest:
 *   for token blocks of TB tokens           (TB: as many as a 1 MiB stack
 *                                            buffer holds, often all of T)
 *     quantize the TB rows of x into the buffer: per 32-block,
 *       d = max|x| / 127, q = roundeven(x * (1/d)), c = -OFF * sum(q)
 *     for n-blocks of TN rows               (cache block: W stays in L2)
 *       for t-tiles of RT tokens (then 1)   (decode: RT = 1, a pure GEMV that
 *                                            reads each weight byte once)
 *         for tiles of G groups of L rows (then 1 group)
 *           per block: integer accumulators I[g][t] (L lanes = L rows)
 *             start at c (the block's correction, broadcast),
 *             8 steps (q4_0: 4 loads, low then high nibbles) of 4 k each:
 *               I += dot4(w bytes of L rows, x bytes k..k+3 broadcast)
 *           then F[g][t] = fma(float(I), f32(d_w) * d_x, F[g][t])
 *         epilogue on L rows at once: bias, GELU, residuals, (masked) store
 *
 * dot4 of an i32 lane is 4 products of an unsigned weight byte and a signed
 * activation byte:
 *   VNNI     vpdpbusd (native on a CPU with avx512vnni)
 *   MADDUBS  vpmaddwd(vpmaddubsw(w, x), 1) (x86-64-v3 with 256-bit, -v4 with
 *            512-bit vectors); q8_0 there uses |q| and x * sign(q), since
 *            u8 x s8 pairs of q + 128 would saturate 16 bits, and starts I
 *            at 0 instead of c
 *   GENERIC  the same products in plain LLVM vector ops (x86-64, -v2)
 * The weight bytes are q + OFF (OFF = 128 for q8_0, 8 for q4_0 nibbles), so
 * c = -OFF * sum(x_q) makes I exactly sum(q * x_q) on every path.  Each
 * output is then, exactly and on every target:
 *   acc = 0; for b in blocks: acc = fma((float)I_b, f16_to_f32(d_w,b) * d_x,b, acc)
 *   y = acc + bias, then GELU, then + residual0, + residual1
 * (tests/test_quant.c checks it bit for bit against that scalar code). */
#include <string.h>

#include "cg.h"


enum { MAX_RT = 8, MAX_G = 2, XBUF_BYTES = 1024 * 1024 };

typedef enum { DOT_VNNI, DOT_MADDUBS, DOT_GENERIC } DotKind;

typedef struct {
  const Op *op;
  DType dt;
  int64_t K, N, nb; /* nb: blocks of 32 along K */
  int L, bq, G;     /* rows per group (i32 lanes); quant bytes per row and block; groups per tile */
  int off;          /* weight byte bias: 128 (q8_0) or 8 (q4_0) */
  DotKind dot;
  int64_t xs, gb;   /* bytes per token in the buffer (K quants, nb f32 d_x, nb i32 c); per group of W */
  LLVMValueRef x, w, t0, xbuf, tb;
  CgEpilogue ep; /* y, bias, residuals (lower_matmul.c) */
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

/* ------------------------------------------------------------- activations */

/* base + i * scale + add bytes (i a run-time i64) */
static LLVMValueRef at(Cg *c, LLVMValueRef base, LLVMValueRef i, int64_t scale, int64_t add) {
  LLVMValueRef o = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, i, cg_i64(c, scale), ""), cg_i64(c, add), "");
  return cg_gep(c, c->i8, base, o);
}

/* Quantizes block kb of the x row at src into the buffer row at dst: quants
 * at kb*32, d_x at K + 4*kb, c at K + 4*nb + 4*kb. */
static void quantize_block(Cg *c, const Qm *m, LLVMValueRef src, LLVMValueRef dst, LLVMValueRef kb) {
  LLVMValueRef v = load(c, vt(c->f32, 32), at(c, src, kb, 128, 0), 4);
  LLVMValueRef ab = cg_call_intrinsic(c, "llvm.fabs", vt(c->f32, 32), &v, 1);
  LLVMValueRef amax = cg_lane_max(c, ab, 32);
  LLVMValueRef d = LLVMBuildFDiv(c->b, amax, cg_f32(c, 127.0), "dx");
  LLVMValueRef nz = LLVMBuildFCmp(c->b, LLVMRealONE, d, cg_f32(c, 0), "");
  LLVMValueRef id = LLVMBuildSelect(c->b, nz, LLVMBuildFDiv(c->b, cg_f32(c, 1.0), d, ""), cg_f32(c, 0), "id");
  LLVMValueRef sc = LLVMBuildFMul(c->b, v, cg_splat(c, id, 32), "");
  sc = cg_call_intrinsic(c, "llvm.roundeven", vt(c->f32, 32), &sc, 1);
  LLVMValueRef qi = LLVMBuildFPToSI(c->b, sc, vt(c->i32, 32), "");
  LLVMValueRef sum = cg_call_intrinsic(c, "llvm.vector.reduce.add", vt(c->i32, 32), &qi, 1);
  LLVMValueRef corr = LLVMBuildMul(c->b, sum, LLVMConstInt(c->i32, (unsigned long long)(long long)-m->off, 1), "");
  LLVMBuildStore(c->b, d, at(c, dst, kb, 4, m->K));
  LLVMBuildStore(c->b, corr, at(c, dst, kb, 4, m->K + 4 * m->nb));
  LLVMValueRef st = LLVMBuildStore(c->b, LLVMBuildTrunc(c->b, qi, vt(c->i8, 32), ""), at(c, dst, kb, 32, 0));
  LLVMSetAlignment(st, 32);
}

static void quantize_row(Cg *c, const Qm *m, LLVMValueRef t, LLVMValueRef row) {
  LLVMValueRef src = cg_gep(c, c->f32, m->x, LLVMBuildMul(c->b, t, cg_i64(c, m->K), ""));
  LLVMValueRef dst = cg_gep(c, c->i8, m->xbuf, LLVMBuildMul(c->b, row, cg_i64(c, m->xs), ""));
  Loop k = cg_loop(c, cg_i64(c, 0), cg_i64(c, m->nb), 1, "qx");
  quantize_block(c, m, src, dst, k.i);
  cg_loop_end(c, &k);
}

/* ------------------------------------------------------------------ kernel */

/* acc (L x i32) += dot4 of the L rows' 4 weight bytes w (4L x i8) with the 4
 * activation bytes xb (broadcast, as L x i32). */
static LLVMValueRef dot4(Cg *c, const Qm *m, LLVMValueRef acc, LLVMValueRef w, LLVMValueRef wabs,
                         LLVMValueRef xb) {
  const int L = m->L, n = 4 * L;
  LLVMValueRef x8 = LLVMBuildBitCast(c->b, xb, vt(c->i8, n), "");
  if (m->dot == DOT_VNNI) {
    LLVMValueRef a[3] = {acc, w, x8};
    return LLVMBuildBitCast(c->b, call_x86(c, L == 16 ? "llvm.x86.avx512.vpdpbusd.512" : "llvm.x86.avx512.vpdpbusd.256", a, 3),
                            vt(c->i32, L), "");
  }
  if (m->dot == DOT_MADDUBS) {
    LLVMValueRef u = w, s = x8;
    if (wabs) { /* q8_0: |q| and x * sign(q); w holds q (signed) here */
      LLVMValueRef neg = LLVMBuildICmp(c->b, LLVMIntSLT, w, LLVMConstNull(vt(c->i8, n)), "");
      s = LLVMBuildSelect(c->b, neg, LLVMBuildSub(c->b, LLVMConstNull(vt(c->i8, n)), x8, ""), x8, "");
      u = wabs;
    }
    LLVMValueRef a[2] = {u, s};
    LLVMValueRef p16 = call_x86(c, L == 16 ? "llvm.x86.avx512.pmaddubs.w.512" : "llvm.x86.avx2.pmadd.ub.sw", a, 2);
    LLVMValueRef b[2] = {p16, splat_i(c, c->i16, 2 * L, 1)};
    LLVMValueRef p32 = call_x86(c, L == 16 ? "llvm.x86.avx512.pmaddw.d.512" : "llvm.x86.avx2.pmadd.wd", b, 2);
    return LLVMBuildAdd(c->b, acc, LLVMBuildBitCast(c->b, p32, vt(c->i32, L), ""), "");
  }
  LLVMValueRef p = LLVMBuildMul(c->b, LLVMBuildZExt(c->b, w, vt(c->i32, n), ""),
                                LLVMBuildSExt(c->b, x8, vt(c->i32, n), ""), "");
  for (int r = 0; r < 4; r++) {
    int mask[64];
    for (int l = 0; l < L; l++) mask[l] = 4 * l + r;
    acc = LLVMBuildAdd(c->b, acc, shuffle(c, p, NULL, mask, L), "");
  }
  return acc;
}

typedef struct {
  int g, rt;
  LLVMValueRef grp[MAX_G];   /* group base pointers (scales first) */
  LLVMValueRef xrow[MAX_RT]; /* buffer rows of the rt tokens */
} Tile;

/* One block b of the tile: F[g][j] += (float)I * d_w * d_x. */
static void block_step(Cg *c, const Qm *m, const Tile *tl, LLVMValueRef b, LLVMValueRef F[MAX_G][MAX_RT]) {
  const int L = m->L, G = tl->g, rt = tl->rt;
  const int signed_q8 = m->dot == DOT_MADDUBS && m->dt == DT_Q8_0;
  LLVMValueRef I[MAX_G][MAX_RT];
  for (int j = 0; j < rt; j++) {
    LLVMValueRef cj = signed_q8 ? NULL : load(c, c->i32, at(c, tl->xrow[j], b, 4, m->K + 4 * m->nb), 4);
    for (int g = 0; g < G; g++) I[g][j] = cj ? cg_splat(c, cj, (unsigned)L) : LLVMConstNull(vt(c->i32, L));
  }
  const int64_t scale_bytes = ((int64_t)L * m->nb * 2 + 63) / 64 * 64;
  const int loads = m->dt == DT_Q8_0 ? 8 : 4;
  for (int s = 0; s < loads; s++) {
    LLVMValueRef w[MAX_G][2], wabs[MAX_G] = {NULL, NULL};
    for (int g = 0; g < G; g++) {
      LLVMValueRef raw = load(c, vt(c->i8, 4 * L), at(c, tl->grp[g], b, (int64_t)L * m->bq, scale_bytes + (int64_t)s * 4 * L),
                              (unsigned)(4 * L));
      if (m->dt == DT_Q8_0) {
        w[g][0] = raw;
        if (signed_q8) {
          w[g][0] = LLVMBuildXor(c->b, raw, splat_i(c, c->i8, 4 * L, 0x80), "");
          LLVMValueRef args[2] = {w[g][0], LLVMConstInt(LLVMInt1TypeInContext(c->ctx), 0, 0)};
          wabs[g] = cg_call_intrinsic(c, "llvm.abs", vt(c->i8, 4 * L), args, 2);
        }
      } else {
        w[g][0] = LLVMBuildAnd(c->b, raw, splat_i(c, c->i8, 4 * L, 15), "");
        w[g][1] = LLVMBuildLShr(c->b, raw, splat_i(c, c->i8, 4 * L, 4), "");
      }
    }
    for (int h = 0; h < (m->dt == DT_Q8_0 ? 1 : 2); h++) { /* q4_0: elements 4s.. then 16 + 4s.. */
      int64_t k0 = 4 * s + 16 * h;
      for (int j = 0; j < rt; j++) {
        LLVMValueRef xb = cg_splat(c, load(c, c->i32, at(c, tl->xrow[j], b, 32, k0), 4), (unsigned)L);
        for (int g = 0; g < G; g++) I[g][j] = dot4(c, m, I[g][j], w[g][h], signed_q8 ? wabs[g] : NULL, xb);
      }
    }
  }
  LLVMValueRef dw[MAX_G];
  for (int g = 0; g < G; g++) {
    LLVMValueRef h = load(c, vt(c->f16, L), at(c, tl->grp[g], b, 2 * L, 0), (unsigned)(2 * L));
    dw[g] = LLVMBuildFPExt(c->b, h, vt(c->f32, L), "");
  }
  for (int j = 0; j < rt; j++) {
    LLVMValueRef dx = cg_splat(c, load(c, c->f32, at(c, tl->xrow[j], b, 4, m->K), 4), (unsigned)L);
    for (int g = 0; g < G; g++) {
      F[g][j] = cg_fma(c, LLVMBuildSIToFP(c->b, I[g][j], vt(c->f32, L), ""), LLVMBuildFMul(c->b, dw[g], dx, ""), F[g][j]);
    }
  }
}

/* G groups of L rows from row n, rt tokens from t. */
static void micro_kernel(Cg *c, const Qm *m, int G, int rt, LLVMValueRef t, LLVMValueRef n) {
  const int L = m->L;
  Tile tl = {.g = G, .rt = rt};
  LLVMValueRef g0 = LLVMBuildSDiv(c->b, n, cg_i64(c, L), "");
  for (int g = 0; g < G; g++) tl.grp[g] = at(c, m->w, g0, m->gb, g * m->gb);
  for (int j = 0; j < rt; j++) {
    LLVMValueRef row = LLVMBuildSub(c->b, LLVMBuildAdd(c->b, t, cg_i64(c, j), ""), m->tb, "");
    tl.xrow[j] = cg_gep(c, c->i8, m->xbuf, LLVMBuildMul(c->b, row, cg_i64(c, m->xs), ""));
  }
  /* the block loop carries G*rt vector accumulators */
  LLVMValueRef F[MAX_G][MAX_RT], flat[MAX_G * MAX_RT];
  for (int k = 0; k < G * rt; k++) flat[k] = LLVMConstNull(vt(c->f32, L));
  CarryLoop l = cg_carry_loop(c, cg_i64(c, 0), flat, G * rt, "qb");
  for (int g = 0; g < G; g++)
    for (int j = 0; j < rt; j++) F[g][j] = l.phi[g * rt + j];
  block_step(c, m, &tl, l.i, F);
  for (int g = 0; g < G; g++)
    for (int j = 0; j < rt; j++) flat[g * rt + j] = F[g][j];
  cg_carry_loop_end(c, &l, 1, cg_i64(c, m->nb), flat);
  for (int g = 0; g < G; g++)
    for (int j = 0; j < rt; j++)
      cg_matmul_epilogue(c, &m->ep, LLVMBuildAdd(c->b, t, cg_i64(c, j), ""), LLVMBuildAdd(c->b, n, cg_i64(c, g * L), ""), F[g][j]);
}

/* for n in [nb, ne): tiles of G groups, then single groups */
static void rows(Cg *c, const Qm *m, int rt, LLVMValueRef t, LLVMValueRef nb, LLVMValueRef ne) {
  const int span = m->G * m->L;
  Loop n = cg_loop(c, nb, LLVMBuildSub(c->b, ne, cg_i64(c, span - 1), ""), span, "n");
  micro_kernel(c, m, m->G, rt, t, n.i);
  cg_loop_end(c, &n);
  if (m->G > 1) {
    Loop n1 = cg_loop(c, n.i, ne, m->L, "n1");
    micro_kernel(c, m, 1, rt, t, n1.i);
    cg_loop_end(c, &n1);
  }
}

void cg_lower_qmatmul(Cg *c, const Op *op) {
  const Value *W = op->in[1];
  Qm mm = {.op = op, .dt = W->dtype, .K = W->dims[1], .N = W->dims[0]}, *m = &mm;
  const CgTarget *tg = c->target;
  m->L = tg->vector_width >= 16 ? 16 : 8;
  PY_ASSERT(dtype_is_quant(m->dt) && m->K % 32 == 0 && W->pack_rn == m->L && op->a.tile_rn == m->L);
  m->nb = m->K / 32;
  m->bq = m->dt == DT_Q8_0 ? 32 : 16;
  m->off = m->dt == DT_Q8_0 ? 128 : 8;
  m->gb = ir_qgroup_bytes(m->dt, m->L, m->K);
  m->dot = tg->has_vnni ? DOT_VNNI : tg->vector_width >= 8 ? DOT_MADDUBS : DOT_GENERIC;
  m->G = tg->vector_width >= 16 ? MAX_G : 1;
  const int RT = op->a.tile_rt > 0 ? op->a.tile_rt : 4; /* tile_matmul: 8 with 512-bit vectors */
  const int64_t TN = op->a.tile_n > 0 ? op->a.tile_n : 16 * m->L;
  PY_ASSERT(RT <= MAX_RT && TN % m->L == 0);
  m->xs = (m->K + 8 * m->nb + 63) / 64 * 64;
  int64_t TB = XBUF_BYTES / m->xs;
  if (TB > c->g->dims.max_block) TB = c->g->dims.max_block;
  if (TB >= RT) TB -= TB % RT;
  if (TB < 1) TB = 1;
  m->x = cg_value_ptr(c, op->in[0]);
  m->w = cg_value_ptr(c, W);
  m->xbuf = cg_alloca_array(c, c->i8, TB * m->xs, "xq");
  LLVMValueRef T = cg_run_field(c, RUN_NTOK);
  m->t0 = op->a.last_rows ? cg_run_field(c, RUN_LOGITS_FROM) : cg_i64(c, 0);
  m->ep = (CgEpilogue){.op = op, .y = cg_value_ptr(c, op->out), .t0 = m->t0, .N = m->N, .granule = m->L};
  m->ep.bias = op->n_in > 2 ? cg_value_ptr(c, op->in[2]) : NULL;
  for (int i = 0; i < 2; i++)
    if (op->a.residual[i]) m->ep.res[i] = cg_value_ptr(c, op->a.residual[i]);
  LLVMValueRef n_lo = LLVMBuildMul(c->b, c->lo, cg_i64(c, m->L), "");
  LLVMValueRef n_hi = cg_min_i64(c, LLVMBuildMul(c->b, c->hi, cg_i64(c, m->L), ""),
                                 cg_i64(c, (m->N + m->L - 1) / m->L * m->L));

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
