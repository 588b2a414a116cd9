/* test_probe.c — runtime/rt_probe.c: the read covers every whole 4 KiB block
 * of the buffer exactly once and nothing past it (float i holds i % 7 + 1,
 * so a block read twice or skipped, or one read in place of another, changes
 * the sum; the floats after the blocks are 1e6, which would show), with no
 * pool and with 1, 2 and 3 threads, on sizes that are and are not whole
 * blocks; denormals read as zero; the caller's MXCSR is kept. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xmmintrin.h>

#include "rt_probe.h"
#include "threadpool.h"

#include "expect.h"

/* n floats i % 7 + 1, then 1024 floats 1e6; *want: the sum of the n */
static float *pattern(size_t n, double *want) {
  float *p = aligned_alloc(64, ((n + 1024) * sizeof(float) + 63) / 64 * 64);
  *want = 0;
  for (size_t i = 0; i < n; i++) p[i] = (float)(i % 7 + 1), *want += p[i];
  for (size_t i = n; i < n + 1024; i++) p[i] = 1e6f;
  return p;
}

static int check_sizes(RtPool *pool, const char *who) {
  const size_t sizes[] = {4096, 8192, 3 * 4096, 4096 * 1000, (size_t)64 << 20};
  for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
    const size_t bytes = sizes[k];
    double want, sum = -1, sum2 = -1;
    float *p = pattern(bytes / 4, &want);
    size_t got = rt_probe_read(pool, (const uint8_t *)p, bytes, &sum);
    /* told it is 100 bytes longer: the partial block is neither read nor counted */
    size_t got2 = rt_probe_read(pool, (const uint8_t *)p, bytes + 100, &sum2);
    free(p);
    EXPECT(got == bytes, "%s: %zu bytes: read %zu", who, bytes, got);
    EXPECT(sum == want, "%s: %zu bytes: sum %.1f, want %.1f", who, bytes, sum, want);
    EXPECT(got2 == bytes && sum2 == sum, "%s: %zu + 100 bytes: read %zu, sum %.1f", who, bytes, got2, sum2);
  }
  float small[16] __attribute__((aligned(64))) = {0};
  double sum = -1;
  EXPECT(rt_probe_read(pool, (const uint8_t *)small, sizeof small, &sum) == 0 && sum == 0,
         "%s: under one block: nothing read, sum %.1f", who, sum);
  return 1;
}

static int test_no_pool(void) { return check_sizes(NULL, "no pool"); }

static int with_threads(int t) {
  RtPool *pool = rt_pool_new(t);
  char who[32];
  snprintf(who, sizeof who, "%d threads", t);
  int ok = pool && check_sizes(pool, who);
  rt_pool_free(pool);
  return ok;
}

static int test_1_thread(void) { return with_threads(1); }
static int test_2_threads(void) { return with_threads(2); }
static int test_3_threads(void) { return with_threads(3); }

/* a block of the smallest denormal sums to 0; MXCSR comes back as it was */
static int test_denormals(void) {
  float *p = aligned_alloc(64, 4096);
  const uint32_t bits = 1;
  for (int i = 0; i < 1024; i++) memcpy(&p[i], &bits, 4);
  const unsigned csr = _mm_getcsr();
  double sum = -1;
  rt_probe_read(NULL, (const uint8_t *)p, 4096, &sum);
  const unsigned after = _mm_getcsr();
  free(p);
  EXPECT(sum == 0, "sum %g, want 0", sum);
  EXPECT(after == csr, "MXCSR %#x after the read, was %#x", after, csr);
  return 1;
}

int main(void) {
  run_test("no_pool", test_no_pool);
  run_test("1_thread", test_1_thread);
  run_test("2_threads", test_2_threads);
  run_test("3_threads", test_3_threads);
  run_test("denormals", test_denormals);
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}
