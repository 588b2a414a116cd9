/* tile_matmul.c — records on every matmul the blocking its kernel uses, so
 * the choice is visible in the IR and can be overridden (--tile), and packs
 * W in the order that kernel reads it.
 *
 * Float W (f32, f16, bf16): panels of P rows stored k-major (ir.h), read by
 * lower_matmul.c's register tiles of MR tokens x P rows:
 *   tile_rn  P: 2 vectors of outputs (32 rows with 512-bit vectors, 16 with
 *            256, 8 with 128), or what the target asks (4 vectors on AMD
 *            CPUs with 512-bit vectors: cg_target_panel_rows); a multiple
 *            of the vector width.
 *   tile_rt  MR tokens per tile: MR x P/vw accumulators plus the P/vw W
 *            vectors must fit the register file: 24 accumulators of 32
 *            vector registers, 12 of 16, so MR = 24 / (P/vw) (12 for 2
 *            vectors, 6 for 4) or 12 / (P/vw).
 *   tile_n   rows of W per cache block, a multiple of P: every block
 *            streams x once, so the larger the less x traffic; the
 *            accumulators of max_block x tile_n outputs wait on the stack
 *            between k chunks (1 MiB at most): 1024 rows for max_block 256.
 *   tile_k   k chunk (256): the x rows of a chunk (max_block x tile_k
 *            floats) stay in L2 while every panel of the block passes over
 *            them, a tile's MR rows (12 KiB) in L1, and the block's W chunk
 *            (tile_n x tile_k) in L2 while every token tile passes over it;
 *            0 when K fits in one chunk.
 *   tile_streams  panels a decode GEMV reads at once: one memory stream
 *            each; one sequential stream per core leaves bandwidth unused.
 *   stage_w  16-bit W: prefill widens each block's k chunk to f32 once (a
 *            stack buffer of tile_n x tile_k floats, 512 KiB by default,
 *            which caps tile_n), so the register tiles that pass over it
 *            spend their FMA ports on FMAs only, not on a conversion per
 *            tile, and copies the x chunk at a padded row stride (rows
 *            4 KiB-multiples apart share cache sets); off with --no-stage,
 *            and where the x copy (max_block x (tile_k + 16) floats) would
 *            pass 4 MiB of stack.
 * Every output is the same dot product in the same order whatever these
 * are: they change speed, never bits.
 *
 * Quantized W (q8_0, q4_0): groups of 16 rows (512-bit vectors) or 8, one
 * row per i32 lane, tile_rt 8 or 4 token pairs' worth (lower_qmatmul.c,
 * docs/quantization.md); no k chunks, one stream. */
#include "pass.h"

static int read_only_by_matmul(Graph *g, const Value *w) {
  for (Op *op = g->first; op; op = op->next)
    for (int i = 0; i < op->n_in; i++)
      if (op->in[i] == w && (op->kind != OP_MATMUL || i != 1)) return 0;
  return 1;
}

/* Float W: panel rows, tile tokens, block rows, k chunk, streams. */
static int tile_float(Graph *g, Op *op, const PassOptions *o, Err *e) {
  const int vw = o->vector_width > 0 ? o->vector_width : 1;
  const int64_t K = op->in[1]->dims[1];
  int p = o->tile_rn > 0 ? o->tile_rn : 2 * vw;
  if (p % vw || p / vw > 8)
    return err_set(e, "--tile: RN (panel rows) must be a multiple of the vector width %d, at most %d, got %d", vw,
                   8 * vw, p);
  const int acc_budget = vw >= 16 ? 24 : 12; /* accumulators beside the W vectors */
  int mr = o->tile_rt > 0 ? o->tile_rt : acc_budget / (p / vw); /* >= 1: p / vw <= 8 (above) */
  const int64_t max_block = g->dims.max_block > 0 ? g->dims.max_block : 1;
  int64_t tn = o->tile_n;
  if (tn <= 0) { /* as many rows as max_block x TN parked floats allow in 1 MiB */
    int64_t rows = IR_MATMUL_ACCBUF_MAX / (4 * max_block) / p * p;
    tn = rows < p ? p : rows > 1024 ? 1024 : rows;
  }
  tn = (tn + p - 1) / p * p;
  int64_t kc = o->tile_k > 0 ? o->tile_k : 256;
  const int64_t chunk = kc < K ? kc : K;
  /* staged x: max_block rows of chunk + 16 floats (278 KiB for max_block 256) */
  const bool stage = !o->no_stage && op->in[1]->dtype != DT_F32 &&
                     max_block * (chunk + IR_STAGED_X_PAD) * 4 <= IR_STAGED_X_MAX;
  if (stage && o->tile_n <= 0 && tn * chunk * 4 > (512 << 10)) { /* the staged chunk: half of L2 at most */
    int64_t rows = (512 << 10) / (4 * chunk) / p * p;
    tn = rows > p ? rows : p;
  }
  /* accumulators parked between k chunks: a stack buffer of max_block x tn floats */
  if (kc < K && tn * max_block * 4 > IR_MATMUL_ACCBUF_MAX)
    return err_set(e, "--tile: TN %lld x --max-block %lld floats of parked accumulators exceed 1 MiB", (long long)tn,
                   (long long)max_block);
  if (stage && tn * chunk * 4 > IR_STAGED_W_MAX)
    return err_set(e, "--tile: TN %lld x k chunk %lld floats of staged W exceed 1 MiB (--no-stage, or a smaller TN or KC)",
                   (long long)tn, (long long)chunk);
  op->a.tile_n = (int)tn;
  op->a.tile_rn = p;
  op->a.tile_rt = mr;
  op->a.tile_k = kc < K ? (int)kc : 0;
  /* streams x P/vw accumulators: 16 of 32 vector registers, 8 of 16 */
  const int acc_regs = vw >= 16 ? 16 : 8, nv = p / vw;
  op->a.tile_streams = o->tile_streams > 0 ? o->tile_streams : acc_regs / nv > 8 ? 8 : acc_regs / nv > 0 ? acc_regs / nv : 1;
  op->a.prefetch = o->prefetch;
  op->a.stage_w = stage;
  Value *w = op->in[1];
  PY_ASSERT(!w->pack_rn || w->pack_rn == p); /* every float matmul gets the same P */
  w->pack_rn = p;
  w->pack_vw = 0;
  return 0;
}

static void tile_quant(Graph *g, Op *op, const PassOptions *o) {
  const int rn = o->vector_width >= 16 ? 16 : 8;
  op->a.tile_rn = rn;
  op->a.tile_rt = o->vector_width >= 16 ? 8 : 4; /* the integer kernel's accumulator pairs */
  if (o->tile_rt > 0) op->a.tile_rt = o->tile_rt < op->a.tile_rt ? o->tile_rt : op->a.tile_rt;
  int64_t tn = o->tile_n;
  if (tn <= 0) {
    int64_t rows = (256 * 1024) / ir_qgroup_bytes(op->in[1]->dtype, 1, op->in[1]->dims[1]);
    tn = rows < rn ? rn : rows > 256 ? 256 : rows;
  }
  op->a.tile_n = (int)((tn + rn - 1) / rn * rn);
  op->a.tile_k = 0;
  op->a.tile_streams = 1;
  op->a.prefetch = o->prefetch;
  Value *w = op->in[1];
  PY_ASSERT(read_only_by_matmul(g, w)); /* tied embeddings stay 16-bit (quantize.c) */
  w->pack_rn = rn;
  w->pack_vw = rn;
}

int pass_tile_matmul(Graph *g, const PassOptions *o, Err *e) {
  if (o->tile_rt > 16) return err_set(e, "--tile: at most 16 tokens per register tile, got %d", o->tile_rt);
  for (Op *op = g->first; op; op = op->next) {
    if (op->kind != OP_MATMUL) continue;
    if (dtype_is_quant(op->in[1]->dtype)) tile_quant(g, op, o);
    else if (tile_float(g, op, o, e)) return -1;
  }
  return 0;
}
