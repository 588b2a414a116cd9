/* rt_alloc.c — the runtime's one allocator (see rt_alloc.h).  It owns the
 * failure-injection budget: -1 means "never fail", n >= 0 means "n more
 * allocations succeed".  The budget is atomic so that allocations made from
 * several threads still fail at exactly one well-defined point. */
#include "rt_alloc.h"

#include <stdatomic.h>
#include <stdlib.h>

static _Atomic long fail_after = -1;

/* Takes one allocation from the budget; false when injection says fail. */
static int rt_alloc_allowed(void) {
  long n = atomic_load(&fail_after);
  for (;;) {
    if (n < 0) return 1;
    if (n == 0) return 0;
    if (atomic_compare_exchange_weak(&fail_after, &n, n - 1)) return 1;
  }
}

void rt_set_alloc_fail_after(long n) { atomic_store(&fail_after, n < 0 ? -1 : n); }

void *rt_malloc(size_t n) {
  if (!rt_alloc_allowed()) return NULL;
  return malloc(n ? n : 1); /* never NULL for a successful zero-size request */
}

void *rt_calloc(size_t count, size_t size) {
  if (!rt_alloc_allowed()) return NULL;
  if (count == 0 || size == 0) count = size = 1;
  return calloc(count, size); /* calloc itself rejects count*size overflow */
}

void *rt_aligned_alloc(size_t align, size_t n) {
  if (!rt_alloc_allowed()) return NULL;
  void *p = NULL;
  if (posix_memalign(&p, align, n ? n : 1) != 0) return NULL;
  return p;
}

void rt_free(void *p) { free(p); }
