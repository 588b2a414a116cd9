/* ops.h — the IR's op table.  One row an op: name, number of operands, and the
 * properties passes need to decide legality.  Semantics of each op are in
 * docs/ir.md; adding an op is one row here, one lowering in codegen, one
 * paragraph there.
 *
 *   X(ENUM, "text name", n_operands, flags)
 *
 * Flags: OPF_ELEMWISE (row-wise map, fusable as an epilogue), OPF_WEIGHTS
 * (reads weight values), OPF_EFFECT (writes state outside the arena: the
 * KV cache, the caller's hidden-state and attention buffers), OPF_RUNTIME_POS (depends on the run-time position). */
#ifndef PY_OPS_H
#define PY_OPS_H

#define OPF_ELEMWISE 1u
#define OPF_WEIGHTS 2u
#define OPF_EFFECT 4u
#define OPF_RUNTIME_POS 8u

#define IR_OPS(X)                                                          \
  X(OP_EMBED, "embed", 2, OPF_WEIGHTS)                                     \
  X(OP_LAYERNORM, "layernorm", 3, OPF_WEIGHTS)                             \
  X(OP_MATMUL, "matmul", 3, OPF_WEIGHTS)                                   \
  X(OP_GELU, "gelu", 1, OPF_ELEMWISE)                                      \
  X(OP_ADD, "add", 2, OPF_ELEMWISE)                                        \
  X(OP_HEAD_SLICE, "head_slice", 1, 0)                                     \
  X(OP_ROTARY, "rotary", 1, OPF_RUNTIME_POS)                               \
  X(OP_KV_STORE, "kv_store", 2, OPF_EFFECT | OPF_RUNTIME_POS)              \
  X(OP_ATTENTION, "attention", 3, OPF_RUNTIME_POS)                        \
  X(OP_QKV_ROTARY, "qkv_rotary", 3, OPF_EFFECT | OPF_RUNTIME_POS)         \
  X(OP_HIDDEN_STATE, "hidden_state", 1, OPF_EFFECT)                       \
  X(OP_ATTENTION_PROBS, "attention_probs", 2, OPF_EFFECT | OPF_RUNTIME_POS)

typedef enum {
#define X(e, n, a, f) e,
  IR_OPS(X)
#undef X
  OP_COUNT
} OpKind;

extern const char *const op_names[OP_COUNT];
extern const int op_arity[OP_COUNT];
extern const unsigned op_flags[OP_COUNT];

#endif
