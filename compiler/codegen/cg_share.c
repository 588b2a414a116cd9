/* cg_share.c — one function for the ops whose code is the same.
 *
 * The layers of a model have the same shapes, so their ops lower to the
 * same code but for where their operands are.  Each op's code is built as a
 * body, void body(const PyRun *r, i64 lo, i64 hi, void *const *table), that
 * loads the address of every weight, temporary and cache layer it uses from
 * the table, once, in its entry block (cg_bound_ptr); every other constant
 * (dims, tiles, epsilons, hidden-state slots, layer numbers of attention
 * dumps) stays a constant of the code.  Two bodies whose printed LLVM IR is
 * the same text are the same function: the second is deleted and its op
 * calls the first.  The op's kernel is then a few instructions: fill the
 * table with its own operands' addresses and call the body.
 *
 * Invariants: a body never depends on anything of its op but through its
 * IR text, so sharing by text equality cannot call the wrong code; the
 * table's order is the order in which the body first asked for each value,
 * the same in every op that shares the body.  With sharing off (--no-share-
 * kernels), each op's kernel holds its own code with its addresses as
 * constants; both give the same results bit for bit. */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "cg.h"

struct CgBody {
  uint64_t hash;
  char *ir;         /* the body's IR text, printed under the name "body" */
  LLVMValueRef fn;
};

LLVMValueRef cg_bound_ptr(Cg *c, const Value *v) {
  CgBound *b = &c->bound;
  for (int k = 0; k < b->n; k++)
    if (b->v[k] == v) return b->p[k];
  PY_ASSERT(b->n < CG_MAX_BOUND);
  /* loaded in the entry block, before its branch out if it has one, so it
   * dominates every use; the builder goes back to the end of its block */
  LLVMBasicBlockRef cur = LLVMGetInsertBlock(c->b);
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(c->fn);
  LLVMValueRef term = LLVMGetBasicBlockTerminator(entry);
  if (term) LLVMPositionBuilderBefore(c->b, term);
  else LLVMPositionBuilderAtEnd(c->b, entry);
  LLVMValueRef slot = cg_gep(c, c->ptr, b->table, cg_i64(c, b->n));
  LLVMValueRef p = LLVMBuildLoad2(c->b, c->ptr, slot, "");
  LLVMPositionBuilderAtEnd(c->b, cur);
  b->v[b->n] = v;
  b->p[b->n++] = p;
  return p;
}

/* The body kept for this code: an earlier one with the same IR text (and
 * fn deleted), or fn itself, renamed after the op. */
static LLVMValueRef shared_body(Cg *c, LLVMValueRef fn, const Op *op) {
  char *ir = LLVMPrintValueToString(fn);
  const uint64_t h = XXH3_64bits(ir, strlen(ir));
  for (int i = 0; i < c->n_bodies; i++)
    if (c->bodies[i].hash == h && !strcmp(c->bodies[i].ir, ir)) {
      LLVMDisposeMessage(ir);
      LLVMDeleteFunction(fn);
      /* one copy for all its ops: not inlined into their kernels (a body
       * with one op is, and the op's kernel is its code again) */
      LLVMAddAttributeAtIndex(c->bodies[i].fn, LLVMAttributeFunctionIndex,
                              LLVMCreateEnumAttribute(c->ctx, LLVMGetEnumAttributeKindForName("noinline", 8), 0));
      return c->bodies[i].fn;
    }
  if (c->n_bodies == c->cap_bodies) {
    c->cap_bodies = c->cap_bodies ? 2 * c->cap_bodies : 32;
    c->bodies = realloc(c->bodies, (size_t)c->cap_bodies * sizeof *c->bodies);
    PY_ASSERT(c->bodies);
  }
  c->bodies[c->n_bodies++] = (CgBody){.hash = h, .ir = ir, .fn = fn};
  char name[96];
  snprintf(name, sizeof name, "body%d_%s_%s", c->n_bodies - 1, op_names[op->kind], op->out->name);
  LLVMSetValueName2(fn, name, strlen(name));
  return fn;
}

void cg_bodies_free(Cg *c) {
  for (int i = 0; i < c->n_bodies; i++) LLVMDisposeMessage(c->bodies[i].ir);
  free(c->bodies);
  c->bodies = NULL;
  c->n_bodies = c->cap_bodies = 0;
}

LLVMValueRef cg_lower_op(Cg *c, const Op *op) {
  char name[96];
  snprintf(name, sizeof name, "k%d_%s_%s", op->id, op_names[op->kind], op->out->name);
  if (!c->share) {
    LLVMValueRef fn = cg_kernel_begin(c, name);
    cg_lower_op_body(c, op);
    cg_kernel_end(c);
    return fn;
  }
  LLVMTypeRef params[4] = {c->ptr, c->i64, c->i64, c->ptr};
  LLVMTypeRef body_t = LLVMFunctionType(c->voidt, params, 4, 0);
  LLVMValueRef body = cg_function_begin(c, "body", body_t);
  c->bound = (CgBound){.table = LLVMGetParam(body, 3)};
  cg_lower_op_body(c, op);
  cg_kernel_end(c);
  const CgBound bound = c->bound;
  c->bound.table = NULL;
  body = shared_body(c, body, op);

  LLVMValueRef fn = cg_kernel_begin(c, name);
  LLVMValueRef table = LLVMConstNull(c->ptr);
  if (bound.n > 0) {
    table = cg_alloca_array(c, c->ptr, bound.n, "table");
    for (int k = 0; k < bound.n; k++)
      LLVMBuildStore(c->b, cg_value_ptr(c, bound.v[k]), cg_gep(c, c->ptr, table, cg_i64(c, k)));
  }
  LLVMValueRef args[4] = {c->r, c->lo, c->hi, table};
  LLVMBuildCall2(c->b, body_t, body, args, 4, "");
  cg_kernel_end(c);
  return fn;
}
