/* fuse_epilogue.c — moves element-wise work into the matmul that produces
 * its operand, so the result is written once instead of written, read and
 * written again:
 *
 *   gelu(matmul(x, W, b))        ->  matmul(x, W, b) {epilogue=gelu}
 *   add(r, matmul(x, W, b))      ->  matmul(x, W, b) {residual=%r}
 *
 * Legal when the matmul's result has no other reader, the residual operand
 * is defined before the matmul runs, and (for gelu) no residual was fused
 * yet: the epilogue order is bias, gelu, residuals. */
#include "pass.h"

int pass_readers_besides(const Graph *g, const Value *v, OpKind besides) {
  int n = 0;
  for (const Op *o = g->first; o; o = o->next) {
    if (o->kind == besides) continue;
    for (int i = 0; i < o->n_in; i++) n += o->in[i] == v;
    for (int i = 0; i < 2; i++) n += o->a.residual[i] == v;
  }
  return n;
}

int pass_single_reader(const Graph *g, const Value *v) {
  return pass_readers_besides(g, v, OP_COUNT) == 1 && g->logits != v;
}

static int defined_before(const Value *v, const Op *op) {
  return !v->def || v->def->id < op->id;
}

static int free_residual_slot(const Op *mm) {
  return !mm->a.residual[0] ? 0 : !mm->a.residual[1] ? 1 : -1;
}

/* The matmul that can absorb op, with op's other operand fused; or NULL. */
static Op *absorb(Graph *g, Op *op) {
  if (op->kind == OP_GELU) {
    Op *mm = op->in[0]->def;
    if (!mm || mm->kind != OP_MATMUL || mm->a.gelu || mm->a.residual[0] ||
        !pass_single_reader(g, mm->out))
      return NULL;
    mm->a.gelu = true;
    return mm;
  }
  if (op->kind == OP_ADD)
    for (int i = 0; i < 2; i++) {
      Op *mm = op->in[i]->def;
      Value *r = op->in[1 - i];
      if (mm && mm->kind == OP_MATMUL && !mm->a.last_rows && free_residual_slot(mm) >= 0 &&
          pass_single_reader(g, mm->out) && defined_before(r, mm)) {
        mm->a.residual[free_residual_slot(mm)] = r;
        return mm;
      }
    }
  return NULL;
}

int pass_fuse_epilogue(Graph *g, const PassOptions *o, Err *e) {
  Op *next;
  for (Op *op = g->first; op; op = next) {
    next = op->next;
    Op *mm = absorb(g, op);
    if (!mm) continue;
    /* the matmul's result now is the op's result */
    mm->out->name = op->out->name;
    ir_replace_uses(g, op->out, mm->out, op);
    ir_remove_op(g, op);
  }
  return 0;
}
