/* pythia_abi.h — the one contract between a generated model object and the
 * runtime library it is linked with.  Versioned: bump PY_ABI_VERSION on any
 * change to the structs or entry points below.
 *
 * The generated object defines `py_model` (static description) and
 * `py_forward` (runs the whole network on a block of tokens).  The runtime owns
 * all memory: the weight blob (mapped from the executable), the activation
 * arena (py_model.arena_bytes) and the KV cache; it calls py_forward with a
 * filled PyRun.
 *
 * Invariants:
 *  - 1 <= n_tokens <= py_model.max_block; pos + n_tokens <= ctx (the runtime
 *    checks this before the call, generated code does not).
 *  - K/V cache layout: [n_layer][n_head][max_ctx][head_dim] elements of
 *    py_model.kv_bytes bytes each: 4 (float32) or 2 (IEEE half, pythiac
 *    --kv-cache=f16); each head's rows contiguous, so every stride is a
 *    compile-time constant.
 *    The runtime maps it lazily, so an unused context costs no RAM, and
 *    touches the rows a run will use before it starts (rt_main.c).
 *  - logits rows [logits_from, n_tokens) are written, row t at
 *    logits + (t - logits_from) * vocab.
 *  - hidden, when not NULL and n_hidden > 0: every row of every slot is
 *    written (slot s, row t at hidden + (s * n_tokens + t) * d_model).
 *  - attn, when not NULL and py_model.attentions: for every layer l whose
 *    attn[l] is not NULL and every head h, rows [pos, pos + n_tokens) of the
 *    attn_n x attn_n matrix at attn[l] + h * attn_n * attn_n are written:
 *    row p holds the attention probabilities of position p over keys
 *    [0, p], then zeros up to attn_n.  Needs pos + n_tokens <= attn_n;
 *    other rows are untouched.
 *  - Work inside py_forward is split with parallel_for(pool, k, r, n): the
 *    pool calls k(r, lo, hi) on disjoint ranges covering [0, n) and returns
 *    when all are done.  Each output element is computed by one call, in a
 *    fixed order, so results do not depend on the thread count. */
#ifndef PYTHIA_ABI_H
#define PYTHIA_ABI_H

#include <stdint.h>

#define PY_ABI_VERSION 6

typedef struct PyRun PyRun;
typedef void (*PyKernel)(const PyRun *r, int64_t lo, int64_t hi);

struct PyRun {
  const uint8_t *weights; /* weight blob, page aligned */
  float *arena;           /* activations, py_model.arena_bytes, 64-aligned */
  void *kcache;           /* [n_layer][n_head][max_ctx][head_dim], kv_bytes each */
  void *vcache;
  const int32_t *tokens;  /* n_tokens ids, each < vocab */
  int64_t n_tokens;
  int64_t pos;            /* position of tokens[0] */
  float *logits;
  int64_t logits_from;
  void (*parallel_for)(void *pool, PyKernel k, const PyRun *r, int64_t n);
  void *pool;
  float *hidden;          /* NULL, or py_model.n_hidden slots of [n_tokens][d_model]
                             floats, slot s at hidden + s * n_tokens * d_model */
  float *const *attn;     /* NULL, or n_layer pointers: NULL, or layer l's
                             [n_head][attn_n][attn_n] floats (above) */
  int64_t attn_n;
};

typedef struct {
  uint32_t abi_version;
  int32_t n_layer, d_model, n_head, head_dim, d_ff, vocab;
  int32_t max_ctx, rotary_ndims, max_block;
  int32_t kv_bytes;      /* bytes per K/V cache element: 4 (f32) or 2 (f16) */
  uint64_t arena_bytes;  /* activation arena for max_block tokens */
  uint64_t weights_bytes;
  uint64_t layout_hash;  /* XXH3 of the weight layout table; the bundle repeats it */
  const char *config_json; /* the config.json the model was compiled from */
  const char *source;      /* model folder */
  const char *options;     /* compile options, one line */
  const char *target;      /* CPU name and features */
  const char *weights_dtype;
  const char *op_names; /* n_ops lines "kind %out", in the order py_forward runs them */
  int32_t n_ops;        /* py_forward calls parallel_for exactly once per op, in order */
  int32_t n_hidden;     /* hidden-state slots py_forward can write (pythiac --hidden-states):
                           n_layer + 1, as Hugging Face's output_hidden_states; 0: none */
  int32_t attentions;   /* 1: py_forward can write attention probabilities (pythiac
                           --attentions), as Hugging Face's output_attentions; 0: no */
} PyModel;

extern const PyModel py_model;
void py_forward(const PyRun *r);

#endif
