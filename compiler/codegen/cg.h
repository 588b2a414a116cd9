/* cg.h — internals shared by the codegen files: the target, and a small
 * kernel-building layer over the LLVM C API (loops, typed loads/stores,
 * intrinsics) so each op's lowering reads like the loop nest it emits.
 *
 * Every kernel has the signature of PyKernel:
 *     void k(const PyRun *r, i64 lo, i64 hi)
 * and handles items [lo, hi) of its op's parallel axis.  Loop counters are
 * phis; accumulators live in allocas that SROA promotes.  Floating-point
 * reductions carry reassoc+contract so LLVM may vectorise and fuse them. */
#ifndef PY_CG_H
#define PY_CG_H

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#include "../../ir/ir.h"
#include "codegen.h"

struct CgTarget {
  const char *triple;
  LLVMTargetRef target;
  LLVMTargetMachineRef tm;
  char cpu[64];
  char *features;
  int vector_width;
  int has_f16c;
  int has_vnni; /* AVX-512 VNNI (vpdpbusd): native on a CPU that has it */
  char describe[160];
};

/* PyRun field indices (runtime/pythia_abi.h) */
enum {
  RUN_WEIGHTS, RUN_ARENA, RUN_KCACHE, RUN_VCACHE, RUN_TOKENS, RUN_NTOK, RUN_POS,
  RUN_LOGITS, RUN_LOGITS_FROM, RUN_PARALLEL_FOR, RUN_POOL, RUN_HIDDEN, RUN_ATTN, RUN_ATTN_N,
  RUN_NFIELDS
};

/* While a kernel body is built (cg_share.c): the weights, temporaries and
 * cache layers it addresses, in the order it first asked for them, each
 * loaded once from the body's pointer table. */
enum { CG_MAX_BOUND = 16 };
typedef struct {
  LLVMValueRef table; /* the body's pointer-table parameter; NULL: not building a body */
  const Value *v[CG_MAX_BOUND];
  LLVMValueRef p[CG_MAX_BOUND];
  int n;
} CgBound;

typedef struct CgBody CgBody;

typedef struct {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  LLVMTypeRef f32, f64, f16, i16, i32, i64, i8, ptr, voidt, run_t, kernel_t;
  const Graph *g;
  const CgTarget *target;
  /* the kernel being built */
  LLVMValueRef fn, r, lo, hi;
  /* kernel bodies (cg_share.c): off (--no-share-kernels), each op's code
   * addresses its operands as constants and has its own function */
  int share;
  CgBound bound;
  CgBody *bodies;
  int n_bodies, cap_bodies;
} Cg;

typedef struct {
  LLVMBasicBlockRef head, body, exit;
  LLVMValueRef i, phi;
  LLVMValueRef hi, step;
} Loop;

LLVMValueRef cg_i64(Cg *c, int64_t v);
LLVMValueRef cg_f32(Cg *c, double v);
/* for (i = lo; i < hi; i += step) { ...   cg_loop_end closes it */
Loop cg_loop(Cg *c, LLVMValueRef lo, LLVMValueRef hi, int64_t step, const char *name);
void cg_loop_end(Cg *c, Loop *l);

/* A loop that carries values from one iteration to the next as phis (the
 * accumulators of the matmul kernels), run at least once:
 *   i = lo; v = init; do { v = body(i, v); i += step; } while (i < hi)
 * cg_carry_loop leaves the builder in the body with l.i and l.phi[] the
 * current values; cg_carry_loop_end takes the body's new values and leaves
 * the builder after the loop, where those new values are the results. */
enum { CG_MAX_CARRY = 64 };
typedef struct {
  LLVMBasicBlockRef body, exit;
  LLVMValueRef i, phi[CG_MAX_CARRY];
  int n;
} CarryLoop;
CarryLoop cg_carry_loop(Cg *c, LLVMValueRef lo, const LLVMValueRef *init, int n, const char *name);
void cg_carry_loop_end(Cg *c, CarryLoop *l, int64_t step, LLVMValueRef hi, const LLVMValueRef *next);
LLVMValueRef cg_run_field(Cg *c, int field);         /* load r->field */
LLVMValueRef cg_gep(Cg *c, LLVMTypeRef t, LLVMValueRef base, LLVMValueRef idx);
/* Index of head h's first cache row in a layer's K or V cache: caches are
 * stored head-major, element (p, h Dh + d) at (h max_ctx + p) Dh + d (ir.h),
 * so attention reads one head's keys as one contiguous run. */
LLVMValueRef cg_cache_head_base(Cg *c, LLVMValueRef h);
/* Rows of one head an attention item takes (lower_attention.c): each block
 * of keys and values it reads serves that many query rows. */
enum { ATTN_ROWS = 4 };
LLVMValueRef cg_byte_offset(Cg *c, LLVMValueRef base, int64_t bytes);
/* Pointer to a value's storage: weights in the blob, temps in the arena,
 * caches at their layer, the logits in r->logits. */
LLVMValueRef cg_value_ptr(Cg *c, const Value *v);
/* Element idx of a tensor of dtype t at p, as f32. */
LLVMValueRef cg_load_f32(Cg *c, DType t, LLVMValueRef p, LLVMValueRef idx);
void cg_store_f32(Cg *c, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef v);
/* p[idx] = v (f32) stored as t: f32, or f16 rounded to nearest even */
void cg_store_as(Cg *c, DType t, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef v);
LLVMValueRef cg_call_intrinsic(Cg *c, const char *name, LLVMTypeRef overload,
                               LLVMValueRef *args, int n);
void cg_prefetch_t0(Cg *c, LLVMValueRef p); /* prefetcht0 of p's cache line (a read, into L1) */
LLVMValueRef cg_fast(LLVMValueRef inst); /* marks reassoc + contract */
LLVMValueRef cg_splat(Cg *c, LLVMValueRef s, unsigned n); /* <n x T> of copies of the scalar s */
/* The largest of the n (a power of two) float lanes of v, by log2(n)
 * rounds of vmaxps on halves; lanes must not be NaN. */
LLVMValueRef cg_lane_max(Cg *c, LLVMValueRef v, unsigned n);
LLVMValueRef cg_fma(Cg *c, LLVMValueRef a, LLVMValueRef b, LLVMValueRef d); /* a*b + d, any float type */
/* cg_math.c: inline exp and GELU of a float or a vector of floats */
LLVMValueRef cg_exp(Cg *c, LLVMValueRef x);
LLVMValueRef cg_gelu(Cg *c, LLVMValueRef x);
LLVMValueRef cg_alloca_array(Cg *c, LLVMTypeRef t, int64_t n, const char *name);
LLVMValueRef cg_min_i64(Cg *c, LLVMValueRef a, LLVMValueRef b);
/* Goes on in a new block when the pointer p is not NULL; jumps to done
 * (which the caller enters at the end) when it is. */
void cg_unless_null(Cg *c, LLVMValueRef p, LLVMBasicBlockRef done);
/* Starts a kernel function "name" and positions the builder in it. */
LLVMValueRef cg_kernel_begin(Cg *c, const char *name);
/* The same for a function of another type whose first three parameters
 * are a kernel's (r, lo, hi). */
LLVMValueRef cg_function_begin(Cg *c, const char *name, LLVMTypeRef type);
void cg_kernel_end(Cg *c);

/* The kernel of one op (cg_share.c): a function of PyKernel's signature,
 * which calls the op's body, shared with every op whose body is the same
 * code.  The size of its parallel axis is a run-time value, built in
 * py_forward by cg_items(). */
LLVMValueRef cg_lower_op(Cg *c, const Op *op);
/* The op's code (lower_ops.c), into the function being built. */
void cg_lower_op_body(Cg *c, const Op *op);
/* A weight, temporary or cache layer's address inside a body (cg_share.c). */
LLVMValueRef cg_bound_ptr(Cg *c, const Value *v);
void cg_bodies_free(Cg *c);
/* matmul with a q8_0/q4_0 weight (lower_qmatmul.c); cg_lower_matmul calls it */
void cg_lower_qmatmul(Cg *c, const Op *op);
/* A matmul's epilogue (lower_matmul.c), shared by both kernels: where its
 * operands are, and y rows of N outputs padded to a multiple of `granule`
 * (the kernel's rows per padded unit). */
typedef struct {
  const Op *op;
  LLVMValueRef y, bias, res[2], t0;
  int64_t N, granule;
} CgEpilogue;
/* y[t - t0, n .. n + lanes) from the vector v of dot products: bias, GELU,
 * residuals, store; lanes at n + l >= N are neither read nor written. */
void cg_matmul_epilogue(Cg *c, const CgEpilogue *e, LLVMValueRef t, LLVMValueRef n, LLVMValueRef v);
LLVMValueRef cg_items(Cg *c, const Op *op); /* in py_forward */

#endif
