/* sampler.c — next-token sampling (interface and chain in sampler.h).
 *
 * Owns: a copy of the penalised logits, the candidate list, the draw weights,
 * the penalty window (ring of accepted ids + per-id counts) and the PRNG.
 * All of it is allocated in rt_sampler_new; rt_sampler_sample allocates
 * nothing.
 *
 * Invariants:
 *  - Only logits[0, n_valid) are read, so padded ids are never returned.
 *  - NaN and -inf logits are not candidates; +inf is treated as FLT_MAX.
 *  - Candidates are ordered "better first" by (logit desc, id asc), a strict
 *    total order, so ties always resolve the same way (lowest id first).
 *  - top-k, top-p and min-p each keep a best-first prefix of that order, so
 *    the chain's result is the shortest of the three prefixes.  top-p
 *    normalises over the top-k set; min-p compares against the best token,
 *    which every filter keeps, so its threshold does not depend on order.
 *  - The draw uses only this sampler's xoshiro256** state, seeded by
 *    splitmix64(seed): same seed + same logits + same accepts = same ids.
 *  - Returns -1 only when no id below n_valid has a finite logit. */
#include "sampler.h"

#include <float.h>
#include <math.h>
#include <stddef.h>

#include "rt_alloc.h"

struct RtSampler {
  RtSamplerParams p;
  int32_t n_vocab, n_valid;
  int penalize;     /* some penalty is active and the window is not empty */
  float *lg;        /* [n_valid] logits after sanitising and penalties */
  int32_t *cand;    /* [n_valid] candidate ids */
  double *w;        /* [n_valid] draw weights of the kept candidates */
  int32_t *cnt;     /* [n_valid] occurrences in the window (penalize only) */
  int32_t *ring;    /* [ring_cap] last accepted ids; NULL: unbounded window */
  int32_t ring_cap, ring_len, ring_pos;
  uint64_t rng[4];
};

RtSamplerParams rt_sampler_defaults(void) {
  return (RtSamplerParams){
      .temp = 0.8f,
      .top_k = 40,
      .top_p = 0.95f,
      .min_p = 0.05f,
      .repeat_penalty = 1.0f,
      .presence_penalty = 0.0f,
      .frequency_penalty = 0.0f,
      .repeat_last_n = 64,
      .seed = 0,
  };
}

/* ---- PRNG: xoshiro256**, state filled by splitmix64 ---------------------- */

static uint64_t rt_splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t rt_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rt_rng_next(uint64_t s[4]) {
  uint64_t out = rt_rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rt_rotl(s[3], 45);
  return out;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rt_rng_uniform(uint64_t s[4]) { return (double)(rt_rng_next(s) >> 11) * 0x1.0p-53; }

/* ---- candidate order: heap on "worse at the root" ------------------------- */

static int rt_better(const float *lg, int32_t a, int32_t b) {
  return lg[a] > lg[b] || (lg[a] == lg[b] && a < b);
}

/* Restores the heap below i: every parent is worse than its children. */
static void rt_sift(const float *lg, int32_t *h, int64_t n, int64_t i) {
  for (;;) {
    int64_t c = 2 * i + 1;
    if (c >= n) return;
    if (c + 1 < n && rt_better(lg, h[c], h[c + 1])) c++; /* the worse child */
    if (!rt_better(lg, h[i], h[c])) return;
    int32_t t = h[i];
    h[i] = h[c];
    h[c] = t;
    i = c;
  }
}

static void rt_heapify(const float *lg, int32_t *h, int64_t n) {
  for (int64_t i = n / 2 - 1; i >= 0; i--) rt_sift(lg, h, n, i);
}

/* Moves the k best of c[0, n) into c[0, k), in no particular order. */
static void rt_select_top(const float *lg, int32_t *c, int64_t n, int64_t k) {
  rt_heapify(lg, c, k);
  for (int64_t j = k; j < n; j++) {
    if (rt_better(lg, c[j], c[0])) {
      c[0] = c[j];
      rt_sift(lg, c, k, 0);
    }
  }
}

/* The same over the ids 0 .. n-1 without a candidate list: writes the k best
 * ids with a finite logit to out and returns how many there are (< k only if
 * fewer than k logits are finite).  Ids arrive in ascending order, so an id
 * that ties with the heap's worst loses the tie and one compare suffices. */
static int64_t rt_select_top_ids(const float *lg, int64_t n, int64_t k, int32_t *out) {
  for (int64_t i = 0; i < k; i++) out[i] = (int32_t)i;
  rt_heapify(lg, out, k);
  float worst = lg[out[0]];
  for (int64_t i = k; i < n; i++) {
    if (lg[i] > worst) {
      out[0] = (int32_t)i;
      rt_sift(lg, out, k, 0);
      worst = lg[out[0]];
    }
  }
  int64_t m = 0;
  for (int64_t j = 0; j < k; j++)
    if (lg[out[j]] > -INFINITY) out[m++] = out[j];
  return m;
}

/* Sorts c[0, n) best first (heapsort: the worst goes to the end each round). */
static void rt_sort_best_first(const float *lg, int32_t *c, int64_t n) {
  rt_heapify(lg, c, n);
  for (int64_t end = n - 1; end > 0; end--) {
    int32_t t = c[0];
    c[0] = c[end];
    c[end] = t;
    rt_sift(lg, c, end, 0);
  }
}

/* ---- lifetime and history -------------------------------------------------- */

static int rt_finite(float x) { return isfinite(x); }

RtSampler *rt_sampler_new(const RtSamplerParams *params, int32_t n_vocab, int32_t n_valid) {
  RtSamplerParams p = params ? *params : rt_sampler_defaults();
  if (n_vocab < 1 || n_valid < 1 || n_valid > n_vocab) return NULL;
  if (isnan(p.temp) || isnan(p.top_p) || isnan(p.min_p)) return NULL;
  if (!(p.repeat_penalty > 0) || !rt_finite(p.repeat_penalty)) return NULL;
  if (!rt_finite(p.presence_penalty) || !rt_finite(p.frequency_penalty)) return NULL;
  if (p.min_p > 1) p.min_p = 1; /* the best token always survives min-p */

  RtSampler *s = rt_calloc(1, sizeof *s);
  if (!s) return NULL;
  s->p = p;
  s->n_vocab = n_vocab;
  s->n_valid = n_valid;
  s->penalize = p.repeat_last_n != 0 &&
                (p.repeat_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f);
  s->lg = rt_malloc((size_t)n_valid * sizeof *s->lg);
  s->cand = rt_malloc((size_t)n_valid * sizeof *s->cand);
  s->w = rt_malloc((size_t)n_valid * sizeof *s->w);
  int ok = s->lg && s->cand && s->w;
  if (ok && s->penalize) {
    s->cnt = rt_calloc((size_t)n_valid, sizeof *s->cnt);
    ok = s->cnt != NULL;
    if (ok && p.repeat_last_n > 0) {
      s->ring_cap = p.repeat_last_n;
      s->ring = rt_malloc((size_t)s->ring_cap * sizeof *s->ring);
      ok = s->ring != NULL;
    }
  }
  if (!ok) {
    rt_sampler_free(s);
    return NULL;
  }
  uint64_t x = p.seed;
  for (int i = 0; i < 4; i++) s->rng[i] = rt_splitmix64(&x);
  return s;
}

void rt_sampler_free(RtSampler *s) {
  if (!s) return;
  rt_free(s->lg);
  rt_free(s->cand);
  rt_free(s->w);
  rt_free(s->cnt);
  rt_free(s->ring);
  rt_free(s);
}

/* Ids outside [0, n_valid) cannot be penalised (they are never candidates)
 * and are not recorded. */
void rt_sampler_accept(RtSampler *s, int32_t id) {
  if (!s || !s->penalize || id < 0 || id >= s->n_valid) return;
  if (s->ring) {
    if (s->ring_len == s->ring_cap)
      s->cnt[s->ring[s->ring_pos]]--; /* the oldest id leaves the window */
    else
      s->ring_len++;
    s->ring[s->ring_pos] = id;
    s->ring_pos = (s->ring_pos + 1) % s->ring_cap;
  }
  s->cnt[id]++;
}

/* ---- the chain -------------------------------------------------------------- */

/* Index of the largest of lg[0, n) (NaN-free), the lowest one on ties; -1
 * if all are -inf.  Four running maxima break the latency chain of one. */
static int32_t rt_argmax(const float *lg, int64_t n) {
  float m0 = -INFINITY, m1 = -INFINITY, m2 = -INFINITY, m3 = -INFINITY;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    m0 = lg[i] > m0 ? lg[i] : m0;
    m1 = lg[i + 1] > m1 ? lg[i + 1] : m1;
    m2 = lg[i + 2] > m2 ? lg[i + 2] : m2;
    m3 = lg[i + 3] > m3 ? lg[i + 3] : m3;
  }
  for (; i < n; i++) m0 = lg[i] > m0 ? lg[i] : m0;
  float mx = fmaxf(fmaxf(m0, m1), fmaxf(m2, m3));
  if (mx == -INFINITY) return -1;
  for (i = 0; lg[i] != mx; i++) {
  }
  return (int32_t)i;
}

/* Penalises a finite logit seen `count` times; the result is clamped like a
 * sanitised logit (an overflow to -inf simply makes the id impossible). */
static float rt_penalise(const RtSamplerParams *p, float l, int32_t count) {
  if (l == -INFINITY) return l;
  if (p->repeat_penalty != 1.0f) l = l > 0 ? l / p->repeat_penalty : l * p->repeat_penalty;
  l -= (float)count * p->frequency_penalty + p->presence_penalty;
  if (isnan(l)) return -INFINITY;
  return l > FLT_MAX ? FLT_MAX : l;
}

/* Touches only the ids in the window: each distinct id once, marked by
 * negating its count for the duration of the call. */
static void rt_apply_penalties(RtSampler *s) {
  float *lg = s->lg;
  int32_t *cnt = s->cnt;
  if (!s->ring) { /* unbounded window: every id may be in it */
    for (int32_t i = 0; i < s->n_valid; i++)
      if (cnt[i] > 0) lg[i] = rt_penalise(&s->p, lg[i], cnt[i]);
    return;
  }
  for (int32_t j = 0; j < s->ring_len; j++) {
    int32_t id = s->ring[j];
    if (cnt[id] > 0) {
      lg[id] = rt_penalise(&s->p, lg[id], cnt[id]);
      cnt[id] = -cnt[id];
    }
  }
  for (int32_t j = 0; j < s->ring_len; j++) {
    int32_t id = s->ring[j];
    if (cnt[id] < 0) cnt[id] = -cnt[id];
  }
}

int32_t rt_sampler_sample(RtSampler *s, const float *logits) {
  const RtSamplerParams *p = &s->p;
  float *lg = s->lg;
  int32_t *cand = s->cand;
  int64_t n = s->n_valid;

  /* NaN can never be drawn; +inf behaves as the largest float. */
  for (int64_t i = 0; i < n; i++) {
    float l = logits[i];
    l = isnan(l) ? -INFINITY : l;
    lg[i] = l > FLT_MAX ? FLT_MAX : l;
  }
  if (s->penalize) rt_apply_penalties(s);

  if (!(p->temp > 0)) return rt_argmax(lg, n);

  /* top-k, or else every id with a finite logit, as candidates. */
  int64_t m = 0;
  float lmax = -INFINITY;
  if (p->top_k > 0 && p->top_k < n) {
    m = rt_select_top_ids(lg, n, p->top_k, cand);
    for (int64_t j = 0; j < m; j++) lmax = fmaxf(lmax, lg[cand[j]]);
  } else {
    int32_t best = rt_argmax(lg, n);
    if (best >= 0) lmax = lg[best];
    for (int64_t i = 0; i < n; i++)
      if (lg[i] > -INFINITY) cand[m++] = (int32_t)i;
  }
  if (m == 0) return -1;

  /* top-p over the top-k set, then min-p: both keep a best-first prefix,
   * so only the min-p survivors take part in the top-p walk, and that walk
   * sorts just the best 64, 256, ... of them until the mass reaches top_p. */
  if (p->top_p < 1.0f || p->min_p > 0.0f) {
    double z = 0; /* top-p's normaliser: the mass of the whole top-k set */
    if (p->top_p < 1.0f)
      for (int64_t j = 0; j < m; j++) z += expf(lg[cand[j]] - lmax);
    int64_t q = m;
    if (p->min_p > 0.0f) { /* p_i >= min_p * p_max, i.e. l_i >= lmax + log(min_p) */
      float floor_l = lmax + logf(p->min_p);
      q = 0;
      for (int64_t j = 0; j < m; j++)
        if (lg[cand[j]] >= floor_l) cand[q++] = cand[j];
    }
    if (p->top_p < 1.0f) {
      int64_t keep = q;
      for (int64_t k = 64;; k *= 4) {
        if (k < q)
          rt_select_top(lg, cand, q, k);
        else
          k = q;
        rt_sort_best_first(lg, cand, k);
        double cum = 0;
        int64_t j = 0;
        do /* the best token is always kept, even for top_p <= 0 */
          cum += expf(lg[cand[j++]] - lmax) / z;
        while (j < k && cum < p->top_p);
        if (cum >= p->top_p) keep = j;
        if (cum >= p->top_p || k == q) break;
      }
      q = keep;
    }
    m = q;
  }

  /* temperature, softmax, draw.  Subtracting lmax before dividing keeps
   * FLT_MAX-sized logits finite. */
  double total = 0;
  for (int64_t j = 0; j < m; j++) {
    s->w[j] = expf((lg[cand[j]] - lmax) / p->temp);
    total += s->w[j];
  }
  double u = rt_rng_uniform(s->rng) * total, acc = 0;
  for (int64_t j = 0; j < m; j++) {
    acc += s->w[j];
    if (u < acc) return cand[j];
  }
  return cand[m - 1]; /* unreachable: acc ends at total > u */
}
