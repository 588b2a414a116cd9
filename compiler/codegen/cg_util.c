/* cg_util.c — the kernel-building layer of cg.h: loops, addressing, typed
 * loads, intrinsics.  Nothing here knows about particular ops. */
#include <string.h>

#include "cg.h"

LLVMValueRef cg_i64(Cg *c, int64_t v) { return LLVMConstInt(c->i64, (unsigned long long)v, 1); }
LLVMValueRef cg_f32(Cg *c, double v) { return LLVMConstReal(c->f32, v); }

Loop cg_loop(Cg *c, LLVMValueRef lo, LLVMValueRef hi, int64_t step, const char *name) {
  Loop l = {0};
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(c->b);
  l.head = LLVMAppendBasicBlockInContext(c->ctx, c->fn, name);
  l.body = LLVMAppendBasicBlockInContext(c->ctx, c->fn, name);
  l.exit = LLVMAppendBasicBlockInContext(c->ctx, c->fn, name);
  l.hi = hi;
  l.step = cg_i64(c, step);
  LLVMBuildBr(c->b, l.head);
  LLVMPositionBuilderAtEnd(c->b, l.head);
  l.phi = LLVMBuildPhi(c->b, c->i64, name);
  LLVMAddIncoming(l.phi, &lo, &pre, 1);
  l.i = l.phi;
  LLVMValueRef cond = LLVMBuildICmp(c->b, LLVMIntSLT, l.i, hi, "");
  LLVMBuildCondBr(c->b, cond, l.body, l.exit);
  LLVMPositionBuilderAtEnd(c->b, l.body);
  return l;
}

void cg_loop_end(Cg *c, Loop *l) {
  LLVMValueRef next = LLVMBuildNSWAdd(c->b, l->i, l->step, "");
  LLVMBasicBlockRef end = LLVMGetInsertBlock(c->b);
  LLVMBuildBr(c->b, l->head);
  LLVMAddIncoming(l->phi, &next, &end, 1);
  LLVMPositionBuilderAtEnd(c->b, l->exit);
}

CarryLoop cg_carry_loop(Cg *c, LLVMValueRef lo, const LLVMValueRef *init, int n, const char *name) {
  PY_ASSERT(n <= CG_MAX_CARRY);
  CarryLoop l = {.n = n};
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(c->b);
  l.body = LLVMAppendBasicBlockInContext(c->ctx, c->fn, name);
  l.exit = LLVMAppendBasicBlockInContext(c->ctx, c->fn, name);
  LLVMBuildBr(c->b, l.body);
  LLVMPositionBuilderAtEnd(c->b, l.body);
  l.i = LLVMBuildPhi(c->b, c->i64, name);
  LLVMAddIncoming(l.i, &lo, &pre, 1);
  for (int k = 0; k < n; k++) {
    l.phi[k] = LLVMBuildPhi(c->b, LLVMTypeOf(init[k]), "carry");
    LLVMAddIncoming(l.phi[k], (LLVMValueRef *)&init[k], &pre, 1);
  }
  return l;
}

void cg_carry_loop_end(Cg *c, CarryLoop *l, int64_t step, LLVMValueRef hi, const LLVMValueRef *next) {
  LLVMValueRef i2 = LLVMBuildNSWAdd(c->b, l->i, cg_i64(c, step), "");
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(c->b);
  LLVMAddIncoming(l->i, &i2, &latch, 1);
  for (int k = 0; k < l->n; k++) LLVMAddIncoming(l->phi[k], (LLVMValueRef *)&next[k], &latch, 1);
  LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, i2, hi, ""), l->body, l->exit);
  LLVMPositionBuilderAtEnd(c->b, l->exit);
}

LLVMValueRef cg_run_field(Cg *c, int field) {
  LLVMValueRef p = LLVMBuildStructGEP2(c->b, c->run_t, c->r, (unsigned)field, "");
  LLVMTypeRef t = LLVMStructGetTypeAtIndex(c->run_t, (unsigned)field);
  LLVMValueRef v = LLVMBuildLoad2(c->b, t, p, "");
  return v;
}

LLVMValueRef cg_gep(Cg *c, LLVMTypeRef t, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildInBoundsGEP2(c->b, t, base, &idx, 1, "");
}

LLVMValueRef cg_byte_offset(Cg *c, LLVMValueRef base, int64_t bytes) {
  return cg_gep(c, c->i8, base, cg_i64(c, bytes));
}

LLVMValueRef cg_value_ptr(Cg *c, const Value *v) {
  if (c->bound.table && (v->kind == VK_WEIGHT || v->kind == VK_TEMP || v->kind == VK_CACHE))
    return cg_bound_ptr(c, v);
  switch (v->kind) {
  case VK_WEIGHT:
    PY_ASSERT(v->offset >= 0);
    return cg_byte_offset(c, cg_run_field(c, RUN_WEIGHTS), v->offset);
  case VK_TEMP:
    PY_ASSERT(v->offset >= 0);
    return cg_byte_offset(c, cg_run_field(c, RUN_ARENA), v->offset);
  case VK_CACHE: {
    int64_t layer_bytes = (int64_t)c->g->dims.max_ctx * c->g->dims.d_model * dtype_size(v->dtype);
    return cg_byte_offset(c, cg_run_field(c, v->cache_kv ? RUN_VCACHE : RUN_KCACHE),
                          layer_bytes * v->layer);
  }
  case VK_OUTPUT: return cg_run_field(c, RUN_LOGITS);
  case VK_HIDDEN: break; /* lower_hidden_state addresses PyRun.hidden itself */
  case VK_ATTN: break;   /* and cg_lower_attention_probs PyRun.attn */
  case VK_INPUT: return cg_run_field(c, RUN_TOKENS);
  }
  PY_ASSERT(0);
  return NULL;
}

LLVMValueRef cg_load_f32(Cg *c, DType t, LLVMValueRef p, LLVMValueRef idx) {
  switch (t) {
  case DT_F32: return LLVMBuildLoad2(c->b, c->f32, cg_gep(c, c->f32, p, idx), "");
  case DT_F16: {
    LLVMValueRef h = LLVMBuildLoad2(c->b, c->f16, cg_gep(c, c->f16, p, idx), "");
    return LLVMBuildFPExt(c->b, h, c->f32, "");
  }
  case DT_BF16: {
    LLVMValueRef h = LLVMBuildLoad2(c->b, c->i16, cg_gep(c, c->i16, p, idx), "");
    LLVMValueRef w = LLVMBuildShl(c->b, LLVMBuildZExt(c->b, h, c->i32, ""),
                                  LLVMConstInt(c->i32, 16, 0), "");
    return LLVMBuildBitCast(c->b, w, c->f32, "");
  }
  default: break; /* i32, and q8_0/q4_0 blocks (lower_qmatmul.c) */
  }
  PY_ASSERT(0);
  return NULL;
}

void cg_store_f32(Cg *c, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef v) {
  LLVMBuildStore(c->b, v, cg_gep(c, c->f32, p, idx));
}

void cg_store_as(Cg *c, DType t, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef v) {
  PY_ASSERT(t == DT_F32 || t == DT_F16);
  if (t == DT_F32) {
    cg_store_f32(c, p, idx, v);
    return;
  }
  LLVMBuildStore(c->b, LLVMBuildFPTrunc(c->b, v, c->f16, ""), cg_gep(c, c->f16, p, idx));
}

LLVMValueRef cg_call_intrinsic(Cg *c, const char *name, LLVMTypeRef overload,
                               LLVMValueRef *args, int n) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  PY_ASSERT(id != 0);
  LLVMTypeRef ov[1] = {overload};
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(c->mod, id, ov, overload ? 1 : 0);
  LLVMTypeRef ft = LLVMIntrinsicGetType(c->ctx, id, ov, overload ? 1 : 0);
  return LLVMBuildCall2(c->b, ft, fn, args, (unsigned)n, "");
}

void cg_prefetch_t0(Cg *c, LLVMValueRef p) {
  LLVMValueRef args[4] = {p, LLVMConstInt(c->i32, 0, 0) /* read */, LLVMConstInt(c->i32, 3, 0) /* locality: L1 */,
                          LLVMConstInt(c->i32, 1, 0) /* data cache */};
  cg_call_intrinsic(c, "llvm.prefetch", c->ptr, args, 4);
}

LLVMValueRef cg_splat(Cg *c, LLVMValueRef s, unsigned n) {
  LLVMTypeRef vt = LLVMVectorType(LLVMTypeOf(s), n);
  LLVMValueRef v = LLVMBuildInsertElement(c->b, LLVMGetPoison(vt), s, LLVMConstInt(c->i32, 0, 0), "");
  return LLVMBuildShuffleVector(c->b, v, LLVMGetPoison(vt), LLVMConstNull(LLVMVectorType(c->i32, n)), "");
}

LLVMValueRef cg_fma(Cg *c, LLVMValueRef a, LLVMValueRef b, LLVMValueRef d) {
  LLVMValueRef args[3] = {a, b, d};
  return cg_call_intrinsic(c, "llvm.fma", LLVMTypeOf(a), args, 3);
}

LLVMValueRef cg_fast(LLVMValueRef inst) {
  if (LLVMCanValueUseFastMathFlags(inst))
    LLVMSetFastMathFlags(inst, LLVMFastMathAllowReassoc | LLVMFastMathAllowContract);
  return inst;
}

void cg_unless_null(Cg *c, LLVMValueRef p, LLVMBasicBlockRef done) {
  LLVMBasicBlockRef given = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "given");
  LLVMBuildCondBr(c->b, LLVMBuildIsNull(c->b, p, ""), done, given);
  LLVMPositionBuilderAtEnd(c->b, given);
}

LLVMValueRef cg_alloca_array(Cg *c, LLVMTypeRef t, int64_t n, const char *name) {
  /* allocas go in the entry block so they are static and promotable */
  LLVMBasicBlockRef cur = LLVMGetInsertBlock(c->b);
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(c->fn);
  LLVMValueRef first = LLVMGetFirstInstruction(entry);
  if (first) LLVMPositionBuilderBefore(c->b, first);
  else LLVMPositionBuilderAtEnd(c->b, entry);
  LLVMValueRef a = LLVMBuildAlloca(c->b, LLVMArrayType2(t, (uint64_t)n), name);
  LLVMSetAlignment(a, 64);
  LLVMPositionBuilderAtEnd(c->b, cur);
  return a;
}

LLVMValueRef cg_min_i64(Cg *c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, a, b, ""), a, b, "");
}

LLVMValueRef cg_kernel_begin(Cg *c, const char *name) { return cg_function_begin(c, name, c->kernel_t); }

LLVMValueRef cg_function_begin(Cg *c, const char *name, LLVMTypeRef type) {
  c->fn = LLVMAddFunction(c->mod, name, type);
  LLVMSetLinkage(c->fn, LLVMInternalLinkage);
  c->r = LLVMGetParam(c->fn, 0);
  c->lo = LLVMGetParam(c->fn, 1);
  c->hi = LLVMGetParam(c->fn, 2);
  LLVMAddAttributeAtIndex(c->fn, LLVMAttributeFunctionIndex,
                          LLVMCreateEnumAttribute(c->ctx, LLVMGetEnumAttributeKindForName("nounwind", 8), 0));
  if (c->target->vector_width >= 16) {
    LLVMAddTargetDependentFunctionAttr(c->fn, "prefer-vector-width", "512");
    LLVMAddTargetDependentFunctionAttr(c->fn, "min-legal-vector-width", "512");
  }
  LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "entry");
  LLVMPositionBuilderAtEnd(c->b, entry);
  return c->fn;
}

void cg_kernel_end(Cg *c) { LLVMBuildRetVoid(c->b); }

LLVMValueRef cg_cache_head_base(Cg *c, LLVMValueRef h) {
  return LLVMBuildMul(c->b, h, cg_i64(c, (int64_t)c->g->dims.max_ctx * c->g->dims.head_dim), "");
}

/* llvm.vector.reduce.fmax keeps maxnum's NaN rule, which the x86 backend
 * expands into a serial chain of n scalar max/compare/blend steps (~100
 * cycles of latency for 16 lanes); select(a > b, a, b) is one vmaxps.  Max
 * is exact, so the order of the tree does not change the result. */
LLVMValueRef cg_lane_max(Cg *c, LLVMValueRef v, unsigned n) {
  PY_ASSERT(n >= 1 && n <= 64 && (n & (n - 1)) == 0);
  for (unsigned w = n / 2; w >= 1; w /= 2) {
    LLVMValueRef idx[64];
    for (unsigned i = 0; i < n; i++) idx[i] = LLVMConstInt(c->i32, (i + w) % n, 0);
    LLVMValueRef hi = LLVMBuildShuffleVector(c->b, v, LLVMGetUndef(LLVMTypeOf(v)), LLVMConstVector(idx, n), "");
    v = LLVMBuildSelect(c->b, LLVMBuildFCmp(c->b, LLVMRealOGT, v, hi, ""), v, hi, "");
  }
  return LLVMBuildExtractElement(c->b, v, LLVMConstInt(c->i32, 0, 0), "");
}
