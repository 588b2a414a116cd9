/* expect.h — the small harness of the test programs that run named test
 * functions: each returns 1 (passed) or 0, EXPECT returns 0 with the file,
 * line, condition and a message; main prints "N passed, N failed" from the
 * counts.  One translation unit per test program, so static state is fine. */
#ifndef PY_TEST_EXPECT_H
#define PY_TEST_EXPECT_H

#include <stdio.h>

static int n_pass, n_fail;

#define EXPECT(cond, ...)                                          \
  do {                                                             \
    if (!(cond)) {                                                 \
      fprintf(stderr, "  %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                \
      fputc('\n', stderr);                                         \
      return 0;                                                    \
    }                                                              \
  } while (0)

static void run_test(const char *name, int (*fn)(void)) {
  int ok = fn();
  printf("%s %s\n", ok ? "ok  " : "FAIL", name);
  fflush(stdout);
  ok ? n_pass++ : n_fail++;
}

#endif
