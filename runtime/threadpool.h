/* threadpool.h — the persistent worker pool behind PyRun.parallel_for.
 *
 * rt_pool_parallel_for(pool, k, r, n) splits [0, n) into m = min(n, threads)
 * contiguous chunks whose boundaries depend only on n and m (the first n % m
 * chunks are one longer), calls k(r, lo, hi) once per chunk, the caller
 * running chunk 0 itself, and returns when every chunk has finished.  Writes
 * made by the kernels are visible to the caller on return.
 *
 * One dispatch at a time: a call made while the pool is busy (from a kernel,
 * or from another thread) runs k(r, 0, n) inline instead.  n <= 0 calls
 * nothing; a 1-thread pool or n == 1 runs inline without waking anyone. */
#ifndef RT_THREADPOOL_H
#define RT_THREADPOOL_H

#include <pthread.h>
#include <stdint.h>

#include "pythia_abi.h"

typedef struct RtPool RtPool;

/* n_threads >= 1 counts the calling thread, so n_threads - 1 pthreads are
 * started.  Returns NULL if n_threads < 1 or allocation/thread start fails. */
RtPool *rt_pool_new(int n_threads);
void rt_pool_free(RtPool *pool);
int rt_pool_threads(const RtPool *pool);

/* Starts fn(arg) on a thread whose stack is large enough for kernels,
 * whatever `ulimit -s` says (the pool's workers are started so too); 0 or
 * -1. */
int rt_thread_start(pthread_t *th, void *(*fn)(void *), void *arg);

/* Matches PyRun.parallel_for; pool is an RtPool * (NULL runs inline). */
void rt_pool_parallel_for(void *pool, PyKernel k, const PyRun *r, int64_t n);

#endif
