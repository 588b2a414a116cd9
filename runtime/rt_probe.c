/* rt_probe.c — a plain read of the weight blob, to measure what bandwidth the
 * machine gives in the same second as a decode token gets its own.
 *
 * This machine's read bandwidth moves by the second: bursts of 2-12 s at
 * 50-60 GB/s in minutes that otherwise read 30-35 (docs/benchmarks.md).  A
 * probe run before and after a 30 s decode run sees a different machine from
 * the run itself; one interleaved with the tokens sees the same.
 *
 * Each thread sums its share with rt_sum_streams (rt_sum_streams.h, the loop
 * of tests/bench/probe.c too), as 2 parts side by side.  Denormals are
 * flushed while it runs (the weights' bits read as f32 can be any pattern).
 * The sum is returned, so no read can be optimised away and a test can check
 * that each byte is read exactly once.  The loop is compiled three times,
 * for AVX-512, AVX2 and the baseline, and the widest the CPU runs is picked:
 * the runtime itself is built for any x86-64.  A share is whole 4 KiB
 * blocks, so its two halves are whole 1 KiB steps and every byte counted is
 * read. */
#include "rt_probe.h"

#include <stdatomic.h>
#include <xmmintrin.h>

#include "rt_sum_streams.h"

/* Each thread reads its share as 2 halves side by side: in fast seconds
 * that read ~2 % more than 1 stream, 4 read 10-20 % less (Zen 4, 2 threads,
 * 1 GiB, 80 passes each, interleaved). */
enum { STREAMS = 2 };

__attribute__((target("avx512f"))) static double sum_avx512(const uint8_t *p, size_t n, int s) {
  return rt_sum_streams(p, n, s);
}
__attribute__((target("avx2"))) static double sum_avx2(const uint8_t *p, size_t n, int s) {
  return rt_sum_streams(p, n, s);
}
static double sum_baseline(const uint8_t *p, size_t n, int s) {
  return rt_sum_streams(p, n, s);
}

/* The kernel's context: PyRun first, so a const PyRun * is also a ProbeRun *. */
typedef struct {
  PyRun run; /* run.weights: the bytes read */
  _Atomic double sum;
} ProbeRun;

/* PyKernel over blocks [lo, hi) of r->weights. */
static void read_blocks(const PyRun *r, int64_t lo, int64_t hi) {
  ProbeRun *pr = (ProbeRun *)r;
  const uint8_t *p = r->weights + (size_t)lo * RT_PROBE_BLOCK;
  size_t n = (size_t)(hi - lo) * RT_PROBE_BLOCK;
  const unsigned csr = _mm_getcsr();
  _mm_setcsr(csr | 0x8040); /* flush-to-zero, denormals-are-zero */
  __builtin_cpu_init();
  double s = __builtin_cpu_supports("avx512f") ? sum_avx512(p, n, STREAMS)
             : __builtin_cpu_supports("avx2")  ? sum_avx2(p, n, STREAMS)
                                               : sum_baseline(p, n, STREAMS);
  _mm_setcsr(csr);
  double old = atomic_load(&pr->sum);
  while (!atomic_compare_exchange_weak(&pr->sum, &old, old + s)) {
  }
}

size_t rt_probe_read(RtPool *pool, const uint8_t *p, size_t bytes, double *sum) {
  int64_t blocks = (int64_t)(bytes / RT_PROBE_BLOCK);
  ProbeRun pr = {.run = {.weights = p}};
  atomic_init(&pr.sum, 0.0);
  rt_pool_parallel_for(pool, read_blocks, &pr.run, blocks);
  if (sum) *sum = atomic_load(&pr.sum);
  return (size_t)blocks * RT_PROBE_BLOCK;
}
