/* cg_module.c — one LLVM module per model: the py_model description, one
 * kernel per op, and py_forward calling them in order through the runtime's
 * parallel_for.  Then LLVM's O3 pipeline for the target and the output file. */
#include <llvm-c/Analysis.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/pythia_abi.h"
#include "cg.h"

static void init_types(Cg *c) {
  c->f32 = LLVMFloatTypeInContext(c->ctx);
  c->f64 = LLVMDoubleTypeInContext(c->ctx);
  c->f16 = LLVMHalfTypeInContext(c->ctx);
  c->i16 = LLVMInt16TypeInContext(c->ctx);
  c->i32 = LLVMInt32TypeInContext(c->ctx);
  c->i64 = LLVMInt64TypeInContext(c->ctx);
  c->i8 = LLVMInt8TypeInContext(c->ctx);
  c->ptr = LLVMPointerTypeInContext(c->ctx, 0);
  c->voidt = LLVMVoidTypeInContext(c->ctx);
  LLVMTypeRef f[RUN_NFIELDS] = {c->ptr, c->ptr, c->ptr, c->ptr, c->ptr, c->i64,
                                c->i64, c->ptr, c->i64, c->ptr, c->ptr, c->ptr, c->ptr, c->i64};
  c->run_t = LLVMStructCreateNamed(c->ctx, "PyRun");
  LLVMStructSetBody(c->run_t, f, RUN_NFIELDS, 0);
  LLVMTypeRef kp[3] = {c->ptr, c->i64, c->i64};
  c->kernel_t = LLVMFunctionType(c->voidt, kp, 3, 0);
}

static LLVMValueRef const_string(Cg *c, const char *name, const char *s) {
  if (!s) s = "";
  LLVMValueRef init = LLVMConstStringInContext2(c->ctx, s, strlen(s), 0);
  LLVMValueRef g = LLVMAddGlobal(c->mod, LLVMTypeOf(init), name);
  LLVMSetInitializer(g, init);
  LLVMSetGlobalConstant(g, 1);
  LLVMSetLinkage(g, LLVMPrivateLinkage);
  return g;
}

/* "kind %out\n" per op, in graph order: names for pythia_gen --profile */
static char *op_name_lines(const Graph *g) {
  size_t cap = 64, len = 0;
  for (const Op *op = g->first; op; op = op->next) cap += strlen(op_names[op->kind]) + strlen(op->out->name) + 4;
  char *s = malloc(cap);
  PY_ASSERT(s);
  for (const Op *op = g->first; op; op = op->next)
    len += (size_t)snprintf(s + len, cap - len, "%s %%%s\n", op_names[op->kind], op->out->name);
  s[len] = 0;
  return s;
}

/* const PyModel py_model = {...}; field order as in runtime/pythia_abi.h */
static void emit_model_desc(Cg *c, const CgMeta *m) {
  const GraphDims *d = &c->g->dims;
  enum { N_FIELDS = 11 + 3 + 5 + 4 }; /* ints, longs, strings, op_names, n_ops, n_hidden, attentions */
  LLVMTypeRef ft[N_FIELDS];
  LLVMValueRef fv[N_FIELDS];
  int n = 0;
  const int32_t kv_bytes = d->n_layer > 0 ? dtype_size(c->g->kcache[0]->dtype) : 4;
  int32_t ints[11] = {PY_ABI_VERSION, d->n_layer, d->d_model, d->n_head, d->head_dim, d->d_ff,
                      d->vocab, d->max_ctx, d->rotary_ndims, d->max_block, kv_bytes};
  for (int i = 0; i < 11; i++) ft[n] = c->i32, fv[n++] = LLVMConstInt(c->i32, (unsigned)ints[i], 0);
  uint64_t longs[3] = {(uint64_t)c->g->arena_bytes, (uint64_t)c->g->weights_bytes, m->layout_hash};
  for (int i = 0; i < 3; i++) ft[n] = c->i64, fv[n++] = LLVMConstInt(c->i64, longs[i], 0);
  const char *strs[5] = {m->config_json, m->source, m->options, c->target->describe, m->weights_dtype};
  for (int i = 0; i < 5; i++) {
    char name[32];
    snprintf(name, sizeof name, "py_model.str%d", i);
    ft[n] = c->ptr, fv[n++] = const_string(c, name, strs[i]);
  }
  char *ops = op_name_lines(c->g);
  ft[n] = c->ptr, fv[n++] = const_string(c, "py_model.op_names", ops);
  free(ops);
  int n_ops = 0;
  for (const Op *op = c->g->first; op; op = op->next) n_ops++;
  ft[n] = c->i32, fv[n++] = LLVMConstInt(c->i32, (unsigned)n_ops, 0);
  ft[n] = c->i32, fv[n++] = LLVMConstInt(c->i32, (unsigned)c->g->n_hidden, 0);
  ft[n] = c->i32, fv[n++] = LLVMConstInt(c->i32, c->g->attentions ? 1u : 0u, 0);
  PY_ASSERT(n == N_FIELDS);
  LLVMTypeRef st = LLVMStructTypeInContext(c->ctx, ft, (unsigned)n, 0);
  LLVMValueRef g = LLVMAddGlobal(c->mod, st, "py_model");
  LLVMSetInitializer(g, LLVMConstNamedStruct(st, fv, (unsigned)n));
  LLVMSetGlobalConstant(g, 1);
}

static void emit_forward(Cg *c, LLVMValueRef *kernels) {
  LLVMTypeRef fp[1] = {c->ptr};
  LLVMValueRef fn = LLVMAddFunction(c->mod, "py_forward", LLVMFunctionType(c->voidt, fp, 1, 0));
  c->fn = fn;
  c->r = LLVMGetParam(fn, 0);
  LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->ctx, fn, "entry"));
  LLVMTypeRef pf_params[4] = {c->ptr, c->ptr, c->ptr, c->i64};
  LLVMTypeRef pf_t = LLVMFunctionType(c->voidt, pf_params, 4, 0);
  int i = 0;
  for (const Op *op = c->g->first; op; op = op->next, i++) {
    /* reloaded per call: the pool may be anything the runtime likes */
    LLVMValueRef pf = cg_run_field(c, RUN_PARALLEL_FOR);
    LLVMValueRef args[4] = {cg_run_field(c, RUN_POOL), kernels[i], c->r, cg_items(c, op)};
    LLVMBuildCall2(c->b, pf_t, pf, args, 4, "");
  }
  LLVMBuildRetVoid(c->b);
}

int cg_emit(const Graph *g, const CgTarget *t, const CgMeta *m, CgEmitKind kind,
            const char *out_path, Err *e) {
  Cg cc = {0}, *c = &cc;
  c->g = g;
  c->target = t;
  c->ctx = LLVMContextCreate();
  c->mod = LLVMModuleCreateWithNameInContext("pythia_model", c->ctx);
  c->b = LLVMCreateBuilderInContext(c->ctx);
  LLVMSetTarget(c->mod, t->triple);
  LLVMTargetDataRef td = LLVMCreateTargetDataLayout(t->tm);
  char *layout = LLVMCopyStringRepOfTargetData(td);
  LLVMSetDataLayout(c->mod, layout);
  LLVMDisposeMessage(layout);
  LLVMDisposeTargetData(td);
  init_types(c);
  emit_model_desc(c, m);

  LLVMValueRef *kernels = calloc((size_t)g->n_ops + 1, sizeof *kernels);
  int i = 0;
  c->share = m->share_kernels;
  for (const Op *op = g->first; op; op = op->next) kernels[i++] = cg_lower_op(c, op);
  cg_bodies_free(c);
  emit_forward(c, kernels);
  free(kernels);

  int rc = 0;
  char *msg = NULL;
  if (LLVMVerifyModule(c->mod, LLVMReturnStatusAction, &msg)) {
    rc = err_set(e, "internal error: generated LLVM IR is invalid: %.600s", msg);
    goto done;
  }
  LLVMDisposeMessage(msg);
  msg = NULL;
  if (m->opt_level > 0) {
    char pipeline[32];
    snprintf(pipeline, sizeof pipeline, "default<O%d>", m->opt_level);
    LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
    LLVMPassBuilderOptionsSetLoopVectorization(po, 1);
    LLVMPassBuilderOptionsSetSLPVectorization(po, 1);
    LLVMPassBuilderOptionsSetLoopUnrolling(po, 1);
    LLVMErrorRef err = LLVMRunPasses(c->mod, pipeline, t->tm, po);
    LLVMDisposePassBuilderOptions(po);
    if (err) {
      char *em = LLVMGetErrorMessage(err);
      rc = err_set(e, "LLVM optimisation failed: %s", em);
      LLVMDisposeErrorMessage(em);
      goto done;
    }
  }
  if (kind == CG_EMIT_LLVM) {
    if (LLVMPrintModuleToFile(c->mod, out_path, &msg))
      rc = err_set(e, "%s: cannot write: %s", out_path, msg);
  } else {
    if (LLVMTargetMachineEmitToFile(t->tm, c->mod, out_path,
                                    kind == CG_EMIT_ASM ? LLVMAssemblyFile : LLVMObjectFile, &msg))
      rc = err_set(e, "%s: cannot write: %s", out_path, msg);
  }
done:
  if (msg) LLVMDisposeMessage(msg);
  LLVMDisposeBuilder(c->b);
  LLVMDisposeModule(c->mod);
  LLVMContextDispose(c->ctx);
  return rc;
}
