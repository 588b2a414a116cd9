/* lower_attention.c — causal attention of the rows [pos, pos + T) over the
 * K/V cache of one layer, with an online softmax over blocks of BJ keys: no
 * score matrix is stored.
 *
 *   s_j = (q . k_j) / sqrt(head_dim)  for j <= pos + t
 *   out = sum_j softmax(s)_j v_j
 *
 * One item is one head and a group of up to ATTN_ROWS consecutive rows
 * (cg.h).  Key blocks run outermost and the group's rows inside, so a block
 * of K and V (8 KiB at head_dim 64) comes from L2 once and serves every row
 * of the group from L1; each row's running state (accumulators, max,
 * denominator) waits in a stack array between blocks.
 *
 * One row's step over a block [jb, jb + BJ): scores as one BJ-lane vector (a
 * full block: BJ vector products summed across lanes together,
 * block_scores; the last, partial block: one dot product per key through a
 * scratch, -inf past the last key), m' = max(m, max s), c = e^(m - m'),
 * p = e^(s - m') as one vector (cg_exp), den = den c + sum p,
 * acc = acc c + sum_j p_j v_j.  Every row runs the same blocks from key 0
 * in the same order whatever its group, so a row's result does not depend
 * on T, on the block the row came in, or on the thread: decode gives the
 * bits prefill gives.
 *
 * Decode (T <= ATTN_ROWS: one item per head) prefetches its keys and values
 * with prefetcht0 a chunk of about KV_CHUNK_BYTES ahead, the first chunk
 * before the first block.  The hardware prefetchers start over at every 4 KiB
 * page, which at head_dim 64 and f32 is every 16 keys, so without this a head
 * read its K and V at about half the rate the weight streams get
 * (docs/benchmarks.md: 160m decode attention -20 to -25 %).  Prefill items
 * read a head's rows again and again from L2 and are not prefetched.
 *
 * The caches hold f32 or f16 (pythiac --kv-cache=f16); f16 rows are
 * widened to f32 as they are loaded, and all arithmetic is f32.
 * The caches are stored head-major (ir.h: element (p, h Dh + d) of a
 * [C, D] cache at (h C + p) Dh + d), so one head's keys are one contiguous
 * run of rows.  Items are head-major, and within a head zig-zag over row
 * groups (g = 0, G-1, 1, G-2, ...): consecutive items read the same head's
 * keys and values (pos + T contiguous rows of head_dim floats, 512 KiB for
 * 1024 positions of a 64-wide head), which stay in L2 from one item to the
 * next, and a contiguous chunk of items carries equal causal work. */
#include <math.h>

#include "cg.h"

enum { BJ = 16, MAX_CHUNKS = 64, RG = ATTN_ROWS, KV_CHUNK_BYTES = 64 << 10 };

typedef struct {
  int64_t Dh, nv, vw; /* head_dim = nv * vw + scalar tail */
  LLVMTypeRef vf;     /* <vw x float> */
  DType kdt, vdt;     /* the caches' element types: f32 or f16 */
} Head;

/* vw elements of dtype dt (f32 or f16) at p[idx], as <vw x float>. */
static LLVMValueRef vload(Cg *c, const Head *h, DType dt, LLVMValueRef p, LLVMValueRef idx) {
  LLVMTypeRef et = dt == DT_F16 ? c->f16 : c->f32;
  LLVMValueRef ld = LLVMBuildLoad2(c->b, LLVMVectorType(et, (unsigned)h->vw), cg_gep(c, et, p, idx), "");
  LLVMSetAlignment(ld, (unsigned)dtype_size(dt));
  return dt == DT_F16 ? LLVMBuildFPExt(c->b, ld, h->vf, "") : ld;
}

/* The vector chunks of q times those of the key row at koff, summed
 * chunk by chunk into one vector (h->nv > 0): q . k before its sum across
 * lanes. */
static LLVMValueRef qk_lanes(Cg *c, const Head *h, LLVMValueRef *qv, LLVMValueRef kc, LLVMValueRef koff) {
  LLVMValueRef acc = NULL;
  for (int64_t i = 0; i < h->nv; i++) {
    LLVMValueRef kv = vload(c, h, h->kdt, kc, LLVMBuildAdd(c->b, koff, cg_i64(c, i * h->vw), ""));
    acc = acc ? cg_fma(c, qv[i], kv, acc) : LLVMBuildFMul(c->b, qv[i], kv, "");
  }
  return acc;
}

/* q . k for the key row at koff: vector chunks, horizontal sum, scalar tail. */
static LLVMValueRef dot_key(Cg *c, const Head *h, LLVMValueRef *qv, LLVMValueRef *qs, LLVMValueRef kc,
                            LLVMValueRef koff) {
  LLVMValueRef s = cg_f32(c, 0);
  if (h->nv) {
    LLVMValueRef args[2] = {cg_f32(c, 0), qk_lanes(c, h, qv, kc, koff)};
    s = cg_fast(cg_call_intrinsic(c, "llvm.vector.reduce.fadd", h->vf, args, 2));
  }
  for (int64_t d = h->nv * h->vw; d < h->Dh; d++)
    s = cg_fma(c, qs[d - h->nv * h->vw], cg_load_f32(c, h->kdt, kc, LLVMBuildAdd(c->b, koff, cg_i64(c, d), "")), s);
  return s;
}

/* Scores of keys [jb, jend) into a BJ-lane vector, -inf past jend: one dot
 * product (with its horizontal sum) per key, through the scratch sbuf. */
static LLVMValueRef tail_scores(Cg *c, const Head *h, LLVMValueRef *qv, LLVMValueRef *qs, LLVMValueRef kc,
                                LLVMValueRef sbuf, LLVMValueRef jb, LLVMValueRef jend, LLVMValueRef cbase) {
  LLVMTypeRef vbj = LLVMVectorType(c->f32, BJ);
  LLVMValueRef ninf[BJ];
  for (int i = 0; i < BJ; i++) ninf[i] = LLVMConstReal(c->f32, -INFINITY);
  LLVMBuildStore(c->b, LLVMConstVector(ninf, BJ), sbuf);
  Loop j = cg_loop(c, jb, jend, 1, "j");
  LLVMValueRef koff = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, j.i, cg_i64(c, h->Dh), ""), cbase, "");
  cg_store_f32(c, sbuf, LLVMBuildSub(c->b, j.i, jb, ""), dot_key(c, h, qv, qs, kc, koff));
  cg_loop_end(c, &j);
  return LLVMBuildLoad2(c->b, vbj, sbuf, "s");
}

/* Lanes 2i + odd of the 2n lanes of a:b (the even or the odd lanes). */
static LLVMValueRef pick_lanes(Cg *c, LLVMValueRef a, LLVMValueRef b, unsigned n, unsigned odd) {
  LLVMValueRef idx[64];
  for (unsigned i = 0; i < n; i++) idx[i] = LLVMConstInt(c->i32, 2 * i + odd, 0);
  return LLVMBuildShuffleVector(c->b, a, b, LLVMConstVector(idx, n), "");
}

/* Scores of the BJ keys from key row koff on (a full block): the BJ
 * partial products q * K[j] as vectors, then summed across lanes all at
 * once by log2(vw) rounds of pairwise adds of even and odd lanes (each
 * round halves the vectors and leaves lane l of vector m the partial sum
 * of key m * vw + l's part), instead of BJ horizontal sums. */
static LLVMValueRef block_scores(Cg *c, const Head *h, LLVMValueRef *qv, LLVMValueRef kc, LLVMValueRef koff) {
  /* the block's first key as a pointer, the keys at constant offsets from
   * it: one register for the block, not one hoisted offset per key */
  LLVMValueRef kb = cg_gep(c, h->kdt == DT_F16 ? c->f16 : c->f32, kc, koff);
  LLVMValueRef a[BJ];
  for (int j = 0; j < BJ; j++) a[j] = qk_lanes(c, h, qv, kb, cg_i64(c, j * h->Dh));
  int n = BJ;
  for (int64_t w = h->vw; w > 1; w /= 2, n /= 2)
    for (int m = 0; m < n / 2; m++)
      a[m] = LLVMBuildFAdd(c->b, pick_lanes(c, a[2 * m], a[2 * m + 1], (unsigned)h->vw, 0),
                           pick_lanes(c, a[2 * m], a[2 * m + 1], (unsigned)h->vw, 1), "");
  /* n vectors of vw lanes: keys in order; join them into BJ lanes */
  for (int width = (int)h->vw; n > 1; width *= 2, n /= 2)
    for (int m = 0; m < n / 2; m++) {
      LLVMValueRef idx[64];
      for (int i = 0; i < 2 * width; i++) idx[i] = LLVMConstInt(c->i32, (unsigned)i, 0);
      a[m] = LLVMBuildShuffleVector(c->b, a[2 * m], a[2 * m + 1], LLVMConstVector(idx, (unsigned)(2 * width)), "");
    }
  return a[0];
}

/* One item's running softmax state, per row r of its group, in stack
 * arrays indexed by r (the rows' loop is a runtime loop): the output
 * accumulators (nv vectors and a scalar tail per row), the running max and
 * the denominator. */
typedef struct {
  LLVMValueRef accv, accs, mx, den, sbuf;
} State;

static LLVMValueRef state_vec(Cg *c, const Head *h, const State *st, LLVMValueRef r, int64_t i) {
  return cg_gep(c, h->vf, st->accv, LLVMBuildAdd(c->b, LLVMBuildMul(c->b, r, cg_i64(c, h->nv), ""), cg_i64(c, i), ""));
}

static LLVMValueRef state_tail(Cg *c, const Head *h, const State *st, LLVMValueRef r, int64_t i) {
  int64_t ntail = h->Dh - h->nv * h->vw;
  return cg_gep(c, c->f32, st->accs, LLVMBuildAdd(c->b, LLVMBuildMul(c->b, r, cg_i64(c, ntail), ""), cg_i64(c, i), ""));
}

/* Scores of the keys [jb, jend) of one row (q pre-scaled in qv/qs), -inf
 * past jend: the transposing sum for a full block, key by key otherwise. */
static LLVMValueRef row_scores(Cg *c, const Head *h, LLVMValueRef *qv, LLVMValueRef *qs, LLVMValueRef kc,
                               LLVMValueRef sbuf, LLVMValueRef jb, LLVMValueRef jend, LLVMValueRef cbase) {
  const int64_t ntail = h->Dh - h->nv * h->vw;
  if (!(h->nv > 0 && ntail == 0 && BJ % h->vw == 0)) return tail_scores(c, h, qv, qs, kc, sbuf, jb, jend, cbase);
  LLVMValueRef full = LLVMBuildICmp(c->b, LLVMIntEQ, LLVMBuildSub(c->b, jend, jb, ""), cg_i64(c, BJ), "");
  LLVMBasicBlockRef fast = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "scores_full");
  LLVMBasicBlockRef slow = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "scores_tail");
  LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "scores");
  LLVMBuildCondBr(c->b, full, fast, slow);
  LLVMPositionBuilderAtEnd(c->b, fast);
  LLVMValueRef sv_full = block_scores(c, h, qv, kc, LLVMBuildAdd(c->b, LLVMBuildMul(c->b, jb, cg_i64(c, h->Dh), ""), cbase, ""));
  LLVMBasicBlockRef fast_end = LLVMGetInsertBlock(c->b);
  LLVMBuildBr(c->b, join);
  LLVMPositionBuilderAtEnd(c->b, slow);
  LLVMValueRef sv_tail = tail_scores(c, h, qv, qs, kc, sbuf, jb, jend, cbase);
  LLVMBasicBlockRef slow_end = LLVMGetInsertBlock(c->b);
  LLVMBuildBr(c->b, join);
  LLVMPositionBuilderAtEnd(c->b, join);
  LLVMValueRef sv = LLVMBuildPhi(c->b, LLVMVectorType(c->f32, BJ), "s");
  LLVMValueRef vals[2] = {sv_full, sv_tail};
  LLVMBasicBlockRef bbs[2] = {fast_end, slow_end};
  LLVMAddIncoming(sv, vals, bbs, 2);
  return sv;
}

/* The query row at q + qoff, pre-scaled by 1/sqrt(head_dim): nv vectors
 * in qv, the scalar tail in qs. */
static void load_q_scaled(Cg *c, const Head *h, LLVMValueRef q, LLVMValueRef qoff, LLVMValueRef *qv, LLVMValueRef *qs) {
  const double scale = 1.0 / sqrt((double)h->Dh);
  LLVMValueRef scale_v = cg_splat(c, cg_f32(c, scale), (unsigned)h->vw);
  for (int64_t i = 0; i < h->nv; i++)
    qv[i] = LLVMBuildFMul(c->b, vload(c, h, DT_F32, q, LLVMBuildAdd(c->b, qoff, cg_i64(c, i * h->vw), "")), scale_v, "");
  for (int64_t i = 0; i < h->Dh - h->nv * h->vw; i++) {
    LLVMValueRef qi = cg_load_f32(c, DT_F32, q, LLVMBuildAdd(c->b, qoff, cg_i64(c, h->nv * h->vw + i), ""));
    qs[i] = LLVMBuildFMul(c->b, qi, cg_f32(c, scale), "");
  }
}

/* One row's step over the key block [jb, jend): scores, the online
 * softmax update of max and denominator, acc = acc c + sum_j p_j v_j. */
static void row_block(Cg *c, const Head *h, const State *st, LLVMValueRef r, LLVMValueRef q, LLVMValueRef qoff,
                      LLVMValueRef kc, LLVMValueRef vc, LLVMValueRef jb, LLVMValueRef jend, LLVMValueRef cbase) {
  const int64_t ntail = h->Dh - h->nv * h->vw;
  LLVMTypeRef vbj = LLVMVectorType(c->f32, BJ);
  LLVMValueRef qv[MAX_CHUNKS], qs[MAX_CHUNKS];
  load_q_scaled(c, h, q, qoff, qv, qs);
  LLVMValueRef sv = row_scores(c, h, qv, qs, kc, st->sbuf, jb, jend, cbase);

  LLVMValueRef mxp = cg_gep(c, c->f32, st->mx, r), denp = cg_gep(c, c->f32, st->den, r);
  LLVMValueRef bmax = cg_lane_max(c, sv, BJ);
  LLVMValueRef m_old = LLVMBuildLoad2(c->b, c->f32, mxp, "");
  LLVMValueRef mm[2] = {m_old, bmax};
  LLVMValueRef m_new = cg_call_intrinsic(c, "llvm.maxnum", c->f32, mm, 2);
  LLVMValueRef corr = cg_exp(c, LLVMBuildFSub(c->b, m_old, m_new, "")); /* e^-inf = 0 on the first block */
  LLVMValueRef pv = cg_exp(c, LLVMBuildFSub(c->b, sv, cg_splat(c, m_new, BJ), "")); /* 0 past the last key */
  LLVMBuildStore(c->b, pv, st->sbuf);
  LLVMValueRef sum_args[2] = {cg_f32(c, 0), pv};
  LLVMValueRef psum = cg_fast(cg_call_intrinsic(c, "llvm.vector.reduce.fadd", vbj, sum_args, 2));
  LLVMBuildStore(c->b, cg_fma(c, LLVMBuildLoad2(c->b, c->f32, denp, ""), corr, psum), denp);
  LLVMBuildStore(c->b, m_new, mxp);

  /* the accumulators, scaled by c, then p V key by key */
  LLVMValueRef av[MAX_CHUNKS], as[MAX_CHUNKS];
  LLVMValueRef corr_v = cg_splat(c, corr, (unsigned)h->vw);
  for (int64_t i = 0; i < h->nv; i++) {
    av[i] = state_vec(c, h, st, r, i);
    LLVMBuildStore(c->b, LLVMBuildFMul(c->b, LLVMBuildLoad2(c->b, h->vf, av[i], ""), corr_v, ""), av[i]);
  }
  for (int64_t i = 0; i < ntail; i++) {
    as[i] = state_tail(c, h, st, r, i);
    LLVMBuildStore(c->b, LLVMBuildFMul(c->b, LLVMBuildLoad2(c->b, c->f32, as[i], ""), corr, ""), as[i]);
  }
  Loop jv = cg_loop(c, jb, jend, 1, "jv");
  LLVMValueRef voff = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, jv.i, cg_i64(c, h->Dh), ""), cbase, "");
  LLVMValueRef pj = cg_load_f32(c, DT_F32, st->sbuf, LLVMBuildSub(c->b, jv.i, jb, ""));
  LLVMValueRef pj_v = cg_splat(c, pj, (unsigned)h->vw);
  for (int64_t i = 0; i < h->nv; i++) {
    LLVMValueRef vv = vload(c, h, h->vdt, vc, LLVMBuildAdd(c->b, voff, cg_i64(c, i * h->vw), ""));
    LLVMBuildStore(c->b, cg_fma(c, pj_v, vv, LLVMBuildLoad2(c->b, h->vf, av[i], "")), av[i]);
  }
  for (int64_t i = 0; i < ntail; i++) {
    LLVMValueRef vs = cg_load_f32(c, h->vdt, vc, LLVMBuildAdd(c->b, voff, cg_i64(c, h->nv * h->vw + i), ""));
    LLVMBuildStore(c->b, cg_fma(c, pj, vs, LLVMBuildLoad2(c->b, c->f32, as[i], "")), as[i]);
  }
  cg_loop_end(c, &jv);
}

/* Rows per prefetch chunk: about KV_CHUNK_BYTES of K and V together, a
 * whole number of key blocks (128 rows at head_dim 64 and f32). */
static int64_t kv_chunk_rows(const Head *h) {
  int64_t row_bytes = h->Dh * (dtype_size(h->kdt) + dtype_size(h->vdt));
  int64_t rows = KV_CHUNK_BYTES / row_bytes / BJ * BJ;
  return rows > BJ ? rows : BJ;
}

/* prefetcht0 of the K and V cache rows [lo, hi) of the head at cbase. */
static void prefetch_kv_rows(Cg *c, const Head *h, LLVMValueRef kc, LLVMValueRef vc, LLVMValueRef cbase,
                             LLVMValueRef lo, LLVMValueRef hi) {
  LLVMValueRef first = LLVMBuildAdd(c->b, cbase, LLVMBuildMul(c->b, lo, cg_i64(c, h->Dh), ""), "");
  LLVMValueRef n = LLVMBuildMul(c->b, LLVMBuildSub(c->b, hi, lo, ""), cg_i64(c, h->Dh), "");
  const DType dts[2] = {h->kdt, h->vdt};
  LLVMValueRef caches[2] = {kc, vc};
  for (int i = 0; i < 2; i++) {
    LLVMTypeRef et = dts[i] == DT_F16 ? c->f16 : c->f32;
    Loop l = cg_loop(c, cg_i64(c, 0), n, 64 / dtype_size(dts[i]), "kv_pf");
    cg_prefetch_t0(c, cg_gep(c, et, caches[i], LLVMBuildAdd(c->b, first, l.i, "")));
    cg_loop_end(c, &l);
  }
}

/* In decode, at key block jb: when jb starts a chunk, prefetch the next
 * chunk's rows (up to keys); before the first block, the first chunk too. */
static void prefetch_kv_ahead(Cg *c, const Head *h, LLVMValueRef kc, LLVMValueRef vc, LLVMValueRef cbase,
                              LLVMValueRef T, LLVMValueRef jb, LLVMValueRef keys, int64_t chunk) {
  LLVMBasicBlockRef run = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "kv_pf");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "kv_pf_done");
  LLVMValueRef decode = LLVMBuildICmp(c->b, LLVMIntSLE, T, cg_i64(c, RG), "");
  LLVMValueRef at_chunk = LLVMBuildICmp(c->b, LLVMIntEQ, LLVMBuildSRem(c->b, jb, cg_i64(c, chunk), ""), cg_i64(c, 0), "");
  LLVMBuildCondBr(c->b, LLVMBuildAnd(c->b, decode, at_chunk, ""), run, done);
  LLVMPositionBuilderAtEnd(c->b, run);
  LLVMValueRef first = LLVMBuildICmp(c->b, LLVMIntEQ, jb, cg_i64(c, 0), "");
  LLVMValueRef lo = LLVMBuildSelect(c->b, first, jb, cg_min_i64(c, LLVMBuildAdd(c->b, jb, cg_i64(c, chunk), ""), keys), "");
  LLVMValueRef hi = cg_min_i64(c, LLVMBuildAdd(c->b, jb, cg_i64(c, 2 * chunk), ""), keys);
  prefetch_kv_rows(c, h, kc, vc, cbase, lo, hi);
  LLVMBuildBr(c->b, done);
  LLVMPositionBuilderAtEnd(c->b, done);
}

void cg_lower_attention(Cg *c, const Op *op) {
  const int64_t H = op->a.n_head, Dh = op->a.head_dim, D = H * Dh;
  Head hd = {.Dh = Dh, .vw = c->target->vector_width, .kdt = op->in[1]->dtype, .vdt = op->in[2]->dtype};
  hd.nv = Dh / hd.vw;
  hd.vf = LLVMVectorType(c->f32, (unsigned)hd.vw);
  const int64_t ntail = Dh - hd.nv * hd.vw;
  PY_ASSERT(hd.nv <= MAX_CHUNKS && ntail < MAX_CHUNKS);
  LLVMValueRef q = cg_value_ptr(c, op->in[0]), kc = cg_value_ptr(c, op->in[1]);
  LLVMValueRef vc = cg_value_ptr(c, op->in[2]), y = cg_value_ptr(c, op->out);
  LLVMValueRef T = cg_run_field(c, RUN_NTOK), pos = cg_run_field(c, RUN_POS);
  State st = {
      .accv = cg_alloca_array(c, hd.vf, RG * (hd.nv ? hd.nv : 1), "accv"),
      .accs = cg_alloca_array(c, c->f32, RG * (ntail ? ntail : 1), "accs"),
      .mx = cg_alloca_array(c, c->f32, RG, "max"),
      .den = cg_alloca_array(c, c->f32, RG, "den"),
      .sbuf = cg_alloca_array(c, c->f32, BJ, "scores"),
  };

  /* item = (head, group of RG rows), head-major, groups zig-zag */
  LLVMValueRef G = LLVMBuildSDiv(c->b, LLVMBuildAdd(c->b, T, cg_i64(c, RG - 1), ""), cg_i64(c, RG), "groups");
  Loop it = cg_loop(c, c->lo, c->hi, 1, "item");
  LLVMValueRef h = LLVMBuildSDiv(c->b, it.i, G, "");
  LLVMValueRef g2 = LLVMBuildSRem(c->b, it.i, G, "");
  LLVMValueRef half = LLVMBuildSDiv(c->b, g2, cg_i64(c, 2), "");
  LLVMValueRef odd = LLVMBuildTrunc(c->b, LLVMBuildSRem(c->b, g2, cg_i64(c, 2), ""), LLVMInt1TypeInContext(c->ctx), "");
  LLVMValueRef g = LLVMBuildSelect(c->b, odd, LLVMBuildSub(c->b, LLVMBuildSub(c->b, G, cg_i64(c, 1), ""), half, ""),
                                   half, "g");
  LLVMValueRef t_lo = LLVMBuildMul(c->b, g, cg_i64(c, RG), "t_lo");
  LLVMValueRef t_hi = cg_min_i64(c, LLVMBuildAdd(c->b, t_lo, cg_i64(c, RG), ""), T);
  LLVMValueRef n_rows = LLVMBuildSub(c->b, t_hi, t_lo, "rows");
  LLVMValueRef hoff = LLVMBuildMul(c->b, h, cg_i64(c, Dh), "");
  LLVMValueRef cbase = cg_cache_head_base(c, h);

  Loop r0 = cg_loop(c, cg_i64(c, 0), n_rows, 1, "init");
  for (int64_t i = 0; i < hd.nv; i++) LLVMBuildStore(c->b, LLVMConstNull(hd.vf), state_vec(c, &hd, &st, r0.i, i));
  for (int64_t i = 0; i < ntail; i++) LLVMBuildStore(c->b, cg_f32(c, 0), state_tail(c, &hd, &st, r0.i, i));
  LLVMBuildStore(c->b, LLVMConstReal(c->f32, -INFINITY), cg_gep(c, c->f32, st.mx, r0.i));
  LLVMBuildStore(c->b, cg_f32(c, 0), cg_gep(c, c->f32, st.den, r0.i));
  cg_loop_end(c, &r0);

  /* key blocks outermost, the group's rows inside: a block of K and V,
   * read once from L2, serves every row of the group from L1 */
  LLVMValueRef keys_max = LLVMBuildAdd(c->b, pos, t_hi, ""); /* the last row's key count */
  Loop jb = cg_loop(c, cg_i64(c, 0), keys_max, BJ, "jb");
  prefetch_kv_ahead(c, &hd, kc, vc, cbase, T, jb.i, keys_max, kv_chunk_rows(&hd));
  Loop r = cg_loop(c, cg_i64(c, 0), n_rows, 1, "row");
  LLVMValueRef t = LLVMBuildAdd(c->b, t_lo, r.i, "t");
  LLVMValueRef n_keys = LLVMBuildAdd(c->b, LLVMBuildAdd(c->b, pos, t, ""), cg_i64(c, 1), "");
  LLVMBasicBlockRef run = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "row_block");
  LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "row_next");
  LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, jb.i, n_keys, ""), run, next);
  LLVMPositionBuilderAtEnd(c->b, run);
  LLVMValueRef qoff = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, t, cg_i64(c, D), ""), hoff, "");
  LLVMValueRef jend = cg_min_i64(c, LLVMBuildAdd(c->b, jb.i, cg_i64(c, BJ), ""), n_keys);
  row_block(c, &hd, &st, r.i, q, qoff, kc, vc, jb.i, jend, cbase);
  LLVMBuildBr(c->b, next);
  LLVMPositionBuilderAtEnd(c->b, next);
  cg_loop_end(c, &r);
  cg_loop_end(c, &jb);

  Loop rf = cg_loop(c, cg_i64(c, 0), n_rows, 1, "out");
  LLVMValueRef tf = LLVMBuildAdd(c->b, t_lo, rf.i, "");
  LLVMValueRef yoff = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, tf, cg_i64(c, D), ""), hoff, "");
  LLVMValueRef inv = LLVMBuildFDiv(c->b, cg_f32(c, 1.0), LLVMBuildLoad2(c->b, c->f32, cg_gep(c, c->f32, st.den, rf.i), ""), "");
  LLVMValueRef inv_v = cg_splat(c, inv, (unsigned)hd.vw);
  for (int64_t i = 0; i < hd.nv; i++) {
    LLVMValueRef o = LLVMBuildFMul(c->b, LLVMBuildLoad2(c->b, hd.vf, state_vec(c, &hd, &st, rf.i, i), ""), inv_v, "");
    LLVMValueRef stv = LLVMBuildStore(c->b, o, cg_gep(c, c->f32, y, LLVMBuildAdd(c->b, yoff, cg_i64(c, i * hd.vw), "")));
    LLVMSetAlignment(stv, 4);
  }
  for (int64_t i = 0; i < ntail; i++)
    cg_store_f32(c, y, LLVMBuildAdd(c->b, yoff, cg_i64(c, hd.nv * hd.vw + i), ""),
                 LLVMBuildFMul(c->b, LLVMBuildLoad2(c->b, c->f32, state_tail(c, &hd, &st, rf.i, i), ""), inv, ""));
  cg_loop_end(c, &rf);
  cg_loop_end(c, &it);
}

/* attention_probs: when the caller gave PyRun.attn and a buffer for this
 * layer in it, the softmax of row t's scores (the same q . k / sqrt(head_dim)
 * as attention's) over keys [0, pos + t] goes to row pos + t of head h's
 * [attn_n, attn_n] matrix in that buffer (pythia_abi.h), and the rest of
 * that row up to attn_n is zeroed.  The softmax is the plain two-pass one: m = max_j s_j, then
 * p_j = e^(s_j - m) / sum_i e^(s_i - m); the row holds the scores, then the
 * exponentials, then the probabilities.  One item is one (head, row),
 * head-major.  This is the path of pythia_gen --dump-attentions, not of
 * generation: it is written for clarity, not speed. */
void cg_lower_attention_probs(Cg *c, const Op *op) {
  const int64_t H = op->a.n_head, Dh = op->a.head_dim, D = H * Dh;
  Head hd = {.Dh = Dh, .vw = c->target->vector_width, .kdt = op->in[1]->dtype, .vdt = op->in[1]->dtype};
  hd.nv = Dh / hd.vw;
  hd.vf = LLVMVectorType(c->f32, (unsigned)hd.vw);
  PY_ASSERT(hd.nv <= MAX_CHUNKS && Dh - hd.nv * hd.vw < MAX_CHUNKS);
  LLVMValueRef layers = cg_run_field(c, RUN_ATTN);
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "done");
  cg_unless_null(c, layers, done);
  LLVMValueRef out = LLVMBuildLoad2(c->b, c->ptr, cg_gep(c, c->ptr, layers, cg_i64(c, op->a.layer)), "");
  cg_unless_null(c, out, done);
  LLVMValueRef q = cg_value_ptr(c, op->in[0]), kc = cg_value_ptr(c, op->in[1]);
  LLVMValueRef T = cg_run_field(c, RUN_NTOK), pos = cg_run_field(c, RUN_POS), N = cg_run_field(c, RUN_ATTN_N);
  LLVMValueRef mxp = cg_alloca_array(c, c->f32, 1, "max"), sump = cg_alloca_array(c, c->f32, 1, "sum");

  Loop it = cg_loop(c, c->lo, c->hi, 1, "item");
  LLVMValueRef h = LLVMBuildSDiv(c->b, it.i, T, "h"), t = LLVMBuildSRem(c->b, it.i, T, "t");
  LLVMValueRef qv[MAX_CHUNKS], qs[MAX_CHUNKS];
  load_q_scaled(c, &hd, q, LLVMBuildAdd(c->b, LLVMBuildMul(c->b, t, cg_i64(c, D), ""),
                                        LLVMBuildMul(c->b, h, cg_i64(c, Dh), ""), ""), qv, qs);
  LLVMValueRef cbase = cg_cache_head_base(c, h);
  LLVMValueRef gt = LLVMBuildAdd(c->b, pos, t, "");
  LLVMValueRef row = cg_gep(c, c->f32, out, LLVMBuildMul(c->b, LLVMBuildAdd(c->b, LLVMBuildMul(c->b, h, N, ""), gt, ""), N, ""));
  LLVMValueRef n_keys = LLVMBuildAdd(c->b, gt, cg_i64(c, 1), "keys");

  LLVMBuildStore(c->b, LLVMConstReal(c->f32, -INFINITY), mxp);
  Loop j = cg_loop(c, cg_i64(c, 0), n_keys, 1, "score");
  LLVMValueRef s = dot_key(c, &hd, qv, qs, kc, LLVMBuildAdd(c->b, LLVMBuildMul(c->b, j.i, cg_i64(c, Dh), ""), cbase, ""));
  cg_store_f32(c, row, j.i, s);
  LLVMValueRef mm[2] = {LLVMBuildLoad2(c->b, c->f32, mxp, ""), s};
  LLVMBuildStore(c->b, cg_call_intrinsic(c, "llvm.maxnum", c->f32, mm, 2), mxp);
  cg_loop_end(c, &j);

  LLVMValueRef m = LLVMBuildLoad2(c->b, c->f32, mxp, "m");
  LLVMBuildStore(c->b, cg_f32(c, 0), sump);
  Loop je = cg_loop(c, cg_i64(c, 0), n_keys, 1, "exp");
  LLVMValueRef e = cg_exp(c, LLVMBuildFSub(c->b, cg_load_f32(c, DT_F32, row, je.i), m, ""));
  cg_store_f32(c, row, je.i, e);
  LLVMBuildStore(c->b, LLVMBuildFAdd(c->b, LLVMBuildLoad2(c->b, c->f32, sump, ""), e, ""), sump);
  cg_loop_end(c, &je);

  LLVMValueRef inv = LLVMBuildFDiv(c->b, cg_f32(c, 1.0), LLVMBuildLoad2(c->b, c->f32, sump, ""), "inv");
  Loop jn = cg_loop(c, cg_i64(c, 0), n_keys, 1, "norm");
  cg_store_f32(c, row, jn.i, LLVMBuildFMul(c->b, cg_load_f32(c, DT_F32, row, jn.i), inv, ""));
  cg_loop_end(c, &jn);
  Loop jz = cg_loop(c, n_keys, N, 1, "zero");
  cg_store_f32(c, row, jz.i, cg_f32(c, 0));
  cg_loop_end(c, &jz);
  cg_loop_end(c, &it);
  LLVMBuildBr(c->b, done);
  LLVMPositionBuilderAtEnd(c->b, done);
}
