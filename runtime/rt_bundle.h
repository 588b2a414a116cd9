/* rt_bundle.h — maps the weights and tokenizer appended to the executable, or
 * those of a weight bundle file (pythiac --emit=weights: the same sections and
 * trailer with no code before them). */
#ifndef RT_BUNDLE_H
#define RT_BUNDLE_H

#include <stddef.h>
#include <stdint.h>

#include "bundle.h"

typedef struct {
  PyBundleTrailer trailer;
  const uint8_t *weights; /* trailer.weights_size bytes, read-only */
  const uint8_t *tok;     /* trailer.tok_size bytes, NULL if none */
} RtBundle;

/* file: a weight bundle file, or NULL for this executable's own */
int rt_bundle_open(RtBundle *b, const char *file, char *err, size_t errlen);
uint64_t rt_bundle_hash(const RtBundle *b); /* XXH3 of the weights */
int64_t rt_bundle_huge_bytes(const RtBundle *b); /* weights mapped by 2 MiB entries; -1 unknown */
void rt_bundle_close(RtBundle *b);

#endif
