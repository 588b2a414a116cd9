/* sampler.h — next-token sampling with llama.cpp's defaults and chain:
 * repeat/presence/frequency penalties -> top-k -> top-p -> min-p ->
 * temperature -> draw.  temp <= 0 is greedy (argmax after penalties).
 * Ids >= n_valid (padded vocabulary rows) are never returned.
 * Deterministic for a seed: the draw uses the sampler's own PRNG only. */
#ifndef RT_SAMPLER_H
#define RT_SAMPLER_H

#include <stdint.h>

typedef struct {
  float temp;             /* 0.8 */
  int32_t top_k;          /* 40; <= 0 disables */
  float top_p;            /* 0.95; 1 disables */
  float min_p;            /* 0.05; 0 disables */
  float repeat_penalty;   /* 1.0 (off) */
  float presence_penalty; /* 0.0 */
  float frequency_penalty;/* 0.0 */
  int32_t repeat_last_n;  /* 64 */
  uint64_t seed;
} RtSamplerParams;

RtSamplerParams rt_sampler_defaults(void);

typedef struct RtSampler RtSampler;
/* n_vocab: length of a logits row; n_valid: ids below it may be sampled. */
RtSampler *rt_sampler_new(const RtSamplerParams *p, int32_t n_vocab, int32_t n_valid);
void rt_sampler_free(RtSampler *s);
void rt_sampler_accept(RtSampler *s, int32_t id); /* history for penalties */
int32_t rt_sampler_sample(RtSampler *s, const float *logits);

#endif
