/* rt_sum_streams.h — the read loop of both bandwidth probes: the runtime's,
 * between decode tokens (rt_probe.c), and the benchmark's standalone one
 * (tests/bench/probe.c, which includes this file by its relative path).
 *
 * rt_sum_streams(p, n, streams) reads n bytes of p as `streams` equal
 * parts side by side, 1 KiB of a part per step, each part rounded down to
 * whole 1 KiB steps, and returns the sum of what it read as floats.  Few
 * instructions a byte, so many loads are in flight: 16 vector adds with a
 * memory operand per KiB into four register sums (named variables: sums in
 * an array indexed by the run-time part number were kept in memory, and
 * every 64 bytes then waited for a store and a reload, which capped the old
 * probe near 35 GB/s in seconds when this loop read 55-60).  The sums are
 * float: with 64-bit integer lanes the AVX-512 loop read 24 GB/s on the
 * Zen 4 machine where the float one read 33, side by side.  A 64-byte GCC
 * vector is one zmm register with AVX-512, two ymm with AVX2, four xmm
 * otherwise: the caller's target decides. */
#ifndef RT_SUM_STREAMS_H
#define RT_SUM_STREAMS_H

#include <stddef.h>
#include <stdint.h>

typedef float RtVec64 __attribute__((vector_size(64)));

static inline __attribute__((always_inline)) double rt_sum_streams(const uint8_t *p, size_t n, int streams) {
  RtVec64 a = {0}, b = {0}, c = {0}, d = {0};
  const size_t len = n / (size_t)streams / 1024 * 1024;
  for (size_t k = 0; k < len; k += 1024)
    for (int i = 0; i < streams; i++) {
      const uint8_t *q = p + (size_t)i * len + k;
#pragma GCC unroll 4
      for (int j = 0; j < 1024; j += 256) {
        RtVec64 x0, x1, x2, x3;
        __builtin_memcpy(&x0, q + j, 64);
        __builtin_memcpy(&x1, q + j + 64, 64);
        __builtin_memcpy(&x2, q + j + 128, 64);
        __builtin_memcpy(&x3, q + j + 192, 64);
        a += x0, b += x1, c += x2, d += x3;
      }
    }
  RtVec64 s = a + b + c + d;
  double t = 0;
  for (int i = 0; i < 16; i++) t += s[i];
  return t;
}

#endif
