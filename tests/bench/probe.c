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

static void *fma_loop(void *arg) {
  vec acc[CHAINS], x = VSET(0.999999f), y = VSET(1e-7f);
  for (int c = 0; c < CHAINS; c++) acc[c] = VSET((float)c);
  for (int i = 0; i < FMA_ITERS; i++)
    for (int c = 0; c < CHAINS; c++) acc[c] = VFMA(acc[c], x, y);
  float out[LANES];
  memcpy(out, &acc[CHAINS - 1], sizeof out);
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
