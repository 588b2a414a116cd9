/* rt_profile.c — time per op of py_forward, for pythia_gen --bench --profile.
 *
 * py_forward calls parallel_for exactly once per op, in graph order (the
 * ABI's promise), so the i-th call of a forward pass is op i of
 * py_model.op_names; the wrapper times each call with the monotonic clock
 * and sums per op and phase.  The timed span is the whole parallel_for: the
 * kernel on every thread plus the wait for the slowest, i.e. what the op
 * costs the forward pass. */
#include "rt_profile.h"

#include <string.h>
#include <time.h>

#include "rt_alloc.h"

struct RtProfile {
  void (*parallel_for)(void *, PyKernel, const PyRun *, int64_t);
  void *pool;
  int n_ops, call, phase;
  double *sec[2];    /* [phase][op] */
  long tokens[2];    /* tokens run per phase */
  const char **name; /* [op], pointing into the copy below */
  int *name_len;
  char *names;
};

static double rt_clock(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

RtProfile *rt_profile_new(void (*parallel_for)(void *, PyKernel, const PyRun *, int64_t), void *pool) {
  RtProfile *p = rt_malloc(sizeof *p);
  if (!p) return NULL;
  int n = py_model.n_ops > 0 ? py_model.n_ops : 1;
  *p = (RtProfile){.parallel_for = parallel_for, .pool = pool, .n_ops = py_model.n_ops};
  p->sec[0] = rt_malloc(sizeof(double) * (size_t)n * 2);
  p->name = rt_malloc(sizeof(char *) * (size_t)n);
  p->name_len = rt_malloc(sizeof(int) * (size_t)n);
  p->names = rt_malloc(strlen(py_model.op_names) + 1);
  if (!p->sec[0] || !p->name || !p->name_len || !p->names) {
    rt_profile_free(p);
    return NULL;
  }
  p->sec[1] = p->sec[0] + n;
  memset(p->sec[0], 0, sizeof(double) * (size_t)n * 2);
  strcpy(p->names, py_model.op_names);
  const char *s = p->names;
  for (int i = 0; i < p->n_ops; i++) {
    const char *e = strchr(s, '\n');
    int len = e ? (int)(e - s) : (int)strlen(s);
    p->name[i] = s, p->name_len[i] = len;
    s += len + (e != NULL);
  }
  return p;
}

void rt_profile_free(RtProfile *p) {
  if (!p) return;
  rt_free(p->sec[0]);
  rt_free(p->name);
  rt_free(p->name_len);
  rt_free(p->names);
  rt_free(p);
}

void rt_profile_parallel_for(void *profile, PyKernel k, const PyRun *r, int64_t n) {
  RtProfile *p = profile;
  double t0 = rt_clock();
  p->parallel_for(p->pool, k, r, n);
  if (p->n_ops > 0) p->sec[p->phase][p->call % p->n_ops] += rt_clock() - t0;
  p->call++;
}

void rt_profile_phase(RtProfile *p, int phase, int tokens) {
  p->phase = phase;
  p->tokens[phase] += tokens;
}

void rt_profile_print(const RtProfile *p, FILE *f) {
  double tot[2] = {0, 0};
  for (int ph = 0; ph < 2; ph++)
    for (int i = 0; i < p->n_ops; i++) tot[ph] += p->sec[ph][i];
  long tk[2] = {p->tokens[0] > 0 ? p->tokens[0] : 1, p->tokens[1] > 0 ? p->tokens[1] : 1};
  fprintf(f, "%-4s %-32s %14s %8s %14s %8s\n", "op", "kind %out", "prefill us/tok", "prefill%", "decode us/tok",
          "decode%");
  for (int i = 0; i < p->n_ops; i++)
    fprintf(f, "%-4d %-32.*s %14.2f %7.1f%% %14.2f %7.1f%%\n", i, p->name_len[i], p->name[i],
            1e6 * p->sec[0][i] / (double)tk[0], tot[0] > 0 ? 100 * p->sec[0][i] / tot[0] : 0,
            1e6 * p->sec[1][i] / (double)tk[1], tot[1] > 0 ? 100 * p->sec[1][i] / tot[1] : 0);
  fprintf(f, "%-4s %-32s %14.2f %7.1f%% %14.2f %7.1f%%\n", "", "total", 1e6 * tot[0] / (double)tk[0], 100.0,
          1e6 * tot[1] / (double)tk[1], 100.0);
}
