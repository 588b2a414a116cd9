/* pass.h — passes are Graph -> Graph functions run in the order of the
 * pipeline table (pipeline.c).  Each can be switched off by name; the
 * verifier may run after each; --print-after dumps the IR after any. */
#ifndef PY_PASS_H
#define PY_PASS_H

#include <stdio.h>

#include "../ir/ir.h"

typedef struct {
  const char *disabled;     /* comma list of pass names switched off */
  const char *print_after;  /* pass name, "all", or NULL */
  FILE *print_to;           /* where --print-after writes (stdout) */
  int verify_each;          /* run ir_verify after every pass */
  int tile_n, tile_rn, tile_rt; /* --tile override; 0 = chosen from the target */
  int prefetch;                 /* --prefetch: decode prefetch distance, bytes; 0 = none */
  int no_stage;                 /* --no-stage: prefill converts 16-bit W per register tile */
  int tile_k;                   /* --tile 4th value: prefill k chunk */
  int tile_streams;             /* --tile 5th value: decode GEMV streams */
  int vector_width;         /* floats per vector register of the target */
} PassOptions;

typedef int (*PassFn)(Graph *g, const PassOptions *o, Err *e);

typedef struct {
  const char *name;
  PassFn run;
  int optional; /* may be switched off (fusion, tiling); required ones may not */
  const char *what;
} Pass;

extern const Pass pass_pipeline[];
extern const int pass_count;

/* Runs the pipeline; returns 0 or -1 with the failing pass named in e. */
int pass_run_pipeline(Graph *g, const PassOptions *o, Err *e);
/* Checks a comma list of pass names; -1 naming the unknown one. */
int pass_check_names(const char *list, int optional_only, Err *e);
int pass_is_disabled(const PassOptions *o, const char *name);

/* Reads of v (as an operand or a fused residual) by ops other than those of
 * kind `besides` (OP_COUNT: by any op). */
int pass_readers_besides(const Graph *g, const Value *v, OpKind besides);
/* v is read by exactly one op and is not the graph's logits. */
int pass_single_reader(const Graph *g, const Value *v);

int pass_fold_layernorm(Graph *g, const PassOptions *o, Err *e);
int pass_fuse_parallel_residual(Graph *g, const PassOptions *o, Err *e);
int pass_fuse_epilogue(Graph *g, const PassOptions *o, Err *e);
int pass_fuse_qkv_rotary(Graph *g, const PassOptions *o, Err *e);
int pass_tile_matmul(Graph *g, const PassOptions *o, Err *e);
int pass_plan_memory(Graph *g, const PassOptions *o, Err *e);
int pass_plan_weights(Graph *g, const PassOptions *o, Err *e);

#endif
