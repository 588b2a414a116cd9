/* neox.h — writes the GPT-NeoX network as IR ops (the semantics of
 * docs/ir.md, following Hugging Face's GPTNeoXForCausalLM). */
#ifndef PY_NEOX_H
#define PY_NEOX_H

#include "ir.h"

/* Weight matrices (embedding, projections, unembedding) are stored as
 * `wdtype`; vectors (LayerNorm, biases) as f32; the K/V caches as
 * `kvdtype` (f32 or f16).  With hidden_states, n_layer + 1 hidden_state ops
 * also write Hugging Face's output_hidden_states: slot 0 the embeddings,
 * slot l + 1 the output of layer l for l < n_layer - 1, and slot n_layer the
 * final LayerNorm of the last layer's output.  With attentions, each layer's
 * attention is followed by an attention_probs op that writes its softmax
 * probabilities (Hugging Face's output_attentions). */
typedef enum { NEOX_HIDDEN_STATES = 1, NEOX_ATTENTIONS = 2 } NeoxOutputs;
Graph *ir_build_neox(Arena *a, const GraphDims *d, DType wdtype, DType kvdtype, unsigned outputs);

#endif
