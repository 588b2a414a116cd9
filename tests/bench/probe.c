/* probe.c — this machine's limits, measured in the same run as a benchmark:
 *   read bandwidth: threads sum disjoint slices of a 2 GiB buffer with
 *   vector loads, each slice read as 1, 2, 4 or 8 side-by-side streams;
 *   the best of all (5 passes each), in GB/s, and the 1-stream figure;
 *   also the median pass of the best stream count: the best pass is the
 *   machine's limit in its best ~60 ms window, the median what it keeps up
 *   over the second the probe runs (typically 5-10 % less);
 *   FMA peak: threads run independent chains of vector FMAs (enough chains
 *   to hide latency), in GFLOP/s (2 flops per lane per FMA).
 * Prints one JSON line.  Build: cc -O2 -march=native -pthread probe.c -o probe */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "../../runtime/rt_sum_streams.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

typedef struct {
  const float *p;
  size_t n;
  int streams;
  double sink;
} Slice;

#ifdef __AVX512F__
typedef __m512 vec;
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VSET(x) _mm512_set1_ps(x)
#define LANES 16
#else
typedef __m256 vec;
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VSET(x) _mm256_set1_ps(x)
#define LANES 8
#endif

/* Sums the slice as `streams` equal sub-slices read side by side: one
 * sequential stream per core leaves the memory system idle part of the
 * time (the hardware prefetcher keeps few lines in flight per stream);
 * kernels that read several streams at once get more.  The loop is the
 * runtime's (rt_sum_streams.h), so this probe and pythia_gen
 * --probe-bandwidth read the same way. */
static void *read_slice(void *arg) {
  Slice *s = arg;
  s->sink = rt_sum_streams((const uint8_t *)s->p, s->n * sizeof(float), s->streams);
  return NULL;
}

enum { CHAINS = 12, FMA_ITERS = 20000000 };

/* Twelve independent FMA chains in named registers (an array would be kept
 * in memory by the compiler and measure store-forwarding instead). */
static void *fma_loop(void *arg) {
  vec x = VSET(0.999999f), y = VSET(1e-7f);
  vec a0 = VSET(0), a1 = VSET(1), a2 = VSET(2), a3 = VSET(3), a4 = VSET(4), a5 = VSET(5);
  vec a6 = VSET(6), a7 = VSET(7), a8 = VSET(8), a9 = VSET(9), a10 = VSET(10), a11 = VSET(11);
  for (int i = 0; i < FMA_ITERS; i++) {
    a0 = VFMA(a0, x, y), a1 = VFMA(a1, x, y), a2 = VFMA(a2, x, y), a3 = VFMA(a3, x, y);
    a4 = VFMA(a4, x, y), a5 = VFMA(a5, x, y), a6 = VFMA(a6, x, y), a7 = VFMA(a7, x, y);
    a8 = VFMA(a8, x, y), a9 = VFMA(a9, x, y), a10 = VFMA(a10, x, y), a11 = VFMA(a11, x, y);
    __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5));
  }
  vec s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
  float out[LANES];
  memcpy(out, &s, sizeof out);
  *(double *)arg = out[0];
  return NULL;
}

/* The median of five times (sorts them). */
static double median5(double *t) {
  for (int i = 1; i < 5; i++)
    for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
      double x = t[j];
      t[j] = t[j - 1], t[j - 1] = x;
    }
  return t[2];
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 2;
  if (threads < 1 || threads > 64) threads = 2;
  size_t bytes = (size_t)2 << 30, n = bytes / sizeof(float);
  /* in 2 MiB pages where the kernel gives them, as the weights are mapped */
  float *buf = aligned_alloc((size_t)2 << 20, bytes);
  if (!buf) return 1;
  madvise(buf, bytes, MADV_HUGEPAGE);
  for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 1023);
  pthread_t th[64];
  Slice sl[64];
  /* best of 5 passes, for 1, 2, 4 and 8 streams per thread */
  double best_gbs = 0, one_stream_gbs = 0, median_gbs = 0;
  int best_streams = 1;
  for (int streams = 1; streams <= 8; streams *= 2) {
    double best = 1e30, dts[5];
    for (int rep = 0; rep < 5; rep++) {
      double t0 = now();
      for (int t = 0; t < threads; t++) {
        sl[t] = (Slice){buf + n / threads * t, n / threads, streams, 0};
        pthread_create(&th[t], NULL, read_slice, &sl[t]);
      }
      for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
      double dt = now() - t0;
      dts[rep] = dt;
      if (dt < best) best = dt;
    }
    double gbs = bytes / best / 1e9;
    if (streams == 1) one_stream_gbs = gbs;
    if (gbs > best_gbs) best_gbs = gbs, best_streams = streams, median_gbs = bytes / median5(dts) / 1e9;
  }
  double sinks[64], t0 = now();
  for (int t = 0; t < threads; t++) pthread_create(&th[t], NULL, fma_loop, &sinks[t]);
  for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
  double dt = now() - t0;
  double gflops = 2.0 * LANES * CHAINS * (double)FMA_ITERS * threads / dt / 1e9;
  printf("{\"threads\": %d, \"read_gb_s\": %.2f, \"read_streams\": %d, \"read_gb_s_1_stream\": %.2f, \"read_gb_s_median\": %.2f, "
         "\"fma_gflop_s\": %.1f, \"vector_bits\": %d}\n",
         threads, best_gbs, best_streams, one_stream_gbs, median_gbs, gflops, LANES * 32);
  free(buf);
  return 0;
}
