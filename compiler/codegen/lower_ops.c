/* lower_ops.c — kernels for the row-wise ops: embed, layernorm, gelu, add,
 * head_slice, rotary, kv_store, hidden_state.  Each is parallel over the T rows of its
 * result; all dimensions are constants of the generated code. */
#include <math.h>

#include "cg.h"

static int64_t cols(const Value *v) { return v->dims[v->rank - 1]; }

static void lower_embed(Cg *c, const Op *op) {
  const int64_t D = cols(op->out);
  LLVMValueRef ids = cg_value_ptr(c, op->in[0]), table = cg_value_ptr(c, op->in[1]);
  LLVMValueRef y = cg_value_ptr(c, op->out);
  Loop t = cg_loop(c, c->lo, c->hi, 1, "t");
  LLVMValueRef id = LLVMBuildSExt(c->b, LLVMBuildLoad2(c->b, c->i32, cg_gep(c, c->i32, ids, t.i), ""),
                                  c->i64, "");
  /* row `id`: row-major at id*D + d, or in a table packed in panels of P
   * rows for a tied output matmul (ir.h) at (id/P)*P*D + d*P + id%P */
  const int64_t P = op->in[1]->pack_rn > 0 ? op->in[1]->pack_rn : 1;
  LLVMValueRef pr = LLVMBuildSRem(c->b, id, cg_i64(c, P), "");
  LLVMValueRef src = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, LLVMBuildSub(c->b, id, pr, ""), cg_i64(c, D), ""), pr, "");
  LLVMValueRef dst = LLVMBuildMul(c->b, t.i, cg_i64(c, D), "");
  Loop d = cg_loop(c, cg_i64(c, 0), cg_i64(c, D), 1, "d");
  LLVMValueRef v = cg_load_f32(c, op->in[1]->dtype, table, LLVMBuildAdd(c->b, src, LLVMBuildMul(c->b, d.i, cg_i64(c, P), ""), ""));
  cg_store_f32(c, y, LLVMBuildAdd(c->b, dst, d.i, ""), v);
  cg_loop_end(c, &d);
  cg_loop_end(c, &t);
}

/* Sum over a row of n floats at p + base, of f(x) (f = identity or (x-m)^2). */
static LLVMValueRef row_sum(Cg *c, LLVMValueRef p, LLVMValueRef base, int64_t n, LLVMValueRef mean) {
  LLVMValueRef acc = cg_alloca_array(c, c->f32, 1, "acc");
  LLVMBuildStore(c->b, cg_f32(c, 0), acc);
  Loop d = cg_loop(c, cg_i64(c, 0), cg_i64(c, n), 1, "d");
  LLVMValueRef x = cg_load_f32(c, DT_F32, p, LLVMBuildAdd(c->b, base, d.i, ""));
  if (mean) {
    LLVMValueRef dx = LLVMBuildFSub(c->b, x, mean, "");
    x = cg_fast(LLVMBuildFMul(c->b, dx, dx, ""));
  }
  LLVMValueRef s = cg_fast(LLVMBuildFAdd(c->b, LLVMBuildLoad2(c->b, c->f32, acc, ""), x, ""));
  LLVMBuildStore(c->b, s, acc);
  cg_loop_end(c, &d);
  return LLVMBuildLoad2(c->b, c->f32, acc, "");
}

static void lower_layernorm(Cg *c, const Op *op) {
  const int64_t D = cols(op->out);
  LLVMValueRef x = cg_value_ptr(c, op->in[0]), y = cg_value_ptr(c, op->out);
  LLVMValueRef gam = op->in[1] ? cg_value_ptr(c, op->in[1]) : NULL;
  LLVMValueRef bet = op->in[2] ? cg_value_ptr(c, op->in[2]) : NULL;
  Loop t = cg_loop(c, c->lo, c->hi, 1, "t");
  LLVMValueRef base = LLVMBuildMul(c->b, t.i, cg_i64(c, D), "");
  LLVMValueRef inv_d = cg_f32(c, 1.0 / (double)D);
  LLVMValueRef mean = LLVMBuildFMul(c->b, row_sum(c, x, base, D, NULL), inv_d, "mean");
  LLVMValueRef var = LLVMBuildFMul(c->b, row_sum(c, x, base, D, mean), inv_d, "var");
  LLVMValueRef ve = LLVMBuildFAdd(c->b, var, cg_f32(c, op->a.eps), "");
  LLVMValueRef sd = cg_call_intrinsic(c, "llvm.sqrt", c->f32, &ve, 1);
  LLVMValueRef rstd = LLVMBuildFDiv(c->b, cg_f32(c, 1.0), sd, "rstd");
  Loop d = cg_loop(c, cg_i64(c, 0), cg_i64(c, D), 1, "d");
  LLVMValueRef idx = LLVMBuildAdd(c->b, base, d.i, "");
  LLVMValueRef xn = LLVMBuildFMul(c->b, LLVMBuildFSub(c->b, cg_load_f32(c, DT_F32, x, idx), mean, ""),
                                  rstd, "");
  LLVMValueRef v = xn;
  if (gam)
    v = LLVMBuildFAdd(c->b, LLVMBuildFMul(c->b, xn, cg_load_f32(c, DT_F32, gam, d.i), ""),
                      cg_load_f32(c, DT_F32, bet, d.i), "");
  cg_store_f32(c, y, idx, v);
  cg_loop_end(c, &d);
  cg_loop_end(c, &t);
}

static void lower_elementwise(Cg *c, const Op *op) {
  const int64_t D = cols(op->out);
  LLVMValueRef a = cg_value_ptr(c, op->in[0]), y = cg_value_ptr(c, op->out);
  LLVMValueRef b = op->kind == OP_ADD ? cg_value_ptr(c, op->in[1]) : NULL;
  LLVMValueRef lo = LLVMBuildMul(c->b, c->lo, cg_i64(c, D), "");
  LLVMValueRef hi = LLVMBuildMul(c->b, c->hi, cg_i64(c, D), "");
  Loop i = cg_loop(c, lo, hi, 1, "i");
  LLVMValueRef v = cg_load_f32(c, DT_F32, a, i.i);
  if (op->kind == OP_ADD) v = LLVMBuildFAdd(c->b, v, cg_load_f32(c, DT_F32, b, i.i), "");
  else v = cg_gelu(c, v);
  cg_store_f32(c, y, i.i, v);
  cg_loop_end(c, &i);
}

/* q, k or v of every head out of the fused [T, n_head, 3, head_dim] rows. */
static void lower_head_slice(Cg *c, const Op *op) {
  const int64_t H = op->a.n_head, Dh = op->a.head_dim, D = H * Dh;
  LLVMValueRef x = cg_value_ptr(c, op->in[0]), y = cg_value_ptr(c, op->out);
  Loop t = cg_loop(c, c->lo, c->hi, 1, "t");
  Loop h = cg_loop(c, cg_i64(c, 0), cg_i64(c, H), 1, "h");
  LLVMValueRef src = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, t.i, cg_i64(c, 3 * D), ""),
                                  LLVMBuildMul(c->b, h.i, cg_i64(c, 3 * Dh), ""), "");
  src = LLVMBuildAdd(c->b, src, cg_i64(c, op->a.part * Dh), "");
  LLVMValueRef dst = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, t.i, cg_i64(c, D), ""),
                                  LLVMBuildMul(c->b, h.i, cg_i64(c, Dh), ""), "");
  Loop d = cg_loop(c, cg_i64(c, 0), cg_i64(c, Dh), 1, "d");
  cg_store_f32(c, y, LLVMBuildAdd(c->b, dst, d.i, ""),
               cg_load_f32(c, DT_F32, x, LLVMBuildAdd(c->b, src, d.i, "")));
  cg_loop_end(c, &d);
  cg_loop_end(c, &h);
  cg_loop_end(c, &t);
}

/* Rotary angles, computed once at compile time: one constant table
 * rope_cs[max_ctx][2][R/2] with row p holding cos, then sin, of
 * p * base^(-2i/R) for i < R/2 (angles in double, rounded to f32).  A row's
 * kernel reads its two halves in place; R/2 = 16 at pythia-6.9b, so the
 * table is max_ctx * 128 bytes.  rope_row points cosv and sinv at row
 * pos + t. */
typedef struct {
  LLVMValueRef table, cosv, sinv;
  int64_t R, Dh;
} Rope;

/* The table as a private constant global, built on first use (every
 * rotary op of a model has the same R, base and max_ctx). */
static LLVMValueRef rope_table(Cg *c, const Op *op) {
  const int64_t half = op->a.rotary_ndims / 2, C = c->g->dims.max_ctx;
  char name[64];
  snprintf(name, sizeof name, "rope_cs_%lld", (long long)half);
  LLVMValueRef g = LLVMGetNamedGlobal(c->mod, name);
  if (g) return g;
  size_t n = (size_t)C * 2 * (size_t)half;
  float *v = malloc(n * sizeof *v);
  PY_ASSERT(v);
  for (int64_t i = 0; i < half; i++) {
    double f = 1.0 / pow(op->a.rotary_base, (double)(2 * i) / (double)op->a.rotary_ndims);
    for (int64_t p = 0; p < C; p++) {
      double ang = (double)p * f;
      v[(size_t)p * 2 * (size_t)half + (size_t)i] = (float)cos(ang);
      v[(size_t)p * 2 * (size_t)half + (size_t)(half + i)] = (float)sin(ang);
    }
  }
  LLVMValueRef init = LLVMConstStringInContext2(c->ctx, (const char *)v, n * sizeof *v, 1);
  free(v);
  g = LLVMAddGlobal(c->mod, LLVMTypeOf(init), name);
  LLVMSetInitializer(g, init);
  LLVMSetGlobalConstant(g, 1);
  LLVMSetLinkage(g, LLVMPrivateLinkage);
  LLVMSetAlignment(g, 64);
  return g;
}

static Rope rope_begin(Cg *c, const Op *op) {
  Rope r = {.R = op->a.rotary_ndims, .Dh = op->a.head_dim};
  if (r.R / 2 > 0) r.table = rope_table(c, op);
  return r;
}

static void rope_row(Cg *c, Rope *r, LLVMValueRef t) {
  const int64_t half = r->R / 2;
  if (half == 0) return;
  LLVMValueRef p = LLVMBuildAdd(c->b, cg_run_field(c, RUN_POS), t, "");
  r->cosv = cg_gep(c, c->f32, r->table, LLVMBuildMul(c->b, p, cg_i64(c, 2 * half), ""));
  r->sinv = cg_gep(c, c->f32, r->cosv, cg_i64(c, half));
}

/* One head: dst[dbase + d] = rotate-half(src[sbase + d]) for d < R, copy
 * for R <= d < Dh; dst holds ddt (f32, or f16 for a half-precision cache). */
static void rope_head(Cg *c, const Rope *r, LLVMValueRef src, LLVMValueRef sbase, LLVMValueRef dst,
                      LLVMValueRef dbase, DType ddt) {
  const int64_t half = r->R / 2;
  if (half > 0) {
    Loop j = cg_loop(c, cg_i64(c, 0), cg_i64(c, half), 1, "j");
    LLVMValueRef s1 = LLVMBuildAdd(c->b, sbase, j.i, ""), s2 = LLVMBuildAdd(c->b, s1, cg_i64(c, half), "");
    LLVMValueRef d1 = LLVMBuildAdd(c->b, dbase, j.i, ""), d2 = LLVMBuildAdd(c->b, d1, cg_i64(c, half), "");
    LLVMValueRef x1 = cg_load_f32(c, DT_F32, src, s1), x2 = cg_load_f32(c, DT_F32, src, s2);
    LLVMValueRef cs = cg_load_f32(c, DT_F32, r->cosv, j.i), sn = cg_load_f32(c, DT_F32, r->sinv, j.i);
    cg_store_as(c, ddt, dst, d1, LLVMBuildFSub(c->b, LLVMBuildFMul(c->b, x1, cs, ""), LLVMBuildFMul(c->b, x2, sn, ""), ""));
    cg_store_as(c, ddt, dst, d2, LLVMBuildFAdd(c->b, LLVMBuildFMul(c->b, x2, cs, ""), LLVMBuildFMul(c->b, x1, sn, ""), ""));
    cg_loop_end(c, &j);
  }
  if (r->R < r->Dh) {
    Loop d = cg_loop(c, cg_i64(c, r->R), cg_i64(c, r->Dh), 1, "d");
    cg_store_as(c, ddt, dst, LLVMBuildAdd(c->b, dbase, d.i, ""), cg_load_f32(c, DT_F32, src, LLVMBuildAdd(c->b, sbase, d.i, "")));
    cg_loop_end(c, &d);
  }
}

/* Rotate-half rotary embedding on the first rotary_ndims dims of each head. */
static void lower_rotary(Cg *c, const Op *op) {
  const int64_t H = op->a.n_head, Dh = op->a.head_dim, D = H * Dh;
  LLVMValueRef x = cg_value_ptr(c, op->in[0]), y = cg_value_ptr(c, op->out);
  Rope r = rope_begin(c, op);
  Loop t = cg_loop(c, c->lo, c->hi, 1, "t");
  rope_row(c, &r, t.i);
  Loop h = cg_loop(c, cg_i64(c, 0), cg_i64(c, H), 1, "h");
  LLVMValueRef base = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, t.i, cg_i64(c, D), ""),
                                   LLVMBuildMul(c->b, h.i, cg_i64(c, Dh), ""), "");
  rope_head(c, &r, x, base, y, base, DT_F32);
  cg_loop_end(c, &h);
  cg_loop_end(c, &t);
}

/* Per row t and head h of the fused [T, n_head, 3, head_dim] rows:
 * out[t, h] = rope(q), K[pos+t, h] = rope(k), V[pos+t, h] = v. */
static void lower_qkv_rotary(Cg *c, const Op *op) {
  const int64_t H = op->a.n_head, Dh = op->a.head_dim, D = H * Dh;
  LLVMValueRef x = cg_value_ptr(c, op->in[0]), y = cg_value_ptr(c, op->out);
  LLVMValueRef kc = cg_value_ptr(c, op->in[1]), vc = cg_value_ptr(c, op->in[2]);
  LLVMValueRef pos = cg_run_field(c, RUN_POS);
  Rope r = rope_begin(c, op);
  Rope copy = {.R = 0, .Dh = Dh};
  Loop t = cg_loop(c, c->lo, c->hi, 1, "t");
  rope_row(c, &r, t.i);
  LLVMValueRef crow = LLVMBuildMul(c->b, LLVMBuildAdd(c->b, pos, t.i, ""), cg_i64(c, Dh), "");
  Loop h = cg_loop(c, cg_i64(c, 0), cg_i64(c, H), 1, "h");
  LLVMValueRef hoff = LLVMBuildMul(c->b, h.i, cg_i64(c, Dh), "");
  LLVMValueRef cdst = LLVMBuildAdd(c->b, cg_cache_head_base(c, h.i), crow, "");
  LLVMValueRef src = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, t.i, cg_i64(c, 3 * D), ""),
                                  LLVMBuildMul(c->b, h.i, cg_i64(c, 3 * Dh), ""), "");
  LLVMValueRef dst = LLVMBuildAdd(c->b, LLVMBuildMul(c->b, t.i, cg_i64(c, D), ""), hoff, "");
  rope_head(c, &r, x, src, y, dst, DT_F32);
  rope_head(c, &r, x, LLVMBuildAdd(c->b, src, cg_i64(c, Dh), ""), kc, cdst, op->in[1]->dtype);
  rope_head(c, &copy, x, LLVMBuildAdd(c->b, src, cg_i64(c, 2 * Dh), ""), vc, cdst, op->in[2]->dtype);
  cg_loop_end(c, &h);
  cg_loop_end(c, &t);
}

/* cache[pos + t] = x[t], into the head-major layout */
static void lower_kv_store(Cg *c, const Op *op) {
  const int64_t D = cols(op->in[0]), Dh = c->g->dims.head_dim, H = D / Dh;
  LLVMValueRef x = cg_value_ptr(c, op->in[0]), cache = cg_value_ptr(c, op->in[1]);
  LLVMValueRef pos = cg_run_field(c, RUN_POS);
  Loop t = cg_loop(c, c->lo, c->hi, 1, "t");
  LLVMValueRef src = LLVMBuildMul(c->b, t.i, cg_i64(c, D), "");
  LLVMValueRef row = LLVMBuildMul(c->b, LLVMBuildAdd(c->b, pos, t.i, ""), cg_i64(c, Dh), "");
  Loop h = cg_loop(c, cg_i64(c, 0), cg_i64(c, H), 1, "h");
  LLVMValueRef dst = LLVMBuildAdd(c->b, cg_cache_head_base(c, h.i), row, "");
  LLVMValueRef sh = LLVMBuildAdd(c->b, src, LLVMBuildMul(c->b, h.i, cg_i64(c, Dh), ""), "");
  Loop d = cg_loop(c, cg_i64(c, 0), cg_i64(c, Dh), 1, "d");
  cg_store_as(c, op->in[1]->dtype, cache, LLVMBuildAdd(c->b, dst, d.i, ""),
              cg_load_f32(c, DT_F32, x, LLVMBuildAdd(c->b, sh, d.i, "")));
  cg_loop_end(c, &d);
  cg_loop_end(c, &h);
  cg_loop_end(c, &t);
}

/* When the caller gave PyRun.hidden: its slot's rows [lo, hi) = x's, the
 * slot at hidden + slot T D (pythia_abi.h) */
static void lower_hidden_state(Cg *c, const Op *op) {
  const int64_t D = cols(op->in[0]);
  LLVMValueRef x = cg_value_ptr(c, op->in[0]), hid = cg_run_field(c, RUN_HIDDEN);
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->ctx, c->fn, "done");
  cg_unless_null(c, hid, done);
  LLVMValueRef T = cg_run_field(c, RUN_NTOK);
  LLVMValueRef slot = LLVMBuildMul(c->b, LLVMBuildMul(c->b, T, cg_i64(c, D), ""), cg_i64(c, op->a.slot), "");
  LLVMValueRef y = cg_gep(c, c->f32, hid, slot);
  Loop i = cg_loop(c, LLVMBuildMul(c->b, c->lo, cg_i64(c, D), ""), LLVMBuildMul(c->b, c->hi, cg_i64(c, D), ""), 1, "i");
  cg_store_f32(c, y, i.i, cg_load_f32(c, DT_F32, x, i.i));
  cg_loop_end(c, &i);
  LLVMBuildBr(c->b, done);
  LLVMPositionBuilderAtEnd(c->b, done);
}

void cg_lower_matmul(Cg *c, const Op *op);
void cg_lower_attention(Cg *c, const Op *op);
void cg_lower_attention_probs(Cg *c, const Op *op);

void cg_lower_op_body(Cg *c, const Op *op) {
  switch (op->kind) {
  case OP_EMBED: lower_embed(c, op); break;
  case OP_LAYERNORM: lower_layernorm(c, op); break;
  case OP_MATMUL: cg_lower_matmul(c, op); break;
  case OP_GELU:
  case OP_ADD: lower_elementwise(c, op); break;
  case OP_HEAD_SLICE: lower_head_slice(c, op); break;
  case OP_ROTARY: lower_rotary(c, op); break;
  case OP_KV_STORE: lower_kv_store(c, op); break;
  case OP_ATTENTION: cg_lower_attention(c, op); break;
  case OP_QKV_ROTARY: lower_qkv_rotary(c, op); break;
  case OP_HIDDEN_STATE: lower_hidden_state(c, op); break;
  case OP_ATTENTION_PROBS: cg_lower_attention_probs(c, op); break;
  case OP_COUNT: PY_ASSERT(0);
  }
}

/* The parallel axis: rows of W for matmul, (head, row group) pairs for attention,
 * (head, row) pairs for attention_probs, the T rows for the rest. */
LLVMValueRef cg_items(Cg *c, const Op *op) {
  LLVMValueRef T = cg_run_field(c, RUN_NTOK);
  switch (op->kind) {
  case OP_MATMUL: { /* groups of tile_rn rows of W (lower_matmul.c) */
    int64_t rn = op->a.tile_rn > 0 ? op->a.tile_rn : 4;
    return cg_i64(c, (op->in[1]->dims[0] + rn - 1) / rn);
  }
  case OP_ATTENTION: { /* (head, group of ATTN_ROWS rows) pairs (lower_attention.c) */
    LLVMValueRef groups = LLVMBuildSDiv(c->b, LLVMBuildAdd(c->b, T, cg_i64(c, ATTN_ROWS - 1), ""), cg_i64(c, ATTN_ROWS), "");
    return LLVMBuildMul(c->b, groups, cg_i64(c, op->a.n_head), "");
  }
  case OP_ATTENTION_PROBS: return LLVMBuildMul(c->b, T, cg_i64(c, op->a.n_head), ""); /* (head, row) pairs */
  default: return T;
  }
}
