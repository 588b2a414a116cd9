/* neox.h — writes the GPT-NeoX network as IR ops (the semantics of
 * docs/ir.md, following Hugging Face's GPTNeoXForCausalLM). */
#ifndef PY_NEOX_H
#define PY_NEOX_H

#include "ir.h"

/* Weight matrices (embedding, projections, unembedding) are stored as
 * `wdtype`; vectors (LayerNorm, biases) as f32; the K/V caches as
 * `kvdtype` (f32 or f16). */
Graph *ir_build_neox(Arena *a, const GraphDims *d, DType wdtype, DType kvdtype);

#endif
