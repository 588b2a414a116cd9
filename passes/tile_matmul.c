/* tile_matmul.c — records on every matmul the blocking its kernel uses, so
 * the choice is visible in the IR and can be overridden (--tile):
 *
 *   tile_n   rows of W per cache block: a block of W (tile_n x K in its
 *            storage dtype) should stay in L2 while every token passes over
 *            it; aim at ~256 KiB, a multiple of tile_rn, at least tile_rn.
 *   tile_rn  rows of W per register block (4: four weight streams in flight)
 *   tile_rt  tokens per register block: rn x rt accumulators plus rt
 *            activation vectors must fit the register file: 4 with 32
 *            vector registers (AVX-512), 2 with 16 (AVX2, SSE).
 *   tile_k   k chunk of the prefill register tiles: the rt activation rows
 *            of one chunk (rt * tile_k floats, ~16 KiB) stay in L1 while
 *            every row group of the cache block passes over them; 0 when
 *            K fits in one chunk.  Results are the same bits either way.
 *   tile_streams  packed row groups the decode GEMV reads at once: one
 *            memory stream each, so the core keeps several hardware
 *            prefetch streams in flight (one stream per core reads at ~2/3
 *            of the bandwidth four reach); streams x rn accumulators must
 *            fit the register file: 4 with 32 vector registers, 2 with 16.
 *            tile_n is rounded to a multiple of streams x rn.
 * Decode (T = 1) runs the rt = 1 tail of the same kernel: a pure GEMV.
 *
 * It also packs each matmul's W in the order the kernel reads it (groups of
 * tile_rn rows interleaved by vector-width chunks: one sequential stream per
 * register block) unless another op reads W as rows too (a tied embedding
 * also read by `embed`): then W stays row-major and the kernel reads rows.
 * Quantized W (q8_0, q4_0) is always packed, in groups of 16 rows (512-bit
 * vectors) or 8, one row per i32 lane: docs/quantization.md. */
#include "pass.h"

static int read_only_by_matmul(Graph *g, const Value *w) {
  for (Op *op = g->first; op; op = op->next)
    for (int i = 0; i < op->n_in; i++)
      if (op->in[i] == w && (op->kind != OP_MATMUL || i != 1)) return 0;
  return 1;
}

int pass_tile_matmul(Graph *g, const PassOptions *o, Err *e) {
  const int rt = o->tile_rt > 0 ? o->tile_rt : o->vector_width >= 16 ? 4 : 2;
  const int rn0 = o->tile_rn > 0 ? o->tile_rn : 4;
  if (rn0 > 8 || rt > 8) return err_set(e, "--tile: register block at most 8 x 8, got %d x %d", rn0, rt);
  for (Op *op = g->first; op; op = op->next) {
    if (op->kind != OP_MATMUL) continue;
    /* quantized W: groups of one row per i32 lane, whatever --tile says */
    const int rn = dtype_is_quant(op->in[1]->dtype) ? (o->vector_width >= 16 ? 16 : 8) : rn0;
    int tn = o->tile_n;
    if (tn <= 0) {
      int64_t row_bytes = dtype_is_quant(op->in[1]->dtype) ? ir_qgroup_bytes(op->in[1]->dtype, 1, op->in[1]->dims[1])
                                                          : op->in[1]->dims[1] * dtype_size(op->in[1]->dtype);
      int64_t rows = (256 * 1024) / (row_bytes > 0 ? row_bytes : 1);
      tn = (int)(rows < rn ? rn : rows > 256 ? 256 : rows);
    }
    int streams = o->tile_streams > 0 ? o->tile_streams : o->vector_width >= 16 ? 4 : 2;
    if (dtype_is_quant(op->in[1]->dtype)) streams = 1; /* lower_qmatmul.c reads one group at a time */
    if (streams * rn > 16) streams = 16 / rn > 0 ? 16 / rn : 1;
    const int step = o->tile_n > 0 ? rn : streams * rn;
    tn = (tn + step - 1) / step * step;
    op->a.tile_streams = streams;
    op->a.tile_n = tn;
    op->a.tile_rn = rn;
    op->a.tile_rt = rt;
    if (dtype_is_quant(op->in[1]->dtype) && o->tile_rt <= 0) /* the integer kernel's accumulator pairs: */
      op->a.tile_rt = o->vector_width >= 16 ? 8 : 4;        /* 2 groups x 8 in zmm, 1 x 4 in ymm */
    int vw = o->vector_width > 0 ? o->vector_width : 1;
    int64_t kv = op->in[1]->dims[1] / vw * vw;
    int kc = o->tile_k > 0 ? o->tile_k : (int)(16 * 1024 / (4 * rt));
    kc = kc / vw * vw;
    op->a.tile_k = kc > 0 && kc < kv ? kc : 0;
    if (dtype_is_quant(op->in[1]->dtype)) op->a.tile_k = 0; /* lower_qmatmul.c does not chunk k */
    op->a.prefetch = o->prefetch;
    Value *w = op->in[1];
    if (read_only_by_matmul(g, w) && (!w->pack_rn || w->pack_rn == rn)) {
      w->pack_rn = rn;
      w->pack_vw = o->vector_width;
      if (dtype_is_quant(w->dtype)) w->pack_vw = rn;
    }
    PY_ASSERT(!dtype_is_quant(w->dtype) || w->pack_rn == rn); /* quantized W is always packed */
  }
  return 0;
}
