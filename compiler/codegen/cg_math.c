/* cg_math.c — exp and GELU as inline straight-line code, for a float or a
 * vector of floats, so that kernels vectorise them instead of calling libm
 * once per element.
 *
 * exp(x): x = n ln2 + r with n = round(x / ln2), |r| <= ln2/2 (ln2 split in
 *   a high part exact in float and a low correction, so r is exact to float
 *   rounding); e^r by a degree-7 polynomial (Taylor-like, minimax
 *   coefficients from Cephes' expf), times 2^n assembled in the exponent
 *   bits.  Relative error about 2 ulp.  x < -87.3 (where e^x is below the
 *   smallest normal float), -inf included, gives exactly 0; x is clamped at
 *   88 above (callers pass x <= 0).
 * GELU(x) = x/2 (1 + erf(x/sqrt 2)), with 1 + erf(z) = 2 - erfc(z) for
 *   z >= 0 and erfc(-z) for z < 0, and erfc(|z|) = t P(t) e^{-z^2},
 *   t = 1/(1 + p|z|) (Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7 in
 *   erf): the negative tail keeps its relative accuracy instead of
 *   cancelling 1 - (1 - tiny). */
#include <math.h>

#include "cg.h"

/* Constant v of x's type (float or vector of float). */
static LLVMValueRef splat(Cg *c, LLVMTypeRef t, double v) {
  if (LLVMGetTypeKind(t) != LLVMVectorTypeKind) return LLVMConstReal(t, v);
  unsigned n = LLVMGetVectorSize(t);
  LLVMValueRef e[64];
  PY_ASSERT(n <= 64);
  for (unsigned i = 0; i < n; i++) e[i] = LLVMConstReal(c->f32, v);
  return LLVMConstVector(e, n);
}

/* Constant v of the i32 (or vector of i32) type t. */
static LLVMValueRef splat_i32(Cg *c, LLVMTypeRef t, int v) {
  if (LLVMGetTypeKind(t) != LLVMVectorTypeKind) return LLVMConstInt(t, (unsigned long long)v, 1);
  unsigned n = LLVMGetVectorSize(t);
  LLVMValueRef e[64];
  PY_ASSERT(n <= 64);
  for (unsigned i = 0; i < n; i++) e[i] = LLVMConstInt(c->i32, (unsigned long long)v, 1);
  return LLVMConstVector(e, n);
}

/* i32 (or vector of i32) type shaped like the float type t. */
static LLVMTypeRef int_like(Cg *c, LLVMTypeRef t) {
  return LLVMGetTypeKind(t) == LLVMVectorTypeKind ? LLVMVectorType(c->i32, LLVMGetVectorSize(t)) : c->i32;
}

LLVMValueRef cg_exp(Cg *c, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x), it = int_like(c, t);
  LLVMValueRef under = LLVMBuildFCmp(c->b, LLVMRealOLT, x, splat(c, t, -87.33654475), "");
  LLVMValueRef args[2] = {x, splat(c, t, 88.0)};
  LLVMValueRef xc = cg_call_intrinsic(c, "llvm.minnum", t, args, 2);
  args[0] = xc, args[1] = splat(c, t, -87.33654475);
  xc = cg_call_intrinsic(c, "llvm.maxnum", t, args, 2);
  LLVMValueRef nf = LLVMBuildFMul(c->b, xc, splat(c, t, 1.44269504088896341), "");
  nf = cg_call_intrinsic(c, "llvm.roundeven", t, &nf, 1);
  LLVMValueRef r = cg_fma(c, nf, splat(c, t, -0.693359375), xc);
  r = cg_fma(c, nf, splat(c, t, 2.12194440e-4), r);
  static const double p[6] = {1.9875691500E-4, 1.3981999507E-3, 8.3334519073E-3,
                              4.1665795894E-2, 1.6666665459E-1, 5.0000001201E-1};
  LLVMValueRef y = splat(c, t, p[0]);
  for (int i = 1; i < 6; i++) y = cg_fma(c, y, r, splat(c, t, p[i]));
  LLVMValueRef r2 = LLVMBuildFMul(c->b, r, r, "");
  y = cg_fma(c, y, r2, LLVMBuildFAdd(c->b, r, splat(c, t, 1.0), "")); /* 1 + r + r^2 P(r) */
  /* 2^n as float bits: (n + 127) << 23, n in [-126, 127] after the clamps */
  LLVMValueRef n = LLVMBuildFPToSI(c->b, nf, it, "");
  LLVMValueRef bits = LLVMBuildShl(c->b, LLVMBuildAdd(c->b, n, splat_i32(c, it, 127), ""), splat_i32(c, it, 23), "");
  y = LLVMBuildFMul(c->b, y, LLVMBuildBitCast(c->b, bits, t, ""), "");
  return LLVMBuildSelect(c->b, under, splat(c, t, 0.0), y, "exp");
}

LLVMValueRef cg_gelu(Cg *c, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMValueRef z = LLVMBuildFMul(c->b, x, splat(c, t, M_SQRT1_2), "");
  LLVMValueRef az = cg_call_intrinsic(c, "llvm.fabs", t, &z, 1);
  LLVMValueRef tt = LLVMBuildFDiv(c->b, splat(c, t, 1.0), cg_fma(c, az, splat(c, t, 0.3275911), splat(c, t, 1.0)), "");
  static const double a[5] = {1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592};
  LLVMValueRef poly = splat(c, t, a[0]);
  for (int i = 1; i < 5; i++) poly = cg_fma(c, poly, tt, splat(c, t, a[i]));
  LLVMValueRef nz2 = LLVMBuildFNeg(c->b, LLVMBuildFMul(c->b, z, z, ""), "");
  LLVMValueRef erfc = LLVMBuildFMul(c->b, LLVMBuildFMul(c->b, tt, poly, ""), cg_exp(c, nz2), ""); /* erfc(|z|) */
  LLVMValueRef neg = LLVMBuildFCmp(c->b, LLVMRealOLT, z, splat(c, t, 0.0), "");
  LLVMValueRef one_plus_erf = LLVMBuildSelect(c->b, neg, erfc, LLVMBuildFSub(c->b, splat(c, t, 2.0), erfc, ""), "");
  return LLVMBuildFMul(c->b, LLVMBuildFMul(c->b, x, splat(c, t, 0.5), ""), one_plus_erf, "gelu");
}
