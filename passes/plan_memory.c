/* plan_memory.c — places every intermediate activation in one arena, sized
 * at compile time for max_block tokens, reusing memory once a value is dead.
 *
 * Invariant after this pass: two temps whose live ranges [def, last use]
 * overlap never overlap in the arena; an op's result never shares bytes with
 * its operands (their ranges meet at the op).  Offsets are 64-byte aligned.
 * Placement is greedy first fit in op order: deterministic. */
#include <string.h>

#include "pass.h"

typedef struct {
  int64_t off, size;
  int free_at; /* op index after which the block is free again */
} Block;

int pass_plan_memory(Graph *g, const PassOptions *o, Err *e) {
  int n = g->n_values;
  int *last = calloc((size_t)n, sizeof *last);
  Block *live = calloc((size_t)n + 1, sizeof *live);
  if (!last || !live) return err_set(e, "out of memory");
  int idx = 0;
  for (Op *op = g->first; op; op = op->next, idx++) {
    Value *uses[5] = {op->in[0], op->in[1], op->in[2], op->a.residual[0], op->a.residual[1]};
    for (int i = 0; i < 5; i++)
      if (uses[i]) last[uses[i]->id] = idx;
  }
  int n_live = 0;
  int64_t top = 0;
  idx = 0;
  for (Op *op = g->first; op; op = op->next, idx++) {
    Value *v = op->out;
    if (v->kind != VK_TEMP) continue;
    /* retire blocks whose value died before this op */
    int k = 0;
    for (int i = 0; i < n_live; i++)
      if (live[i].free_at >= idx) live[k++] = live[i];
    n_live = k;
    int64_t size = (ir_value_bytes(v) + 63) & ~(int64_t)63;
    /* first fit in the gaps between live blocks, sorted by offset */
    for (int i = 1; i < n_live; i++)
      for (int j = i; j > 0 && live[j - 1].off > live[j].off; j--) {
        Block t = live[j];
        live[j] = live[j - 1];
        live[j - 1] = t;
      }
    int64_t at = 0;
    for (int i = 0; i < n_live; i++) {
      if (live[i].off - at >= size) break;
      if (live[i].off + live[i].size > at) at = live[i].off + live[i].size;
    }
    v->offset = at;
    int end = last[v->id] > idx ? last[v->id] : idx;
    live[n_live++] = (Block){at, size, end};
    if (at + size > top) top = at + size;
  }
  g->arena_bytes = top;
  free(last);
  free(live);
  return 0;
}
