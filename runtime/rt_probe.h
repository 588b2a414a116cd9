/* rt_probe.h — the read-bandwidth probe `pythia_gen --bench
 * --probe-bandwidth` runs between decode tokens (rt_probe.c). */
#ifndef RT_PROBE_H
#define RT_PROBE_H

#include <stddef.h>
#include <stdint.h>

#include "threadpool.h"

/* Reads the whole 4 KiB blocks at the start of p's bytes once, each of the
 * pool's threads its contiguous share, and returns the bytes read (bytes
 * rounded down to a block).  *sum (if sum is not NULL) gets the sum of the
 * bytes read as floats, denormals flushed to zero.  p must be 64-byte
 * aligned; pool may be NULL (the calling thread reads it all). */
enum { RT_PROBE_BLOCK = 4 << 10 };
size_t rt_probe_read(RtPool *pool, const uint8_t *p, size_t bytes, double *sum);

#endif
