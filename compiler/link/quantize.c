/* quantize.c — Q8_0 / Q4_0 quantization (ggml's reference rounding) and the
 * packing of row groups in the layout of quantize.h.  Called by weights.c
 * one row group at a time while the weights stream, so memory stays bounded
 * by one group. */
#include "quantize.h"

#include <math.h>
#include <string.h>

#include "link.h"

/* roundf(v) for |v| < 2^31 without libm (x86-64 without SSE4.1 has no
 * rounding instruction, and libm's roundf and fmaxf calls were a third of a
 * q8_0 compile): i = trunc(v), and v - i, the fraction, is exact. */
float quant_round(float v) {
  int32_t i = (int32_t)v;
  const float r = v - (float)i;
  i += (r >= 0.5f) - (r <= -0.5f); /* no branch: random weights round either way */
  return (float)i;
}

void quant_block_q8_0(const float *x, uint16_t *d, int8_t q[QK]) {
  float amax = 0;
  for (int j = 0; j < QK; j++) { /* fmaxf(amax, |x|): a NaN is skipped */
    const float a = fabsf(x[j]);
    amax = a > amax ? a : amax;
  }
  const float dd = amax / 127.0f, id = dd != 0 ? 1.0f / dd : 0.0f;
  *d = f32_to_f16(dd);
  for (int j = 0; j < QK; j++) q[j] = (int8_t)quant_round(x[j] * id);
}

void quant_block_q4_0(const float *x, uint16_t *d, uint8_t qs[QK / 2]) {
  float amax = 0, max = 0;
  for (int j = 0; j < QK; j++)
    if (amax < fabsf(x[j])) amax = fabsf(x[j]), max = x[j];
  const float dd = max / -8.0f, id = dd != 0 ? 1.0f / dd : 0.0f;
  *d = f32_to_f16(dd);
  for (int j = 0; j < QK / 2; j++) {
    int lo = (int8_t)(x[j] * id + 8.5f), hi = (int8_t)(x[j + QK / 2] * id + 8.5f);
    lo = lo < 15 ? lo : 15, hi = hi < 15 ? hi : 15;
    qs[j] = (uint8_t)(lo | hi << 4);
  }
}

void dequant_block_q8_0(uint16_t d, const int8_t q[QK], float *y) {
  const float f = f16_to_f32(d);
  for (int j = 0; j < QK; j++) y[j] = f * (float)q[j];
}

void dequant_block_q4_0(uint16_t d, const uint8_t qs[QK / 2], float *y) {
  const float f = f16_to_f32(d);
  for (int j = 0; j < QK / 2; j++) {
    y[j] = f * (float)((qs[j] & 15) - 8);
    y[j + QK / 2] = f * (float)((qs[j] >> 4) - 8);
  }
}

/* Offset of the 4-byte unit s (elements 4s..4s+3 of the block; Q4_0: bytes
 * 4s..4s+3 of the block's 16) of row i, block b, in the group's quant area. */
static int64_t quant_offset(DType t, int rn, int i, int64_t b, int s) {
  const int64_t bq = t == DT_Q8_0 ? 32 : 16;
  return b * rn * bq + (int64_t)s * 4 * rn + i * 4;
}

static int64_t scale_bytes(int rn, int64_t K) { return ((int64_t)rn * (K / QK) * 2 + 63) / 64 * 64; }

int64_t quant_pack_group(DType t, int rn, int64_t K, const float *rows, int nrows, uint8_t *dst) {
  PY_ASSERT(dtype_is_quant(t) && K % QK == 0 && nrows <= rn);
  const int64_t nb = K / QK, size = ir_qgroup_bytes(t, rn, K);
  memset(dst, 0, (size_t)size); /* rows past nrows: d = 0 and q = 0 (Q8_0 bytes 128, Q4_0 nibbles 8) */
  uint8_t *sc = dst, *qa = dst + scale_bytes(rn, K);
  for (int i = 0; i < rn; i++)
    for (int64_t b = 0; b < nb; b++) {
      uint16_t d = 0;
      uint8_t bytes[QK];
      if (i >= nrows) memset(bytes, t == DT_Q8_0 ? 128 : 0x88, QK);
      else if (t == DT_Q8_0) {
        int8_t q[QK];
        quant_block_q8_0(rows + i * K + b * QK, &d, q);
        for (int j = 0; j < QK; j++) bytes[j] = (uint8_t)(q[j] + 128);
      } else {
        quant_block_q4_0(rows + i * K + b * QK, &d, bytes);
      }
      for (int s = 0; s < (t == DT_Q8_0 ? 8 : 4); s++) memcpy(qa + quant_offset(t, rn, i, b, s), bytes + 4 * s, 4);
      memcpy(sc + 2 * (b * rn + i), &d, 2);
    }
  return size;
}

void quant_unpack_block(DType t, int rn, int64_t K, const uint8_t *group, int i, int64_t b, uint16_t *d,
                        int8_t q[QK]) {
  memcpy(d, group + 2 * (b * rn + i), 2);
  uint8_t bytes[QK];
  for (int s = 0; s < (t == DT_Q8_0 ? 8 : 4); s++)
    memcpy(bytes + 4 * s, group + scale_bytes(rn, K) + quant_offset(t, rn, i, b, s), 4);
  for (int j = 0; j < QK; j++)
    q[j] = t == DT_Q8_0 ? (int8_t)(bytes[j] - 128)
                        : (int8_t)((j < QK / 2 ? bytes[j] & 15 : bytes[j - QK / 2] >> 4) - 8);
}

static int read_only_by_matmul(const Graph *g, const Value *w) {
  for (Op *op = g->first; op; op = op->next)
    for (int i = 0; i < op->n_in; i++)
      if (op->in[i] == w && (op->kind != OP_MATMUL || i != 1)) return 0;
  return 1;
}

void quant_select(Graph *g, DType t, char *kept, size_t size) {
  size_t used = 0;
  kept[0] = 0;
  for (int i = 0; i < g->n_values; i++) {
    Value *w = g->values[i];
    if (w->kind != VK_WEIGHT || w->rank != 2 || w->dtype == t) continue;
    const char *why = NULL;
    char buf[96];
    if (!read_only_by_matmul(g, w))
      why = g->dims.tied ? "rows gathered by embed; tied, so also the unembedding" : "rows gathered by embed";
    else if (w->dims[1] % QK) {
      snprintf(buf, sizeof buf, "K = %lld is not a multiple of 32", (long long)w->dims[1]);
      why = buf;
    }
    if (!why) {
      w->dtype = t;
      continue;
    }
    used += (size_t)snprintf(kept + used, used < size ? size - used : 0, "%s%s %s (%s)", used ? ", " : "",
                             w->name, dtype_name(w->dtype), why);
  }
  if (used >= size && size > 4) memcpy(kept + size - 4, "...", 4);
}
