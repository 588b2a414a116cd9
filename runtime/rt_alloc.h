/* rt_alloc.h — the runtime's single allocation hook (Lua's lua_Alloc idea).
 * Every runtime allocation goes through these functions so tests can make
 * the N+1-th allocation fail (SQLite's habit) and check that each caller
 * returns NULL/an error instead of crashing.  Memory from rt_malloc,
 * rt_calloc and rt_aligned_alloc is released with rt_free. */
#ifndef RT_ALLOC_H
#define RT_ALLOC_H

#include <stddef.h>

void *rt_malloc(size_t n);
void *rt_calloc(size_t count, size_t size);
/* align: a power of two that is a multiple of sizeof(void *). */
void *rt_aligned_alloc(size_t align, size_t n);
void rt_free(void *p);

/* Tests only: after n more successful allocations every allocation returns
 * NULL, until called again; n = -1 (the start-up state) never fails. */
void rt_set_alloc_fail_after(long n);

#endif
