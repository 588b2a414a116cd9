/* test_sampler.c — runtime/sampler.c against a literal, unoptimised
 * reference of the chain (penalties -> top-k -> top-p -> min-p ->
 * temperature -> softmax): sampled frequencies must pass a chi-square
 * goodness-of-fit test at p >= 1e-4, and every filter is checked on its edge
 * cases.  Seeds are fixed, so every run draws the same numbers. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rt_alloc.h"
#include "sampler.h"

#include "expect.h"

/* ---- chi-square ---------------------------------------------------------- */

/* Regularised upper incomplete gamma Q(a, x): the power series of P for
 * x < a + 1, else the continued fraction of Q evaluated by modified Lentz. */
static double gamma_q(double a, double x) {
  if (x <= 0) return 1;
  double log_pre = -x + a * log(x) - lgamma(a);
  if (x < a + 1) {
    double term = 1 / a, sum = term;
    for (int n = 1; n < 100000 && term > sum * 1e-17; n++) {
      term *= x / (a + n);
      sum += term;
    }
    return 1 - exp(log_pre) * sum;
  }
  const double tiny = 1e-300;
  double b = x + 1 - a, c = 1 / tiny, d = 1 / b, f = d;
  for (int n = 1; n < 100000; n++) {
    double an = -n * (n - a);
    b += 2;
    d = an * d + b;
    if (fabs(d) < tiny) d = tiny;
    c = b + an / c;
    if (fabs(c) < tiny) c = tiny;
    d = 1 / d;
    double delta = c * d;
    f *= delta;
    if (fabs(delta - 1) < 1e-16) break;
  }
  return exp(log_pre) * f;
}

/* P(X >= x) for X ~ chi-square(df). */
static double chi2_pvalue(int df, double x) { return gamma_q(df / 2.0, x / 2.0); }

/* The x with chi2_pvalue(df, x) == alpha, by bisection (the p-value falls
 * monotonically in x). */
static double chi2_critical(int df, double alpha) {
  double lo = 0, hi = df + 10;
  while (chi2_pvalue(df, hi) > alpha) hi *= 2;
  for (int i = 0; i < 200; i++) {
    double mid = (lo + hi) / 2;
    if (chi2_pvalue(df, mid) > alpha)
      lo = mid;
    else
      hi = mid;
  }
  return (lo + hi) / 2;
}

#define ALPHA 1e-4

/* Goodness of fit of counts[0, n) (N draws) to probs[0, n).  Ids of
 * probability 0 must never be drawn; cells expecting fewer than 5 draws are
 * pooled into one cell, as the chi-square approximation needs. */
static int chi2_fits(const char *label, const long *counts, const double *probs, int n, long N) {
  double stat = 0, pool_e = 0;
  long pool_o = 0;
  int cells = 0;
  for (int i = 0; i < n; i++) {
    if (probs[i] == 0) {
      EXPECT(counts[i] == 0, "%s: id %d has probability 0 but was drawn %ld times", label, i, counts[i]);
      continue;
    }
    double e = probs[i] * N;
    if (e < 5) {
      pool_e += e;
      pool_o += counts[i];
      continue;
    }
    stat += (counts[i] - e) * (counts[i] - e) / e;
    cells++;
  }
  if (pool_e > 0) {
    stat += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
    cells++;
  }
  int df = cells - 1;
  if (df < 1) return 1; /* one cell: the zero-probability check is the test */
  double crit = chi2_critical(df, ALPHA), p = chi2_pvalue(df, stat);
  printf("     %-28s chi2 %8.2f  df %2d  crit %6.2f  p %.3g\n", label, stat, df, crit, p);
  EXPECT(stat <= crit, "%s: chi2 %.2f > %.2f (df %d, p %.3g < %g)", label, stat, crit, df, p, ALPHA);
  return 1;
}

/* ---- the reference chain, written the obvious way ------------------------ */

static const double *ref_sort_key;
static int ref_cmp(const void *a, const void *b) {
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  if (ref_sort_key[x] != ref_sort_key[y]) return ref_sort_key[x] > ref_sort_key[y] ? -1 : 1;
  return x < y ? -1 : 1;
}

/* Softmax of l over ids[0, m) into p[ids[j]]. */
static void ref_softmax(const double *l, const int32_t *ids, int m, double scale, double *p) {
  double mx = -INFINITY, z = 0;
  for (int j = 0; j < m; j++) mx = fmax(mx, l[ids[j]]);
  for (int j = 0; j < m; j++) z += exp((l[ids[j]] - mx) * scale);
  for (int j = 0; j < m; j++) p[ids[j]] = exp((l[ids[j]] - mx) * scale) / z;
}

/* Probability of each id in [0, n_valid) after the whole chain, with
 * hist[0, n_hist) accepted beforehand. */
static void ref_probs(const RtSamplerParams *sp, const float *logits, int n_valid, const int32_t *hist, int n_hist,
                      double *out) {
  double *l = calloc((size_t)n_valid, sizeof *l), *p = calloc((size_t)n_valid, sizeof *p);
  int32_t *ids = calloc((size_t)n_valid, sizeof *ids);
  int *cnt = calloc((size_t)n_valid, sizeof *cnt);
  int from = sp->repeat_last_n < 0 ? 0 : (n_hist > sp->repeat_last_n ? n_hist - sp->repeat_last_n : 0);
  for (int h = from; h < n_hist; h++) cnt[hist[h]]++;
  int m = 0;
  for (int i = 0; i < n_valid; i++) {
    double x = isnan(logits[i]) ? -INFINITY : logits[i];
    if (cnt[i] > 0 && x > -INFINITY) {
      x = x > 0 ? x / sp->repeat_penalty : x * sp->repeat_penalty;
      x -= cnt[i] * (double)sp->frequency_penalty + sp->presence_penalty;
    }
    l[i] = x;
    out[i] = 0;
    if (x > -INFINITY) ids[m++] = i;
  }
  ref_sort_key = l;
  qsort(ids, (size_t)m, sizeof *ids, ref_cmp);
  if (sp->top_k > 0 && sp->top_k < m) m = sp->top_k;
  if (sp->top_p < 1) {
    ref_softmax(l, ids, m, 1, p);
    double cum = 0;
    for (int j = 0; j < m; j++) {
      cum += p[ids[j]];
      if (cum >= sp->top_p) {
        m = j + 1;
        break;
      }
    }
  }
  if (sp->min_p > 0) {
    ref_softmax(l, ids, m, 1, p);
    double pmax = p[ids[0]];
    int keep = 0;
    for (int j = 0; j < m; j++)
      if (p[ids[j]] >= sp->min_p * pmax) ids[keep++] = ids[j];
    m = keep;
  }
  ref_softmax(l, ids, m, 1 / sp->temp, p);
  for (int j = 0; j < m; j++) out[ids[j]] = p[ids[j]];
  free(l);
  free(p);
  free(ids);
  free(cnt);
}

/* ---- helpers --------------------------------------------------------------- */

/* A filter-free parameter set: temperature 1, nothing cut, no penalties. */
static RtSamplerParams plain(void) {
  RtSamplerParams p = rt_sampler_defaults();
  p.temp = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = 12345;
  return p;
}

/* Draws N ids into counts[0, n_vocab); returns 0 on an id outside [0, n_valid). */
static int draw(const RtSamplerParams *p, int n_vocab, int n_valid, const float *logits, const int32_t *hist,
                int n_hist, long N, long *counts) {
  RtSampler *s = rt_sampler_new(p, n_vocab, n_valid);
  EXPECT(s, "rt_sampler_new failed");
  for (int h = 0; h < n_hist; h++) rt_sampler_accept(s, hist[h]);
  memset(counts, 0, (size_t)n_vocab * sizeof *counts);
  for (long i = 0; i < N; i++) {
    int32_t id = rt_sampler_sample(s, logits);
    if (id < 0 || id >= n_valid) {
      rt_sampler_free(s);
      EXPECT(0, "draw %ld returned id %d (n_valid %d)", i, id, n_valid);
    }
    counts[id]++;
  }
  rt_sampler_free(s);
  return 1;
}

/* Samples N times and checks the fit to the reference chain. */
static int fits_reference(const char *label, const RtSamplerParams *p, int n_vocab, int n_valid, const float *logits,
                          const int32_t *hist, int n_hist, long N) {
  long counts[64];
  double probs[64];
  if (!draw(p, n_vocab, n_valid, logits, hist, n_hist, N, counts)) return 0;
  ref_probs(p, logits, n_valid, hist, n_hist, probs);
  return chi2_fits(label, counts, probs, n_valid, N);
}

static int32_t greedy(const float *logits, int n_vocab, int n_valid) {
  RtSamplerParams p = plain();
  p.temp = 0;
  RtSampler *s = rt_sampler_new(&p, n_vocab, n_valid);
  if (!s) return -2;
  int32_t id = rt_sampler_sample(s, logits);
  rt_sampler_free(s);
  return id;
}

/* Ten real ids and two padded ones whose huge logits must never win. */
#define NV 12
#define NVALID 10
static const float L10[NV] = {2.0f, 1.6f, 1.3f, 1.0f, 0.7f, 0.5f, 0.2f, -0.1f, -0.5f, -1.0f, 1e30f, INFINITY};
#define N_DRAWS 200000

/* ---- tests ------------------------------------------------------------------ */

static int test_chi2_helper_matches_tables(void) {
  /* Critical values at alpha = 1e-4 and two classic 5% points. */
  static const struct { int df; double x; } crit[] = {{1, 15.13670523}, {2, 18.42068074}, {4, 23.51274244},
                                                       {9, 33.71994844}, {10, 35.56401394}, {21, 53.96200012}};
  for (size_t i = 0; i < sizeof crit / sizeof *crit; i++) {
    double c = chi2_critical(crit[i].df, 1e-4);
    EXPECT(fabs(c - crit[i].x) < 1e-5, "df %d: critical %.8f, expected %.8f", crit[i].df, c, crit[i].x);
  }
  EXPECT(fabs(chi2_pvalue(1, 3.841459) - 0.05) < 1e-6, "df 1 at 3.841459: %g", chi2_pvalue(1, 3.841459));
  EXPECT(fabs(chi2_pvalue(10, 18.307038) - 0.05) < 1e-6, "df 10 at 18.307038: %g", chi2_pvalue(10, 18.307038));
  return 1;
}

static int test_defaults_are_llama_cpp(void) {
  RtSamplerParams p = rt_sampler_defaults();
  EXPECT(p.temp == 0.8f && p.top_k == 40 && p.top_p == 0.95f && p.min_p == 0.05f, "filters");
  EXPECT(p.repeat_penalty == 1.0f && p.presence_penalty == 0 && p.frequency_penalty == 0 && p.repeat_last_n == 64,
         "penalties");
  return 1;
}

static int test_distribution_temperatures(void) {
  static const float temps[] = {0.5f, 1.0f, 1.5f};
  for (int i = 0; i < 3; i++) {
    RtSamplerParams p = plain();
    p.temp = temps[i];
    p.seed = 100 + i;
    char label[32];
    snprintf(label, sizeof label, "temp %.1f", temps[i]);
    if (!fits_reference(label, &p, NV, NVALID, L10, NULL, 0, N_DRAWS)) return 0;
  }
  return 1;
}

static int test_distribution_filters(void) {
  RtSamplerParams p = plain();
  p.top_k = 3;
  if (!fits_reference("top-k 3", &p, NV, NVALID, L10, NULL, 0, N_DRAWS)) return 0;
  p = plain();
  p.top_p = 0.7f; /* keeps ids 0..3: cumulative 0.628 then 0.735 */
  if (!fits_reference("top-p 0.7", &p, NV, NVALID, L10, NULL, 0, N_DRAWS)) return 0;
  p = plain();
  p.min_p = 0.2f; /* keeps ids 0..5: ratios 0.223 then 0.165 */
  if (!fits_reference("min-p 0.2", &p, NV, NVALID, L10, NULL, 0, N_DRAWS)) return 0;
  p = plain();
  p.top_k = 6, p.top_p = 0.9f, p.min_p = 0.1f, p.temp = 1.5f;
  if (!fits_reference("k 6, p 0.9, min-p 0.1, t 1.5", &p, NV, NVALID, L10, NULL, 0, N_DRAWS)) return 0;
  p = rt_sampler_defaults();
  p.seed = 7;
  return fits_reference("defaults", &p, NV, NVALID, L10, NULL, 0, N_DRAWS);
}

static int test_distribution_penalties(void) {
  /* id 0 twice, id 3 once (positive logits), id 8 once (negative logit). */
  static const int32_t hist[] = {0, 0, 3, 8};
  RtSamplerParams p = plain();
  p.repeat_penalty = 1.3f, p.presence_penalty = 0.2f, p.frequency_penalty = 0.1f;
  return fits_reference("penalties", &p, NV, NVALID, L10, hist, 4, N_DRAWS);
}

static int test_distribution_large_vocab(void) {
  /* A GPT-NeoX-sized row with a sharp head, top-k off: the full-sort top-p
   * path and the min-p pre-filter over 50k candidates. */
  enum { V = 50304, VALID = 50277 };
  float *l = malloc(V * sizeof *l);
  long *counts = malloc(V * sizeof *counts);
  double *probs = malloc(V * sizeof *probs);
  EXPECT(l && counts && probs, "out of memory");
  uint64_t x = 42;
  for (int i = 0; i < V; i++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    l[i] = (float)((x >> 40) * 0x1.0p-24) * 800.0f; /* uniform in [0, 800): ~40 ids hold half the mass */
  }
  for (int i = VALID; i < V; i++) l[i] = 100.0f;
  RtSamplerParams p = plain();
  p.top_p = 0.5f;
  p.seed = 99;
  int ok = 0;
  RtSampler *s = rt_sampler_new(&p, V, VALID);
  if (s) {
    memset(counts, 0, V * sizeof *counts);
    clock_t t0 = clock();
    long N = 4000;
    for (long i = 0; i < N; i++) {
      int32_t id = rt_sampler_sample(s, l);
      if (id < 0 || id >= VALID) break;
      counts[id]++;
    }
    printf("     %d-id rows, top-k off: %.0f us per sample\n", VALID,
           (double)(clock() - t0) / CLOCKS_PER_SEC / N * 1e6);
    rt_sampler_free(s);
    ref_probs(&p, l, VALID, NULL, 0, probs);
    long total = 0;
    for (int i = 0; i < VALID; i++) total += counts[i];
    ok = total == N && chi2_fits("50k vocab, top-p 0.5", counts, probs, VALID, N);
  }
  free(l);
  free(counts);
  free(probs);
  return ok;
}

static int test_top_k_at_least_vocab_is_no_cut(void) {
  static const int32_t ks[] = {10, 11, 1000, 0, -5};
  int32_t first[500];
  for (size_t j = 0; j < sizeof ks / sizeof *ks; j++) {
    RtSamplerParams p = plain();
    p.top_k = ks[j];
    RtSampler *s = rt_sampler_new(&p, NV, NVALID);
    EXPECT(s, "rt_sampler_new");
    for (int i = 0; i < 500; i++) {
      int32_t id = rt_sampler_sample(s, L10);
      if (j == 0) first[i] = id;
      if (id != first[i]) rt_sampler_free(s);
      EXPECT(id == first[i], "k=%d differs from k=10 at draw %d", ks[j], i);
    }
    rt_sampler_free(s);
  }
  return 1;
}

static int test_top_k_1_is_argmax(void) {
  static const float tied[NV] = {0.5f, 3.0f, 1.0f, 3.0f, 3.0f, 0, 0, 0, 0, 0, 50.0f, 50.0f};
  RtSamplerParams p = plain();
  p.top_k = 1;
  p.temp = 1.5f;
  long counts[NV];
  if (!draw(&p, NV, NVALID, L10, NULL, 0, 10000, counts)) return 0;
  EXPECT(counts[0] == 10000, "argmax drawn %ld of 10000", counts[0]);
  if (!draw(&p, NV, NVALID, tied, NULL, 0, 10000, counts)) return 0;
  EXPECT(counts[1] == 10000, "tie at 3.0 must go to the lowest id 1; got it %ld times", counts[1]);
  return 1;
}

static int test_top_p_1_is_no_cut(void) {
  /* The least likely id has probability 0.0144: p = 1 must keep it, and
   * p = 1 must draw the same sequence as p > 1. */
  RtSamplerParams p = plain();
  long counts[NV];
  if (!draw(&p, NV, NVALID, L10, NULL, 0, 20000, counts)) return 0;
  EXPECT(counts[9] > 0, "the tail id was cut with top-p 1");
  RtSamplerParams q = p;
  q.top_p = 1.5f;
  RtSampler *a = rt_sampler_new(&p, NV, NVALID), *b = rt_sampler_new(&q, NV, NVALID);
  EXPECT(a && b, "rt_sampler_new");
  int same = 1;
  for (int i = 0; i < 1000; i++) same &= rt_sampler_sample(a, L10) == rt_sampler_sample(b, L10);
  rt_sampler_free(a);
  rt_sampler_free(b);
  EXPECT(same, "top-p 1 and 1.5 differ");
  return 1;
}

static int test_top_p_tiny_keeps_one(void) {
  static const float tied[NV] = {0, 2.0f, 0, 2.0f, 0, 0, 0, 0, 0, 0, 1e30f, 1e30f};
  RtSamplerParams p = plain();
  p.temp = 1.5f;
  p.top_p = 1e-6f;
  long counts[NV];
  if (!draw(&p, NV, NVALID, L10, NULL, 0, 10000, counts)) return 0;
  EXPECT(counts[0] == 10000, "argmax drawn %ld of 10000", counts[0]);
  p.top_p = 0.0f;
  if (!draw(&p, NV, NVALID, tied, NULL, 0, 10000, counts)) return 0;
  EXPECT(counts[1] == 10000, "top-p 0 with a tie must keep the lowest id; got it %ld times", counts[1]);
  return 1;
}

static int test_all_equal_is_uniform(void) {
  float eq[NV];
  for (int i = 0; i < NV; i++) eq[i] = i < NVALID ? 0.25f : 1e30f;
  RtSamplerParams p = plain();
  if (!fits_reference("equal logits", &p, NV, NVALID, eq, NULL, 0, N_DRAWS)) return 0;
  p.top_k = 3; /* ties cut by id: exactly ids 0, 1, 2 remain */
  long counts[NV];
  double probs[NV] = {1 / 3.0, 1 / 3.0, 1 / 3.0};
  if (!draw(&p, NV, NVALID, eq, NULL, 0, N_DRAWS, counts)) return 0;
  if (!chi2_fits("equal logits, top-k 3", counts, probs, NVALID, N_DRAWS)) return 0;
  p = plain();
  p.min_p = 0.9f; /* every id ties with the best: nothing is cut */
  p.temp = 0.3f;
  return fits_reference("equal logits, min-p 0.9", &p, NV, NVALID, eq, NULL, 0, N_DRAWS);
}

static int test_neg_inf_and_nan_never_drawn(void) {
  float l[NV];
  memcpy(l, L10, sizeof l);
  l[0] = -INFINITY, l[4] = NAN, l[9] = -INFINITY;
  RtSamplerParams p = plain();
  p.temp = 100.0f; /* flattens everything finite; -inf must stay impossible */
  long counts[NV];
  if (!draw(&p, NV, NVALID, l, NULL, 0, 50000, counts)) return 0;
  EXPECT(counts[0] == 0 && counts[4] == 0 && counts[9] == 0, "drew -inf/NaN ids: %ld %ld %ld", counts[0], counts[4],
         counts[9]);
  EXPECT(counts[1] > 0 && counts[8] > 0, "finite ids missing");
  EXPECT(greedy(l, NV, NVALID) == 1, "greedy %d", greedy(l, NV, NVALID));

  /* top-k 5 with only 3 finite logits, two of the -inf ones among the first
   * k ids: the cut must drop the -inf ids and keep all three finite ones. */
  static const float few[NV] = {-INFINITY, -INFINITY, 0.5f, -INFINITY, 1.0f, -INFINITY, -INFINITY, 0.2f,
                                -INFINITY, -INFINITY, 1e30f, 1e30f};
  p = plain();
  p.top_k = 5;
  if (!fits_reference("top-k 5, 3 finite", &p, NV, NVALID, few, NULL, 0, N_DRAWS)) return 0;

  float one[NV];
  for (int i = 0; i < NV; i++) one[i] = -INFINITY;
  one[10] = 5.0f; /* padded */
  EXPECT(greedy(one, NV, NVALID) == -1, "no finite valid logit must give -1");
  p = rt_sampler_defaults();
  RtSampler *s = rt_sampler_new(&p, NV, NVALID);
  EXPECT(s, "rt_sampler_new");
  int32_t none = rt_sampler_sample(s, one);
  one[6] = -1e30f;
  int all_six = 1;
  for (int i = 0; i < 1000; i++) all_six &= rt_sampler_sample(s, one) == 6;
  rt_sampler_free(s);
  EXPECT(none == -1, "all -inf gave %d", none);
  EXPECT(all_six, "the only finite id was not always drawn");
  return 1;
}

static int test_padded_ids_never_returned(void) {
  /* L10 has 1e30 and +inf in the padded ids 10 and 11. */
  EXPECT(greedy(L10, NV, NVALID) == 0, "greedy %d", greedy(L10, NV, NVALID));
  RtSamplerParams p = plain();
  p.temp = 50.0f;
  long counts[NV];
  if (!draw(&p, NV, NVALID, L10, NULL, 0, 50000, counts)) return 0; /* draw() fails on ids >= n_valid */
  float inf_valid[NV];
  memcpy(inf_valid, L10, sizeof inf_valid);
  inf_valid[7] = INFINITY; /* +inf on a real id wins */
  EXPECT(greedy(inf_valid, NV, NVALID) == 7, "greedy with +inf %d", greedy(inf_valid, NV, NVALID));
  p.temp = 1.0f;
  if (!draw(&p, NV, NVALID, inf_valid, NULL, 0, 1000, counts)) return 0;
  EXPECT(counts[7] == 1000, "+inf logit drawn %ld of 1000", counts[7]);
  return 1;
}

static int32_t greedy_after(const RtSamplerParams *base, const float *l, const int32_t *hist, int n) {
  RtSamplerParams p = *base;
  p.temp = 0;
  RtSampler *s = rt_sampler_new(&p, NV, NVALID);
  if (!s) return -2;
  for (int i = 0; i < n; i++) rt_sampler_accept(s, hist[i]);
  int32_t id = rt_sampler_sample(s, l);
  rt_sampler_free(s);
  return id;
}

static int test_penalties_move_argmax(void) {
  static const float l[NV] = {2.0f, 1.9f, -0.1f, -0.2f, -3, -3, -3, -3, -3, -3, 0, 0};
  static const float neg[NV] = {-1.0f, -1.1f, -3, -3, -3, -3, -3, -3, -3, -3, 0, 0};
  static const int32_t once[] = {0}, thrice[] = {0, 0, 0};
  RtSamplerParams p = plain();
  EXPECT(greedy_after(&p, l, thrice, 3) == 0, "no penalty");
  p.repeat_penalty = 1.1f; /* 2.0 / 1.1 = 1.82 < 1.9 */
  EXPECT(greedy_after(&p, l, once, 1) == 1, "repeat penalty on a positive logit");
  p.repeat_penalty = 1.2f; /* -1.0 * 1.2 = -1.2 < -1.1 (dividing would give -0.83) */
  EXPECT(greedy_after(&p, neg, once, 1) == 1, "negative logit must be multiplied");
  p.repeat_penalty = 0.5f; /* < 1 rewards: -1.1 * 0.5 = -0.55 beats -1.0 */
  static const int32_t one_id[] = {1};
  EXPECT(greedy_after(&p, neg, one_id, 1) == 1, "penalty < 1 must boost");
  p = plain();
  p.frequency_penalty = 0.05f; /* 2.0 - 3 * 0.05 = 1.85 < 1.9 */
  EXPECT(greedy_after(&p, l, thrice, 3) == 1, "frequency penalty counts occurrences");
  p.frequency_penalty = 0.03f; /* 2.0 - 0.09 = 1.91 > 1.9 */
  EXPECT(greedy_after(&p, l, thrice, 3) == 0, "frequency penalty too strong");
  p = plain();
  p.presence_penalty = 0.05f; /* once, whatever the count: 1.95 > 1.9 */
  EXPECT(greedy_after(&p, l, thrice, 3) == 0, "presence penalty applied per occurrence");
  p.presence_penalty = 0.15f;
  EXPECT(greedy_after(&p, l, thrice, 3) == 1, "presence penalty missing");
  p.repeat_last_n = 0; /* window of 0 turns every penalty off */
  EXPECT(greedy_after(&p, l, thrice, 3) == 0, "repeat_last_n 0 must disable penalties");
  return 1;
}

static int test_penalty_window_slides(void) {
  static const float l[NV] = {2.0f, 1.9f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  int32_t hist[70];
  hist[0] = 0;
  for (int i = 1; i < 70; i++) hist[i] = 5;
  RtSamplerParams p = plain();
  p.repeat_penalty = 1.5f;
  p.repeat_last_n = 64;
  EXPECT(greedy_after(&p, l, hist, 64) == 1, "id 0 is the oldest of 64: still penalised");
  EXPECT(greedy_after(&p, l, hist, 65) == 0, "id 0 left the 64-token window");
  p.repeat_last_n = -1; /* whole history */
  EXPECT(greedy_after(&p, l, hist, 70) == 1, "repeat_last_n -1 must remember everything");
  int32_t out_of_range[] = {-1, 11, 10, 0};
  p.repeat_last_n = 2; /* ids outside [0, n_valid) are not recorded */
  EXPECT(greedy_after(&p, l, out_of_range, 4) == 1, "ignored ids pushed id 0 out of the window");
  return 1;
}

static int test_greedy_ties_lowest_id(void) {
  static const float l[NV] = {1, 3, 2, 3, 3, 0, 0, 0, 0, 0, 9, 9};
  EXPECT(greedy(l, NV, NVALID) == 1, "greedy %d", greedy(l, NV, NVALID));
  RtSamplerParams p = plain();
  p.temp = -1;
  RtSampler *s = rt_sampler_new(&p, NV, NVALID);
  EXPECT(s, "rt_sampler_new");
  int32_t id = rt_sampler_sample(s, l);
  rt_sampler_free(s);
  EXPECT(id == 1, "temp < 0 gave %d", id);
  return 1;
}

static int sequence(uint64_t seed, int penalties, int32_t *out, int n) {
  RtSamplerParams p = rt_sampler_defaults();
  p.seed = seed;
  if (penalties) p.repeat_penalty = 1.2f, p.frequency_penalty = 0.1f;
  RtSampler *s = rt_sampler_new(&p, NV, NVALID);
  if (!s) return 0;
  for (int i = 0; i < n; i++) {
    out[i] = rt_sampler_sample(s, L10);
    rt_sampler_accept(s, out[i]);
  }
  rt_sampler_free(s);
  return 1;
}

static int test_seed_determinism(void) {
  enum { N = 1000 };
  int32_t a[N], b[N], c[N];
  for (int pen = 0; pen < 2; pen++) {
    EXPECT(sequence(1, pen, a, N) && sequence(1, pen, b, N) && sequence(2, pen, c, N), "rt_sampler_new");
    EXPECT(memcmp(a, b, sizeof a) == 0, "same seed, different sequences (penalties %d)", pen);
    int diff = 0;
    for (int i = 0; i < N; i++) diff += a[i] != c[i];
    EXPECT(diff > N / 4, "seeds 1 and 2 differ at only %d of %d draws", diff, N);
  }
  return 1;
}

static int test_bad_arguments(void) {
  RtSamplerParams p = rt_sampler_defaults();
  EXPECT(!rt_sampler_new(&p, 10, 11), "n_valid > n_vocab accepted");
  EXPECT(!rt_sampler_new(&p, 10, 0), "n_valid 0 accepted");
  EXPECT(!rt_sampler_new(&p, 0, 0), "n_vocab 0 accepted");
  p.repeat_penalty = 0;
  EXPECT(!rt_sampler_new(&p, 10, 10), "repeat_penalty 0 accepted");
  p = rt_sampler_defaults();
  p.temp = NAN;
  EXPECT(!rt_sampler_new(&p, 10, 10), "temp NaN accepted");
  RtSampler *s = rt_sampler_new(NULL, 10, 10); /* NULL params: defaults */
  EXPECT(s, "NULL params refused");
  rt_sampler_free(s);
  rt_sampler_free(NULL);
  return 1;
}

static int test_alloc_failure(void) {
  RtSamplerParams p = rt_sampler_defaults();
  p.repeat_penalty = 1.1f; /* the penalty window adds two allocations */
  int refused = 0;
  for (long f = 0; f < 20; f++) {
    rt_set_alloc_fail_after(f);
    RtSampler *s = rt_sampler_new(&p, NV, NVALID);
    rt_set_alloc_fail_after(-1);
    if (!s) {
      refused++;
      continue;
    }
    EXPECT(refused > 0, "no allocation was refused");
    /* Sampling must not allocate: it still works with every allocation refused. */
    rt_set_alloc_fail_after(0);
    rt_sampler_accept(s, 3);
    int32_t id = rt_sampler_sample(s, L10);
    rt_set_alloc_fail_after(-1);
    rt_sampler_free(s);
    EXPECT(id >= 0 && id < NVALID, "sample after injection gave %d", id);
    return 1;
  }
  EXPECT(0, "rt_sampler_new never succeeded");
  return 0;
}

int main(void) {
  run_test("chi2_helper_matches_tables", test_chi2_helper_matches_tables);
  run_test("defaults_are_llama_cpp", test_defaults_are_llama_cpp);
  run_test("distribution_temperatures", test_distribution_temperatures);
  run_test("distribution_filters", test_distribution_filters);
  run_test("distribution_penalties", test_distribution_penalties);
  run_test("distribution_large_vocab", test_distribution_large_vocab);
  run_test("top_k_at_least_vocab_is_no_cut", test_top_k_at_least_vocab_is_no_cut);
  run_test("top_k_1_is_argmax", test_top_k_1_is_argmax);
  run_test("top_p_1_is_no_cut", test_top_p_1_is_no_cut);
  run_test("top_p_tiny_keeps_one", test_top_p_tiny_keeps_one);
  run_test("all_equal_is_uniform", test_all_equal_is_uniform);
  run_test("neg_inf_and_nan_never_drawn", test_neg_inf_and_nan_never_drawn);
  run_test("padded_ids_never_returned", test_padded_ids_never_returned);
  run_test("penalties_move_argmax", test_penalties_move_argmax);
  run_test("penalty_window_slides", test_penalty_window_slides);
  run_test("greedy_ties_lowest_id", test_greedy_ties_lowest_id);
  run_test("seed_determinism", test_seed_determinism);
  run_test("bad_arguments", test_bad_arguments);
  run_test("alloc_failure", test_alloc_failure);
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}
