/* codegen.h — lowers a planned Graph to one LLVM module (the py_model
 * description and py_forward with one kernel function per op), optimises it
 * with LLVM's O3 pipeline for the chosen target, and writes it out. */
#ifndef PY_CODEGEN_H
#define PY_CODEGEN_H

#include "../../ir/ir.h"

typedef struct CgTarget CgTarget;

/* name: x86-64 | x86-64-v2 | x86-64-v3 | x86-64-v4 | native */
CgTarget *cg_target_new(const char *name, Err *e);
void cg_target_free(CgTarget *t);
int cg_target_vector_width(const CgTarget *t); /* f32 lanes of the widest vector */
const char *cg_target_describe(const CgTarget *t); /* "cpu +feat,..." */
int cg_target_decode_prefetch(const CgTarget *t);  /* --prefetch when none is given */
int cg_target_decode_streams(const CgTarget *t);   /* --tile's S when none is given; 0: by registers */
int cg_target_panel_rows(const CgTarget *t);       /* --tile's RN when none is given; 0: two vectors */

typedef enum { CG_EMIT_OBJ, CG_EMIT_ASM, CG_EMIT_LLVM } CgEmitKind;

typedef struct {
  const char *config_json, *source, *options, *weights_dtype;
  uint64_t layout_hash;
  int opt_level; /* 0..3 */
  int share_kernels; /* ops whose code is the same call one function (cg_share.c) */
} CgMeta;

int cg_emit(const Graph *g, const CgTarget *t, const CgMeta *m, CgEmitKind kind,
            const char *out_path, Err *e);

#endif
