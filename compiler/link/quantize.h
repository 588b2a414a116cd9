/* quantize.h — llama.cpp's Q8_0 and Q4_0 block formats, and the packed
 * layout the quantized matmul kernel (codegen/lower_qmatmul.c) reads.
 *
 * A block is 32 consecutive weights of one row along K with one f16 scale d:
 *   Q8_0: d = max|x| / 127, q = round(x / d) in [-127, 127] (ties away from 0)
 *   Q4_0: m = the x of largest magnitude (first one on ties), d = m / -8,
 *         q = min(15, trunc(x / d + 8.5)) in [0, 15], x ~ d * (q - 8);
 *         byte j of the block's 16 holds x[j] in its low nibble and x[j + 16]
 *         in its high nibble.
 * exactly as ggml's reference quantizers, so quality is comparable.
 *
 * Packed group of rn rows (rows [g*rn, g*rn + rn) of W[N, K], nb = K / 32;
 * rn = 16 with 512-bit vectors, else 8: one i32 lane per row):
 *   scales: f16 d of (row i, block b) at 2 * (b * rn + i), padded to 64 bytes
 *   quants: block by block, each block in 4-byte units: unit s of row i at
 *           b * rn * bq + s * 4 * rn + 4 * i (bq = 32 for Q8_0, 16 for
 *           Q4_0), so that one vector load gives 4 bytes of every row:
 *             Q8_0: units s = 0..7 hold elements 4s..4s+3 as q + 128 (u8)
 *             Q4_0: units s = 0..3 hold bytes 4s..4s+3 of ggml's 16 (low
 *                   nibbles: elements 4s.., high nibbles: 16 + 4s..)
 *           padded to 64 bytes.
 * ceil(N / rn) groups; the rows past N in the last group are zero (d = 0).
 * ir_qgroup_bytes() gives a group's size. */
#ifndef PY_QUANTIZE_H
#define PY_QUANTIZE_H

#include <stdint.h>

#include "../../ir/ir.h"

enum { QK = 32 };

float quant_round(float v); /* roundf (ties away from zero) for |v| < 2^31 */
void quant_block_q8_0(const float *x, uint16_t *d, int8_t q[QK]);
void quant_block_q4_0(const float *x, uint16_t *d, uint8_t qs[QK / 2]);
void dequant_block_q8_0(uint16_t d, const int8_t q[QK], float *y);
void dequant_block_q4_0(uint16_t d, const uint8_t qs[QK / 2], float *y);

/* Quantizes nrows <= rn rows of K floats (row i at rows + i * K) into one
 * packed group of rn rows at dst; returns its size, ir_qgroup_bytes(t, rn, K). */
int64_t quant_pack_group(DType t, int rn, int64_t K, const float *rows, int nrows, uint8_t *dst);

/* Reads block b of row i back from a packed group: its scale (f16 bits) and
 * its 32 signed quants q (Q4_0: nibble - 8), so that x ~ d * q. */
void quant_unpack_block(DType t, int rn, int64_t K, const uint8_t *group, int i, int64_t b, uint16_t *d,
                        int8_t q[QK]);

/* Stores every weight matrix that only matmuls read, with K a multiple of
 * 32, as t (q8_0 or q4_0); the others keep the dtype they were built with.
 * kept gets "name dtype (why), ..." for those, or "". */
void quant_select(Graph *g, DType t, char *kept, size_t size);

#endif
