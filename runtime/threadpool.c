/* threadpool.c — persistent pthread pool for PyRun.parallel_for (see
 * threadpool.h for the contract).
 *
 * Dispatch protocol.  The caller writes the job (k, r, n, m), sets
 * `pending` to the number of workers, then increments the generation counter
 * `gen`.  Each worker waits for `gen` to move past the last generation it
 * served, runs its chunk (if it has one), and decrements `pending`; the
 * caller runs chunk 0, then waits for `pending` to reach 0.  Every worker
 * acknowledges every generation, even with no chunk, so the caller never
 * rewrites the job while a late worker may still be reading it, and no
 * worker is ever more than one generation behind.
 *
 * Waiting is spin-then-sleep on both sides: spin with a CPU pause for up to
 * RT_POOL_SPIN_NS (kernels of one token arrive microseconds apart), then
 * block on a condition variable.  Wake-ups cannot be lost: the sleeper
 * announces itself (n_sleeping / caller_sleeping) with a seq_cst RMW or store
 * before re-reading the condition under the mutex, and the waker changes the
 * condition with a seq_cst RMW before reading the announcement; so either
 * the sleeper sees the new value or the waker sees the sleeper and signals
 * under the mutex, which it cannot take until the sleeper is waiting. */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <time.h>

#include "rt_alloc.h"

#define RT_POOL_SPIN_NS 200000 /* 0.2 ms: covers the gaps inside a forward pass */
/* Kernels keep up to ~2.5 MiB of stack buffers (matmul accumulators and
 * blocks); glibc's default thread stack follows `ulimit -s` (2 MiB when it
 * is unlimited), so every thread that runs kernels asks for this much. */
#define RT_KERNEL_STACK_BYTES ((size_t)16 << 20)

typedef struct {
  struct RtPool *pool;
  int id; /* 1 .. n_threads-1; the caller is 0 */
} RtWorker;

struct RtPool {
  int n_threads, n_started;
  pthread_t *th;
  RtWorker *workers;
  pthread_mutex_t mu;
  pthread_cond_t work_cv, done_cv;

  /* The job: written by the caller before `gen` moves, read by workers
   * after they see it move. */
  PyKernel k;
  const PyRun *r;
  int64_t n;
  int m;
  int stop;

  _Alignas(64) atomic_uint gen;
  _Alignas(64) atomic_uint pending;
  _Alignas(64) atomic_int n_sleeping;
  atomic_int caller_sleeping;
  atomic_int busy;
};

static void rt_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static int64_t rt_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spins until (*a == v) == stop_on_eq or RT_POOL_SPIN_NS pass; returns
 * whether the condition was met.  Yields now and then so that a pool with
 * more threads than cores still makes progress. */
static int rt_spin(atomic_uint *a, unsigned v, int stop_on_eq) {
  int64_t deadline = 0;
  for (unsigned i = 1;; i++) {
    if ((atomic_load_explicit(a, memory_order_acquire) == v) == stop_on_eq) return 1;
    rt_cpu_relax();
    if (i % 64 == 0) {
      int64_t now = rt_now_ns();
      if (deadline == 0)
        deadline = now + RT_POOL_SPIN_NS;
      else if (now > deadline)
        return 0;
      sched_yield();
    }
  }
}

/* Chunk c of m over [0, n): the first n % m chunks get one extra index. */
static void rt_chunk(int64_t n, int m, int c, int64_t *lo, int64_t *hi) {
  int64_t base = n / m, rem = n % m;
  *lo = c * base + (c < rem ? c : rem);
  *hi = *lo + base + (c < rem);
}

static void *rt_worker_main(void *arg) {
  RtWorker *w = arg;
  RtPool *p = w->pool;
  unsigned seen = 0;
  for (;;) {
    if (!rt_spin(&p->gen, seen, 0)) {
      pthread_mutex_lock(&p->mu);
      atomic_fetch_add(&p->n_sleeping, 1);
      while (atomic_load(&p->gen) == seen) pthread_cond_wait(&p->work_cv, &p->mu);
      atomic_fetch_sub(&p->n_sleeping, 1);
      pthread_mutex_unlock(&p->mu);
    }
    seen = atomic_load_explicit(&p->gen, memory_order_acquire);
    if (p->stop) return NULL;
    if (w->id < p->m) {
      int64_t lo, hi;
      rt_chunk(p->n, p->m, w->id, &lo, &hi);
      p->k(p->r, lo, hi);
    }
    if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->caller_sleeping)) {
      pthread_mutex_lock(&p->mu);
      pthread_cond_signal(&p->done_cv);
      pthread_mutex_unlock(&p->mu);
    }
  }
}

/* Publishes the job and wakes sleeping workers. */
static void rt_pool_kick(RtPool *p) {
  atomic_fetch_add(&p->gen, 1);
  if (atomic_load(&p->n_sleeping) > 0) {
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
  }
}

static void rt_pool_stop(RtPool *p) {
  p->stop = 1;
  rt_pool_kick(p);
  for (int i = 0; i < p->n_started; i++) pthread_join(p->th[i], NULL);
}

int rt_thread_start(pthread_t *th, void *(*fn)(void *), void *arg) {
  pthread_attr_t attr;
  if (pthread_attr_init(&attr) != 0) return -1;
  int rc = pthread_attr_setstacksize(&attr, RT_KERNEL_STACK_BYTES) || pthread_create(th, &attr, fn, arg) ? -1 : 0;
  pthread_attr_destroy(&attr);
  return rc;
}

RtPool *rt_pool_new(int n_threads) {
  if (n_threads < 1) return NULL;
  RtPool *p = rt_aligned_alloc(64, sizeof *p);
  if (!p) return NULL;
  *p = (RtPool){.n_threads = n_threads};
  atomic_init(&p->gen, 0);
  atomic_init(&p->pending, 0);
  atomic_init(&p->n_sleeping, 0);
  atomic_init(&p->caller_sleeping, 0);
  atomic_init(&p->busy, 0);
  int nw = n_threads - 1;
  p->th = rt_malloc((size_t)(nw ? nw : 1) * sizeof *p->th);
  p->workers = rt_malloc((size_t)(nw ? nw : 1) * sizeof *p->workers);
  if (!p->th || !p->workers) goto fail_mem;
  if (pthread_mutex_init(&p->mu, NULL) != 0) goto fail_mem;
  if (pthread_cond_init(&p->work_cv, NULL) != 0) goto fail_mu;
  if (pthread_cond_init(&p->done_cv, NULL) != 0) goto fail_work_cv;
  for (int i = 0; i < nw; i++) {
    p->workers[i] = (RtWorker){.pool = p, .id = i + 1};
    if (rt_thread_start(&p->th[i], rt_worker_main, &p->workers[i]) != 0) {
      rt_pool_free(p);
      return NULL;
    }
    p->n_started++;
  }
  return p;

fail_work_cv:
  pthread_cond_destroy(&p->work_cv);
fail_mu:
  pthread_mutex_destroy(&p->mu);
fail_mem:
  rt_free(p->th);
  rt_free(p->workers);
  rt_free(p);
  return NULL;
}

void rt_pool_free(RtPool *p) {
  if (!p) return;
  rt_pool_stop(p);
  pthread_cond_destroy(&p->done_cv);
  pthread_cond_destroy(&p->work_cv);
  pthread_mutex_destroy(&p->mu);
  rt_free(p->th);
  rt_free(p->workers);
  rt_free(p);
}

int rt_pool_threads(const RtPool *p) { return p ? p->n_threads : 1; }

void rt_pool_parallel_for(void *pool, PyKernel k, const PyRun *r, int64_t n) {
  RtPool *p = pool;
  if (n <= 0) return;
  int m = 1;
  if (p) m = n < p->n_threads ? (int)n : p->n_threads;
  if (m == 1 || atomic_exchange(&p->busy, 1)) {
    k(r, 0, n);
    return;
  }
  p->k = k;
  p->r = r;
  p->n = n;
  p->m = m;
  atomic_store_explicit(&p->pending, (unsigned)(p->n_threads - 1), memory_order_relaxed);
  rt_pool_kick(p);

  int64_t lo, hi;
  rt_chunk(n, m, 0, &lo, &hi);
  k(r, lo, hi);

  if (!rt_spin(&p->pending, 0, 1)) {
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->caller_sleeping, 1);
    while (atomic_load(&p->pending) != 0) pthread_cond_wait(&p->done_cv, &p->mu);
    atomic_store(&p->caller_sleeping, 0);
    pthread_mutex_unlock(&p->mu);
  }
  atomic_store_explicit(&p->busy, 0, memory_order_release);
}
