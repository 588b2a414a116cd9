/* ir.h — the tensor IR: typed values, ops, and the graph that owns them.
 *
 * A Graph is a straight-line list of ops in execution order (the GPT-NeoX
 * network has no control flow).  Every Value is defined once: by the graph
 * (inputs, weights, the KV cache of a layer) or by exactly one op.  Shapes are
 * static except that dimension 0 of an activation may be T, the run-time
 * token count (1 <= T <= max_block).
 *
 * Weights carry a recipe: where their bytes come from (a source tensor of the
 * checkpoint, or a transform of other weights, e.g. LayerNorm folding) and the
 * storage dtype the kernels read.  The compiler evaluates recipes while it
 * streams the weights into the executable.
 *
 * All memory comes from the graph's arena. */
#ifndef PY_IR_H
#define PY_IR_H

#include <stdbool.h>
#include <stdint.h>

#include "base.h"
#include "ops.h"

/* DT_Q8_0, DT_Q4_0: llama.cpp's block formats (32 weights along K with an
 * f16 scale), only for matmul weights, always packed in row groups; their
 * layout is in docs/quantization.md (ir_qgroup_bytes gives a group's size). */
typedef enum { DT_F32, DT_F16, DT_BF16, DT_I32, DT_Q8_0, DT_Q4_0 } DType;
const char *dtype_name(DType t);
int dtype_size(DType t); /* bytes per element; quantized: bytes per 32-block */
int dtype_parse(const char *s, DType *out); /* "f32" etc.; -1 if unknown */
static inline int dtype_is_quant(DType t) { return t == DT_Q8_0 || t == DT_Q4_0; }
/* Bytes of one packed group of rn rows of K (a multiple of 32) quantized
 * weights: the rn * K/32 f16 scales, then the quants, each part padded to
 * 64 bytes.  A quantized W[N, K] is ceil(N / pack_rn) such groups. */
int64_t ir_qgroup_bytes(DType t, int rn, int64_t K);

typedef enum {
  VK_INPUT,  /* token ids, i32[T] */
  VK_WEIGHT, /* read-only, in the weight blob */
  VK_CACHE,  /* one layer's K or V cache, f32[max_ctx, d_model]; stored head-major:
                element (p, h * head_dim + d) at (h * max_ctx + p) * head_dim + d */
  VK_TEMP,   /* an intermediate activation, in the arena */
  VK_OUTPUT, /* logits, f32[T, vocab], written to PyRun.logits */
  VK_HIDDEN, /* one hidden-state slot, f32[T, d_model], written to PyRun.hidden
                (when the caller gives one); never read by another op */
  VK_ATTN,   /* one layer's attention probabilities, f32[T, n_head, max_ctx] (row t,
                head h, key j), written to PyRun.attn (when the caller gives one);
                never read by another op */
} ValueKind;

/* How a weight's bytes are made from the checkpoint. */
typedef enum {
  WR_TENSOR,    /* the source tensor, converted to the storage dtype */
  WR_FOLD_LN_W, /* W[n,k] * gamma[k]      (args: W, gamma) */
  WR_FOLD_LN_B, /* b[n] + sum_k W[n,k] beta[k]  (args: W, beta, b or NULL) */
} WeightRecipe;

typedef struct Op Op;
typedef struct Value Value;

struct Value {
  int id;
  const char *name;
  ValueKind kind;
  DType dtype;
  int rank;
  int64_t dims[3];
  bool dyn0; /* dims[0] is T (dims[0] holds max_block) */
  Op *def;
  /* weights */
  WeightRecipe recipe;
  const char *tensor; /* WR_TENSOR: checkpoint tensor name */
  Value *wargs[3];
  int n_uses;
  /* matrices read by a matmul: float W in panels of pack_rn rows, each
   * stored k-major (element (n, k) at (n/P)*P*K + k*P + n%P, P = pack_rn),
   * the last panel zero-padded to P rows (pack_vw 0); quantized W in
   * groups of pack_rn rows with pack_vw lanes (docs/quantization.md);
   * 0 = plain row-major.  See docs/ir.md. */
  int pack_rn, pack_vw;
  /* placement, filled by passes: arena byte offset (temps), blob byte
   * offset (weights); -1 until planned */
  int64_t offset;
  int layer; /* VK_CACHE: which layer; 0 = K, 1 = V in cache_kv */
  int cache_kv;
};

/* Attributes of an op; which are meaningful depends on the op (docs/ir.md). */
typedef struct {
  double eps;           /* layernorm */
  int part;             /* head_slice: 0 q, 1 k, 2 v */
  int n_head, head_dim; /* head_slice, rotary, attention, kv_store */
  int rotary_ndims;     /* rotary */
  double rotary_base;   /* rotary */
  int layer;            /* kv_store, attention, attention_probs */
  bool gelu;            /* matmul epilogue: y = gelu(x W^T + b) */
  Value *residual[2];   /* matmul epilogue: y += residual[0] (+ residual[1]) */
  bool last_rows;       /* matmul: only rows [PyRun.logits_from, T) */
  int tile_n;           /* matmul: rows of W per cache block; 0 = not tiled yet */
  int tile_rn, tile_rt; /* matmul: register block, rows x tokens */
  int prefetch;         /* matmul: software prefetch distance in bytes (decode), 0 = none */
  int tile_k;           /* matmul: k chunk of prefill register tiles (a multiple of the
                           vector width); 0 or >= K: no chunking */
  int tile_streams;     /* matmul: packed row groups a decode GEMV reads at once (one
                           memory stream each); 0 or 1 = one */
  bool stage_w;         /* matmul, 16-bit W: prefill widens each block's k chunk of W
                           to f32 once, for all token tiles (and copies x's chunk) */
  int slot;             /* hidden_state: which of the graph's n_hidden slots */
} OpAttr;

/* The stack buffers of a float matmul kernel (lower_matmul.c), which
 * tile_matmul sizes its tiles to fit (kernel threads have 16 MiB stacks):
 * parked accumulators max_block x tile_n floats, the staged W chunk
 * tile_n x tile_k floats, and the staged x chunk max_block x (tile_k +
 * IR_STAGED_X_PAD) floats. */
enum {
  IR_MATMUL_ACCBUF_MAX = 1 << 20,
  IR_STAGED_W_MAX = 1 << 20,
  IR_STAGED_X_MAX = 4 << 20,
  IR_STAGED_X_PAD = 16, /* floats past each staged x row: rows apart by a multiple of
                           4 KiB would share cache sets */
};

struct Op {
  int id;
  OpKind kind;
  Value *in[3];
  int n_in;
  Value *out;
  OpAttr a;
  Op *next, *prev;
};

typedef struct {
  int n_layer, d_model, n_head, head_dim, d_ff, vocab, max_ctx;
  int rotary_ndims, max_block;
  double rotary_base, eps;
  bool parallel_residual, tied, attention_bias;
} GraphDims;

typedef struct {
  Arena *arena;
  GraphDims dims;
  Op *first, *last;
  int n_ops, n_values;
  Value **values; /* every value, by id */
  int cap_values;
  Value *tokens, *logits;
  Value **kcache, **vcache; /* per layer */
  int n_hidden;             /* hidden-state slots (n_layer + 1), or 0: none */
  bool attentions;          /* one attention_probs op per layer */
  int64_t arena_bytes;     /* set by plan_memory */
  int64_t weights_bytes;   /* set by plan_weights */
} Graph;

Graph *ir_graph_new(Arena *a, const GraphDims *d);
Value *ir_value(Graph *g, ValueKind k, DType t, const char *name, int rank,
                const int64_t *dims, bool dyn0);
Value *ir_weight(Graph *g, const char *tensor, DType t, int rank,
                 const int64_t *dims);
/* Appends an op; its result value is created from the op's shape rule. */
Op *ir_op(Graph *g, OpKind k, Value **in, int n_in, const OpAttr *a,
          const char *name);
void ir_remove_op(Graph *g, Op *op);
void ir_move_before(Graph *g, Op *op, Op *before);
/* Op ids follow list order again (passes call it after moving ops; passes
 * may compare ids to ask "defined before"). */
void ir_renumber(Graph *g);
void ir_replace_uses(Graph *g, Value *from, Value *to, Op *after);
void ir_recount_uses(Graph *g);
int64_t ir_value_bytes(const Value *v); /* with T = max_block */

/* Text form: stable, one line per value/op; tests compare it. */
void ir_print(const Graph *g, FILE *f);
/* Checks shapes, dtypes, def-before-use, arity; returns 0 or -1 with the
 * first violation in e. */
int ir_verify(const Graph *g, Err *e);

#endif
