/* plan_weights.c — gives every weight that an op reads its offset in the
 * weight blob, in the order the network reads them (so decode streams the
 * blob front to back).  Offsets are 64-byte aligned; big tensors start on a
 * page so the kernels' streaming reads never straddle two tensors' pages. */
#include "pass.h"

static void place(Graph *g, Value *w, int64_t *top) {
  if (w->kind != VK_WEIGHT || w->offset >= 0) return;
  int64_t bytes = ir_value_bytes(w);
  int64_t align = bytes >= 65536 ? 4096 : 64;
  *top = (*top + align - 1) / align * align;
  w->offset = *top;
  *top += bytes;
}

int pass_plan_weights(Graph *g, const PassOptions *o, Err *e) {
  int64_t top = 0;
  for (int i = 0; i < g->n_values; i++)
    if (g->values[i]->kind == VK_WEIGHT) g->values[i]->offset = -1;
  for (Op *op = g->first; op; op = op->next)
    for (int i = 0; i < op->n_in; i++)
      if (op->in[i]) place(g, op->in[i], &top);
  g->weights_bytes = (top + 4095) / 4096 * 4096;
  return 0;
}
