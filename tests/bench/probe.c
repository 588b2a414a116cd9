/* probe.c — this machine's limits, measured in the same run as a benchmark:
 *   read bandwidth: threads sum disjoint slices of a 2 GiB buffer with
 *   vector loads (best of several passes), in GB/s;
 *   FMA peak: threads run independent chains of vector FMAs (enough chains
 *   to hide latency), in GFLOP/s (2 flops per lane per FMA).
 * Prints one JSON line.  Build: cc -O2 -march=native -pthread probe.c -o probe */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

typedef struct {
  const float *p;
  size_t n;
  double sink;
} Slice;

static void *read_slice(void *arg) {
  Slice *s = arg;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 32 <= s->n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(s->p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(s->p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(s->p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(s->p + i + 24));
  }
  float out[8];
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  s->sink = out[0] + out[7];
  return NULL;
}

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

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 2;
  if (threads < 1 || threads > 64) threads = 2;
  size_t bytes = (size_t)2 << 30, n = bytes / sizeof(float);
  float *buf = aligned_alloc(64, bytes);
  for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 1023);
  pthread_t th[64];
  Slice sl[64];
  double best = 1e30;
  for (int rep = 0; rep < 5; rep++) {
    double t0 = now();
    for (int t = 0; t < threads; t++) {
      sl[t] = (Slice){buf + n / threads * t, n / threads, 0};
      pthread_create(&th[t], NULL, read_slice, &sl[t]);
    }
    for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
    double dt = now() - t0;
    if (dt < best) best = dt;
  }
  double gbs = bytes / best / 1e9;
  double sinks[64], t0 = now();
  for (int t = 0; t < threads; t++) pthread_create(&th[t], NULL, fma_loop, &sinks[t]);
  for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
  double dt = now() - t0;
  double gflops = 2.0 * LANES * CHAINS * (double)FMA_ITERS * threads / dt / 1e9;
  printf("{\"threads\": %d, \"read_gb_s\": %.2f, \"fma_gflop_s\": %.1f, \"vector_bits\": %d}\n", threads, gbs,
         gflops, LANES * 32);
  free(buf);
  return 0;
}
