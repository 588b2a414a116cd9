/* base.h — the few things every compiler stage shares: an arena for compiler
 * memory, an error record carried up to the caller, and an assert that names
 * file and line.
 *
 * Invariants: arena memory is never freed piecemeal; one arena_free() releases
 * all of it.  An Err holds the first error set on it; callers return -1 after
 * err_set() and only the driver decides to exit. */
#ifndef PY_BASE_H
#define PY_BASE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct ArenaBlock ArenaBlock;
typedef struct {
  ArenaBlock *head;
  size_t used_total;
} Arena;

void *arena_alloc(Arena *a, size_t n);          /* zeroed, 16-byte aligned */
char *arena_strdup(Arena *a, const char *s);
char *arena_printf(Arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void arena_free(Arena *a);

typedef struct {
  int set;
  char msg[1024];
} Err;

/* Records the message (if none is recorded yet) and returns -1. */
int err_set(Err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define PY_ASSERT(c)                                                         \
  do {                                                                       \
    if (!(c)) {                                                              \
      fprintf(stderr, "%s:%d: internal error: assertion '%s' failed\n",      \
              __FILE__, __LINE__, #c);                                       \
      abort();                                                               \
    }                                                                        \
  } while (0)

#endif
