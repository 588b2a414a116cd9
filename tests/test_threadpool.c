/* test_threadpool.c — runtime/threadpool.c: every index is covered exactly
 * once with deterministic chunk boundaries, for many n and 1..4 threads;
 * 100k back-to-back dispatches finish (no lost wake-up, no deadlock); the
 * sleep/wake paths, nested and concurrent calls, and allocation failure. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rt_alloc.h"
#include "threadpool.h"

#include "expect.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  nanosleep(&ts, NULL);
}

/* The kernel's context: PyRun first, so a const PyRun * is also a Ctx *. */
typedef struct {
  PyRun run;
  int32_t *hits;
  atomic_int n_chunks;
  int64_t lo[16], hi[16];
  atomic_long sum;
  long slow_us; /* chunks that do not start at 0 sleep this long */
  RtPool *pool; /* for the nested-call test */
} Ctx;

static void k_cover(const PyRun *r, int64_t lo, int64_t hi) {
  Ctx *c = (Ctx *)r;
  int slot = atomic_fetch_add(&c->n_chunks, 1);
  if (slot < 16) {
    c->lo[slot] = lo;
    c->hi[slot] = hi;
  }
  if (c->slow_us && lo > 0) sleep_us(c->slow_us);
  for (int64_t i = lo; i < hi; i++) c->hits[i]++;
}

static void k_sum(const PyRun *r, int64_t lo, int64_t hi) {
  Ctx *c = (Ctx *)r;
  long s = 0;
  for (int64_t i = lo; i < hi; i++) s += i + 1;
  atomic_fetch_add_explicit(&c->sum, s, memory_order_relaxed);
}

static void ctx_reset(Ctx *c) {
  atomic_store(&c->n_chunks, 0);
  atomic_store(&c->sum, 0);
  memset(c->lo, 0, sizeof c->lo);
  memset(c->hi, 0, sizeof c->hi);
}

/* Checks hits[0, n) are all 1 and the recorded chunks are exactly the
 * documented split: m = min(n, threads) chunks, the first n % m one longer. */
static int check_split(Ctx *c, int64_t n, int threads) {
  for (int64_t i = 0; i < n; i++) EXPECT(c->hits[i] == 1, "n=%lld T=%d: index %lld hit %d times", (long long)n, threads, (long long)i, c->hits[i]);
  int got = atomic_load(&c->n_chunks);
  int m = n == 0 ? 0 : (n < threads ? (int)n : threads);
  EXPECT(got == m, "n=%lld T=%d: %d chunks, expected %d", (long long)n, threads, got, m);
  for (int ch = 0; ch < m; ch++) {
    int64_t base = n / m, rem = n % m;
    int64_t lo = ch * base + (ch < rem ? ch : rem), hi = lo + base + (ch < rem);
    int found = 0;
    for (int j = 0; j < got; j++) found += c->lo[j] == lo && c->hi[j] == hi;
    EXPECT(found == 1, "n=%lld T=%d: chunk [%lld,%lld) seen %d times", (long long)n, threads, (long long)lo, (long long)hi, found);
  }
  return 1;
}

static int test_cover_every_index_once(void) {
  static const int64_t ns[] = {0, 1, 2, 3, 4, 5, 7, 8, 63, 64, 65, 1000, 12345, 1 << 20};
  int64_t nmax = 1 << 20;
  Ctx c = {0};
  c.hits = calloc((size_t)nmax, sizeof *c.hits);
  EXPECT(c.hits, "out of memory");
  for (int t = 1; t <= 4; t++) {
    RtPool *p = rt_pool_new(t);
    EXPECT(p && rt_pool_threads(p) == t, "rt_pool_new(%d)", t);
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++) {
      for (int rep = 0; rep < 3; rep++) { /* boundaries must repeat exactly */
        memset(c.hits, 0, (size_t)nmax * sizeof *c.hits);
        ctx_reset(&c);
        rt_pool_parallel_for(p, k_cover, &c.run, ns[i]);
        if (!check_split(&c, ns[i], t)) {
          rt_pool_free(p);
          free(c.hits);
          return 0;
        }
      }
    }
    rt_pool_free(p);
  }
  free(c.hits);
  return 1;
}

static int test_bad_thread_count(void) {
  EXPECT(rt_pool_new(0) == NULL, "0 threads accepted");
  EXPECT(rt_pool_new(-3) == NULL, "-3 threads accepted");
  rt_pool_free(NULL);
  return 1;
}

static int test_null_pool_runs_inline(void) {
  int32_t hits[10] = {0};
  Ctx c = {0};
  c.hits = hits;
  rt_pool_parallel_for(NULL, k_cover, &c.run, 10);
  EXPECT(check_split(&c, 10, 1), "NULL pool");
  return 1;
}

static int test_matches_pyrun_field(void) {
  /* Compile-time check that the function fits the ABI's slot. */
  PyRun r = {0};
  r.parallel_for = rt_pool_parallel_for;
  RtPool *p = rt_pool_new(2);
  EXPECT(p, "rt_pool_new(2)");
  r.pool = p;
  Ctx c = {.run = r};
  r.parallel_for(r.pool, k_sum, &c.run, 1000);
  rt_pool_free(p);
  EXPECT(atomic_load(&c.sum) == 1000L * 1001 / 2, "sum %ld", atomic_load(&c.sum));
  return 1;
}

/* 100k dispatches per thread count: back to back, as the kernels of a
 * forward pass arrive.  A lost wake-up would hang here (ctest's timeout). */
static int test_many_dispatches(void) {
  const int n_disp = 100000;
  for (int t = 1; t <= 4; t++) {
    RtPool *p = rt_pool_new(t);
    EXPECT(p, "rt_pool_new(%d)", t);
    Ctx c = {0};
    double t0 = now_s();
    long want = 0;
    for (int i = 0; i < n_disp; i++) {
      int64_t n = 1 + i % 37;
      want += n * (n + 1) / 2;
      rt_pool_parallel_for(p, k_sum, &c.run, n);
    }
    double dt = now_s() - t0;
    rt_pool_free(p);
    printf("     %d threads: %d dispatches in %.3f s (%.2f us each)\n", t, n_disp, dt, dt / n_disp * 1e6);
    EXPECT(atomic_load(&c.sum) == want, "T=%d: sum %ld, expected %ld", t, atomic_load(&c.sum), want);
  }
  return 1;
}

/* Gaps longer than the spin budget put workers to sleep before each
 * dispatch; slow worker chunks put the caller to sleep while it waits. */
static int test_sleep_and_wake_paths(void) {
  int32_t hits[64];
  for (int t = 2; t <= 4; t++) {
    RtPool *p = rt_pool_new(t);
    EXPECT(p, "rt_pool_new(%d)", t);
    Ctx c = {0};
    c.hits = hits;
    for (int i = 0; i < 60; i++) {
      memset(hits, 0, sizeof hits);
      ctx_reset(&c);
      c.slow_us = i % 2 ? 2000 : 0;
      sleep_us(1000);
      rt_pool_parallel_for(p, k_cover, &c.run, 64);
      if (!check_split(&c, 64, t)) {
        rt_pool_free(p);
        return 0;
      }
    }
    rt_pool_free(p);
  }
  return 1;
}

/* Gaps of 0..400 us straddle the 200 us spin budget, so workers are often
 * between spinning and sleeping when the next dispatch arrives. */
static int test_gaps_around_spin_budget(void) {
  for (int t = 2; t <= 3; t++) {
    RtPool *p = rt_pool_new(t);
    EXPECT(p, "rt_pool_new(%d)", t);
    Ctx c = {0};
    long want = 0;
    uint32_t x = 1;
    for (int i = 0; i < 400; i++) {
      x = x * 1103515245u + 12345u;
      sleep_us((x >> 16) % 400);
      want += 16 * 17 / 2;
      rt_pool_parallel_for(p, k_sum, &c.run, 16);
    }
    rt_pool_free(p);
    EXPECT(atomic_load(&c.sum) == want, "T=%d: sum %ld, expected %ld", t, atomic_load(&c.sum), want);
  }
  return 1;
}

static void k_nested(const PyRun *r, int64_t lo, int64_t hi) {
  Ctx *c = (Ctx *)r;
  /* Each outer index i owns hits[i*8, i*8+8): the inner call covers it. */
  for (int64_t i = lo; i < hi; i++) {
    Ctx inner = {0};
    inner.hits = c->hits + i * 8;
    rt_pool_parallel_for(c->pool, k_cover, &inner.run, 8);
    if (atomic_load(&inner.n_chunks) != 1) atomic_fetch_add(&c->sum, 1000000); /* must run inline */
  }
}

static int test_nested_call_runs_inline(void) {
  int32_t hits[16 * 8] = {0};
  RtPool *p = rt_pool_new(3);
  EXPECT(p, "rt_pool_new(3)");
  Ctx c = {0};
  c.hits = hits;
  c.pool = p;
  rt_pool_parallel_for(p, k_nested, &c.run, 16);
  rt_pool_free(p);
  EXPECT(atomic_load(&c.sum) == 0, "an inner call was split");
  for (int i = 0; i < 16 * 8; i++) EXPECT(hits[i] == 1, "index %d hit %d times", i, hits[i]);
  return 1;
}

typedef struct {
  RtPool *pool;
  long want, got;
} Racer;

static void *race_main(void *arg) {
  Racer *rc = arg;
  Ctx c = {0};
  for (int i = 0; i < 20000; i++) {
    rc->want += 100L * 101 / 2;
    rt_pool_parallel_for(rc->pool, k_sum, &c.run, 100);
  }
  rc->got = atomic_load(&c.sum);
  return NULL;
}

/* Two threads dispatching on one pool: one of them runs inline each time. */
static int test_concurrent_callers(void) {
  RtPool *p = rt_pool_new(2);
  EXPECT(p, "rt_pool_new(2)");
  Racer a = {p, 0, 0}, b = {p, 0, 0};
  pthread_t ta, tb;
  EXPECT(pthread_create(&ta, NULL, race_main, &a) == 0, "pthread_create");
  EXPECT(pthread_create(&tb, NULL, race_main, &b) == 0, "pthread_create");
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  rt_pool_free(p);
  EXPECT(a.got == a.want && b.got == b.want, "sums %ld/%ld and %ld/%ld", a.got, a.want, b.got, b.want);
  return 1;
}

static int test_alloc_failure(void) {
  int failures = 0;
  for (long f = 0; f < 20; f++) {
    rt_set_alloc_fail_after(f);
    RtPool *p = rt_pool_new(3);
    rt_set_alloc_fail_after(-1);
    if (!p) {
      failures++;
      continue;
    }
    Ctx c = {0};
    rt_pool_parallel_for(p, k_sum, &c.run, 10);
    rt_pool_free(p);
    EXPECT(atomic_load(&c.sum) == 55, "pool made after %ld allocations is broken", f);
    EXPECT(failures > 0, "no allocation was ever refused");
    return 1;
  }
  EXPECT(0, "rt_pool_new never succeeded within 20 allocations");
  return 0;
}

int main(void) {
  double t0 = now_s();
  run_test("cover_every_index_once", test_cover_every_index_once);
  run_test("bad_thread_count", test_bad_thread_count);
  run_test("null_pool_runs_inline", test_null_pool_runs_inline);
  run_test("matches_pyrun_field", test_matches_pyrun_field);
  run_test("many_dispatches", test_many_dispatches);
  run_test("sleep_and_wake_paths", test_sleep_and_wake_paths);
  run_test("gaps_around_spin_budget", test_gaps_around_spin_budget);
  run_test("nested_call_runs_inline", test_nested_call_runs_inline);
  run_test("concurrent_callers", test_concurrent_callers);
  run_test("alloc_failure", test_alloc_failure);
  printf("(%.2f s)\n%d passed, %d failed\n", now_s() - t0, n_pass, n_fail);
  return n_fail ? 1 : 0;
}
