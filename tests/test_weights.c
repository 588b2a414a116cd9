/* test_weights.c — the weight writer's conversions (compiler/link/weights.c).
 *
 *   1. f32_to_f16_run, which uses F16C's vcvtps2ph where the CPU has it,
 *      gives f32_to_f16's half for every float it is given: 16.7 million bit
 *      patterns spread over all 2^32 (every exponent, both signs, NaNs,
 *      infinities, subnormals, ties), and every run length 0..40 from odd
 *      starts (the 8-wide loop and its scalar tail).  (All 2^32 patterns
 *      were compared once, on an AVX-512 machine: no difference.)
 *   2. f32_to_f16 itself on known values: ties to even, the largest half,
 *      overflow to infinity, the smallest subnormal, quiet NaNs.
 *
 * Prints "N passed, N failed"; exits non-zero on any failure. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/link/link.h"

#define TEST_FILE "test_weights.c"
#include "check.h"

static float from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static void test_run_matches_scalar(void) {
  enum { N = 4096 };
  float *x = malloc(N * sizeof *x);
  uint16_t *h = malloc(N * sizeof *h);
  uint64_t bad = 0;
  uint32_t first = 0;
  /* 257 is odd, so the patterns step through every residue of the low bits */
  for (uint64_t base = 0; base < (1ull << 32); base += (uint64_t)N * 257) {
    for (int i = 0; i < N; i++) x[i] = from_bits((uint32_t)(base + (uint64_t)i * 257));
    f32_to_f16_run(x, N, h);
    for (int i = 0; i < N; i++)
      if (h[i] != f32_to_f16(x[i]) && !bad++) memcpy(&first, &x[i], 4);
  }
  CHECKF(bad == 0, "%llu patterns differ, first 0x%08x", (unsigned long long)bad, first);
  /* run lengths 0..40 from odd starts: the tail after the 8-wide loop */
  int bad_len = -1;
  for (int len = 0; len <= 40; len++) {
    for (int i = 0; i < 48; i++) x[i] = (float)i * 0.37f - 5.0f, h[i] = 0xBEEF;
    f32_to_f16_run(x + 3, len, h + 3);
    for (int i = 0; i < 48; i++) {
      const uint16_t want = i >= 3 && i < 3 + len ? f32_to_f16(x[i]) : 0xBEEF;
      if (h[i] != want && bad_len < 0) bad_len = len;
    }
  }
  CHECKF(bad_len < 0, "run of %d from index 3: wrong or out-of-range halves", bad_len);
  free(x);
  free(h);
}

static void test_known(void) {
  CHECK(f32_to_f16(1.0f) == 0x3C00);
  CHECK(f32_to_f16(-2.0f) == 0xC000);
  CHECK(f32_to_f16(65504.0f) == 0x7BFF);                   /* the largest half */
  CHECK(f32_to_f16(65520.0f) == 0x7C00);                   /* halfway to 2^16: to infinity */
  CHECK(f32_to_f16(65519.0f) == 0x7BFF);
  CHECK(f32_to_f16(1.0f + 1.0f / 2048) == 0x3C00);         /* tie: to the even 1.0 */
  CHECK(f32_to_f16(1.0f + 3.0f / 2048) == 0x3C02);         /* tie: to the even 0x3C02 */
  CHECK(f32_to_f16(ldexpf(1.0f, -24)) == 0x0001);          /* the smallest subnormal */
  CHECK(f32_to_f16(ldexpf(1.0f, -25)) == 0x0000);          /* half of it: a tie, to even 0 */
  CHECK(f32_to_f16(ldexpf(1.5f, -25)) == 0x0001);
  CHECK(f32_to_f16(INFINITY) == 0x7C00 && f32_to_f16(-INFINITY) == 0xFC00);
  CHECK((f32_to_f16(NAN) & 0x7E00) == 0x7E00);             /* a quiet NaN */
  CHECK((f32_to_f16(from_bits(0x7F800001u)) & 0x7E00) == 0x7E00); /* signalling in, quiet out */
}

int main(void) {
  test_known();
  test_run_matches_scalar();
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}
