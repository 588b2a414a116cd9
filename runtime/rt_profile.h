/* rt_profile.h — time per op of py_forward (pythia_gen --profile). */
#ifndef RT_PROFILE_H
#define RT_PROFILE_H

#include <stdio.h>

#include "pythia_abi.h"

typedef struct RtProfile RtProfile;

/* A profile of the ops py_model lists; calls go on to parallel_for(pool, ...). */
RtProfile *rt_profile_new(void (*parallel_for)(void *, PyKernel, const PyRun *, int64_t), void *pool);
void rt_profile_free(RtProfile *p);
/* Timing parallel_for: PyRun.parallel_for = rt_profile_parallel_for and
 * PyRun.pool = the profile.  `phase` 0 = prefill, 1 = decode. */
void rt_profile_parallel_for(void *profile, PyKernel k, const PyRun *r, int64_t n);
void rt_profile_phase(RtProfile *p, int phase, int tokens);
/* The table: per op, ms per prefill token block and µs per decode token. */
void rt_profile_print(const RtProfile *p, FILE *f);

#endif
