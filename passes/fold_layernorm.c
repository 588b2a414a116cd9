/* fold_layernorm.c — folds a LayerNorm's affine (gamma, beta) into the
 * matmuls that read it:
 *
 *   y = (n(x) * gamma + beta) W^T + b  =  n(x) (W * gamma)^T + (b + W beta)
 *
 * where n(x) is the plain normalisation.  The LayerNorm keeps only n(x)
 * ("affine=folded"); each matmul gets new weights with the recipes
 * fold_ln_w(W, gamma) and fold_ln_b(W, beta, b), evaluated (in double for the
 * bias) while the weights stream into the executable.  Only applies when
 * every reader of the LayerNorm is a matmul's activation operand.
 *
 * Exact algebra, evaluated in f32/f64.  Legal only when every reading
 * matmul stores W in f32: rounding W * gamma to f16/bf16 would add a second
 * rounding of the weights (measured: logit errors of 3e-3 to 3e-2 on the
 * test models instead of 1e-5), so 16-bit models keep the affine in the
 * LayerNorm, and the dump shows it.  Nor does it fold into a W that another
 * op reads too (a tied embedding): W would be stored twice. */
#include "pass.h"

static int only_matmul_readers(Graph *g, const Value *v) {
  int n = 0;
  for (Op *o = g->first; o; o = o->next) {
    for (int i = 0; i < o->n_in; i++)
      if (o->in[i] == v) {
        if (o->kind != OP_MATMUL || i != 0) return 0;
        n++;
      }
    for (int i = 0; i < 2; i++)
      if (o->a.residual[i] == v) return 0;
  }
  return n > 0 && g->logits != v;
}

/* Every matmul reading v stores W in f32, and W has no reader besides
 * matmuls (a tied embedding also read by `embed` would be stored twice). */
static int readers_fold_cleanly(Graph *g, const Value *v) {
  for (Op *o = g->first; o; o = o->next) {
    if (o->kind != OP_MATMUL || o->in[0] != v) continue;
    const Value *w = o->in[1];
    if (w->dtype != DT_F32) return 0;
    for (Op *r = g->first; r; r = r->next)
      for (int i = 0; i < r->n_in; i++)
        if (r->in[i] == w && (r->kind != OP_MATMUL || i != 1)) return 0;
  }
  return 1;
}

static Value *folded(Graph *g, WeightRecipe r, DType t, int rank, const int64_t *dims,
                     const char *suffix, Value *a0, Value *a1, Value *a2) {
  Value *w = ir_value(g, VK_WEIGHT, t, arena_printf(g->arena, "%s%s", a0->name, suffix), rank, dims, false);
  w->recipe = r;
  w->wargs[0] = a0, w->wargs[1] = a1, w->wargs[2] = a2;
  return w;
}

int pass_fold_layernorm(Graph *g, const PassOptions *o, Err *e) {
  for (Op *ln = g->first; ln; ln = ln->next) {
    if (ln->kind != OP_LAYERNORM || !ln->in[1] || !only_matmul_readers(g, ln->out) ||
        !readers_fold_cleanly(g, ln->out))
      continue;
    Value *gamma = ln->in[1], *beta = ln->in[2];
    for (Op *mm = ln->next; mm; mm = mm->next) {
      if (mm->kind != OP_MATMUL || mm->in[0] != ln->out) continue;
      Value *w = mm->in[1], *b = mm->n_in > 2 ? mm->in[2] : NULL;
      if (w->recipe != WR_TENSOR || (b && b->recipe != WR_TENSOR))
        return err_set(e, "%s: weights were already transformed", mm->out->name);
      mm->in[1] = folded(g, WR_FOLD_LN_W, w->dtype, 2, w->dims, ".lnfold", w, gamma, NULL);
      mm->in[2] = folded(g, WR_FOLD_LN_B, DT_F32, 1, w->dims, ".lnfold_b", w, beta, b);
      mm->n_in = 3;
    }
    ln->in[1] = ln->in[2] = NULL;
    ln->n_in = 1;
  }
  return 0;
}
