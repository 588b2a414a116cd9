/* fuse_parallel_residual.c — the parallel residual x + attn(ln1 x) +
 * mlp(ln2 x) in one step: the MLP's down projection adds both the residual
 * stream and the attention branch in its epilogue,
 *
 *   add(add(x, a), matmul(h, W2, b2))  ->  matmul(h, W2, b2) {residual=%x, residual=%a}
 *
 * so the two branch outputs reach the residual stream with one write.  Legal
 * when the inner sum and the matmul have no other reader and x, a are defined
 * before the matmul. */
#include "pass.h"

int pass_fuse_parallel_residual(Graph *g, const PassOptions *o, Err *e) {
  if (!g->dims.parallel_residual) return 0;
  Op *next;
  for (Op *op = g->first; op; op = next) {
    next = op->next;
    if (op->kind != OP_ADD) continue;
    for (int i = 0; i < 2; i++) {
      Op *inner = op->in[i]->def, *mm = op->in[1 - i]->def;
      if (!inner || inner->kind != OP_ADD || !mm || mm->kind != OP_MATMUL || mm->a.residual[0] ||
          mm->a.last_rows || !pass_single_reader(g, inner->out) || !pass_single_reader(g, mm->out))
        continue;
      Value *x = inner->in[0], *a = inner->in[1];
      if ((x->def && x->def->id > mm->id) || (a->def && a->def->id > mm->id)) continue;
      mm->a.residual[0] = x;
      mm->a.residual[1] = a;
      mm->out->name = op->out->name;
      ir_replace_uses(g, op->out, mm->out, op);
      ir_remove_op(g, op);
      ir_remove_op(g, inner);
      break;
    }
  }
  return 0;
}
