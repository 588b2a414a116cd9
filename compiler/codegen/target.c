/* target.c — maps --target names to an LLVM target machine.  Named levels
 * are the x86-64 psABI micro-architecture levels; "native" asks LLVM for the
 * host CPU and its features. */
#include <llvm-c/Core.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <string.h>

#include "cg.h"

/* x86-64-v4-vnni: the v4 level plus AVX-512 VNNI (Ice Lake, Sapphire Rapids,
 * Zen 4 and later), for the vpdpbusd kernels of q8_0/q4_0; VNNI is not part
 * of the v4 level itself, so plain v4 executables must not assume it. */
static const char *const known[] = {"x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4", "x86-64-v4-vnni",
                                    "native"};

CgTarget *cg_target_new(const char *name, Err *e) {
  int ok = 0;
  for (size_t i = 0; i < sizeof known / sizeof *known; i++) ok |= !strcmp(name, known[i]);
  if (!ok)
    return err_set(e, "--target=%s: unknown target (expected x86-64, x86-64-v2, x86-64-v3, "
                      "x86-64-v4, x86-64-v4-vnni or native)", name), NULL;
  LLVMInitializeX86TargetInfo();
  LLVMInitializeX86Target();
  LLVMInitializeX86TargetMC();
  LLVMInitializeX86AsmPrinter();
  LLVMInitializeX86AsmParser();
  CgTarget *t = calloc(1, sizeof *t);
  t->triple = "x86_64-pc-linux-gnu";
  char *msg = NULL;
  if (LLVMGetTargetFromTriple(t->triple, &t->target, &msg)) {
    err_set(e, "LLVM has no x86-64 target: %s", msg);
    LLVMDisposeMessage(msg);
    free(t);
    return NULL;
  }
  if (!strcmp(name, "native")) {
    char *cpu = LLVMGetHostCPUName(), *feat = LLVMGetHostCPUFeatures();
    snprintf(t->cpu, sizeof t->cpu, "%s", cpu);
    t->features = strdup(feat);
    LLVMDisposeMessage(cpu);
    LLVMDisposeMessage(feat);
  } else if (!strcmp(name, "x86-64-v4-vnni")) {
    snprintf(t->cpu, sizeof t->cpu, "x86-64-v4");
    t->features = strdup("+avx512vnni");
  } else {
    snprintf(t->cpu, sizeof t->cpu, "%s", name);
    t->features = strdup("");
  }
  t->tm = LLVMCreateTargetMachine(t->target, t->triple, t->cpu, t->features,
                                  LLVMCodeGenLevelAggressive, LLVMRelocPIC, LLVMCodeModelDefault);
  if (!t->tm) {
    err_set(e, "--target=%s: LLVM cannot make a target machine", name);
    cg_target_free(t);
    return NULL;
  }
  int avx512 = !strncmp(name, "x86-64-v4", 9) || strstr(t->features, "+avx512f");
  int avx = !strcmp(name, "x86-64-v3") || avx512 || strstr(t->features, "+avx2");
  t->vector_width = avx512 ? 16 : avx ? 8 : 4;
  t->has_f16c = avx || strstr(t->features, "+f16c");
  t->has_vnni = avx512 && strstr(t->features, "+avx512vnni") != NULL;
  snprintf(t->describe, sizeof t->describe, "%s (%s, %d-bit vectors)", name, t->cpu,
           t->vector_width * 32);
  return t;
}

void cg_target_free(CgTarget *t) {
  if (!t) return;
  if (t->tm) LLVMDisposeTargetMachine(t->tm);
  free(t->features);
  free(t);
}

int cg_target_vector_width(const CgTarget *t) { return t->vector_width; }

/* Whether the target names an AMD CPU (native on an AMD host, or -march
 * names); the generic x86-64 levels are not, whatever runs them. */
static int is_amd_cpu(const CgTarget *t) {
  static const char *const amd[] = {"znver", "bdver", "btver", "amdfam", "k8", "athlon", "opteron"};
  for (size_t i = 0; i < sizeof amd / sizeof *amd; i++)
    if (!strncmp(t->cpu, amd[i], strlen(amd[i]))) return 1;
  return 0;
}

static int is_generic_level(const CgTarget *t) { return !strncmp(t->cpu, "x86-64", 6); }

/* Decode software prefetch distance in bytes, per CPU family (docs/passes.md):
 * Intel cores gained 6-17 % at the 6.9B shapes from prefetcht0 2 KiB ahead;
 * AMD Zen 4 lost 25-35 % with it (its L2 stream prefetcher keeps up on its own,
 * the extra loads only compete), so AMD cores and the generic levels, which may
 * run on either, leave prefetching to the hardware. */
int cg_target_decode_prefetch(const CgTarget *t) { return is_amd_cpu(t) || is_generic_level(t) ? 0 : 2048; }

/* Panels a decode GEMV streams at once, or 0 for tile_matmul's choice from
 * the register count (docs/passes.md): one stream per thread on AMD CPUs,
 * where 8 were slower on pythia-160m once the weights were 2 MiB-mapped (one
 * stream won 27 of 35 interleaved rounds, by 8 % at the median); several
 * elsewhere, since one stream per thread read half the bandwidth on the
 * Intel machine, and the generic levels may run there. */
int cg_target_decode_streams(const CgTarget *t) { return is_amd_cpu(t) ? 1 : 0; }

/* Panel rows of float matmuls, or 0 for tile_matmul's two vectors
 * (docs/passes.md): four 512-bit vectors (64 rows) on AMD CPUs, where the
 * decode GEMV then spends one broadcast on 128 bytes of f16 weights instead
 * of 64 and runs four FMA chains instead of two: pythia-1b decode 1.054 of
 * the 32-row panels' over 8 interleaved rounds (1.04-1.11 in the rounds both
 * ran in the same minute), pythia-160m 1.018 in 6 fast rounds, prefill
 * unchanged (register tiles of 6 tokens x 64 rows).  Elsewhere unmeasured. */
int cg_target_panel_rows(const CgTarget *t) {
  return is_amd_cpu(t) && cg_target_vector_width(t) >= 16 ? 4 * cg_target_vector_width(t) : 0;
}

const char *cg_target_describe(const CgTarget *t) { return t->describe; }
