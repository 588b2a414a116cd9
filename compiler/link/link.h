/* link.h — turns the generated object into ONE executable: links it with the
 * runtime archive (its dependencies static), then appends the weight blob,
 * the tokenizer tables and the bundle trailer (runtime/bundle.h). */
#ifndef PY_LINK_H
#define PY_LINK_H

#include <stdint.h>

#include "../../ir/ir.h"
#include "../frontend/safetensors.h"

/* XXH3 of the weight layout (names, dtypes, shapes, offsets, recipes). */
uint64_t weights_layout_hash(const Graph *g);

/* Streams every weight of g, converted to its storage dtype, into fd at its
 * current position file_pos (page aligned); g->weights_bytes in all, written
 * in 2 MiB-aligned pieces (weights.c).  Source pages are released as it goes,
 * so RSS stays bounded. */
int weights_write(const Graph *g, const StModel *m, int fd, uint64_t file_pos, uint64_t *hash, Err *e);

/* cc obj + runtime -> exe_path (static) */
int link_objects(const char *obj_path, const char *exe_path, Err *e);

/* Appends weights, tokenizer and trailer to the linked executable. */
int bundle_append(const char *exe_path, const Graph *g, const StModel *m,
                  const uint8_t *tok, size_t tok_size, uint64_t layout_hash, Err *e);

/* f32 <-> f16/bf16 with round-to-nearest-even, exported for tests. */
uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);
float bf16_to_f32(uint16_t h);
/* out[i] = f32_to_f16(x[i]) for i < n; with F16C's vcvtps2ph where the CPU
 * has it, which gives the same halves for all 2^32 floats (checked once,
 * docs/architecture.md "Weights"; tests/test_weights.c samples them). */
void f32_to_f16_run(const float *x, int64_t n, uint16_t *out);

#endif
