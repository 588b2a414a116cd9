/* check.h — the harness of the C tests: CHECK/CHECKF/report count passes
 * and print "<TEST_FILE>:<line>: FAIL: <what>" with an optional detail line
 * (CHECKF: printf-formatted), and mkdir_p makes a scratch folder (or ends
 * the test: a setup failure is not a test result).  Define TEST_FILE before
 * including; one translation unit per test program, so static state is
 * fine. */
#ifndef PY_TEST_CHECK_H
#define PY_TEST_CHECK_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int n_pass, n_fail;

__attribute__((unused)) static void report(bool ok, int line, const char *what, const char *detail) {
  if (ok) {
    n_pass++;
    return;
  }
  n_fail++;
  fprintf(stderr, TEST_FILE ":%d: FAIL: %s%s%s\n", line, what, detail ? "\n    " : "", detail ? detail : "");
}
#define CHECK(c) report((c), __LINE__, #c, NULL)

__attribute__((unused, format(printf, 4, 5))) static void reportf(bool ok, int line, const char *what, const char *fmt, ...) {
  if (ok) {
    n_pass++;
    return;
  }
  n_fail++;
  fprintf(stderr, TEST_FILE ":%d: FAIL: %s\n    ", line, what);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}
#define CHECKF(c, ...) reportf((c), __LINE__, #c, __VA_ARGS__)

__attribute__((unused)) static void die(const char *what, const char *path) {
  fprintf(stderr, TEST_FILE ": %s %s: %s\n", what, path, strerror(errno));
  exit(1);
}

__attribute__((unused)) static void mkdir_p(const char *path) {
  char buf[1024];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      mkdir(buf, 0755);
      *p = '/';
    }
  if (mkdir(buf, 0755) != 0 && errno != EEXIST) die("cannot create", buf);
}

#endif
