// Build (from the repo root): clang-14 -g -O1 -fsanitize=fuzzer,address,undefined -I. -Iruntime tests/fuzz/fuzz_bundle.c runtime/rt_bundle.c runtime/tokenizer.c -lutf8proc -lxxhash -lm -o fuzz_bundle
/* fuzz_bundle.c — libFuzzer harness for the weight bundle reader
 * (rt_bundle_open on a file, as pythia_gen --weights-file reads one) and the
 * runtime tokenizer tables it may carry.
 *
 * The input is written to a file and opened as a weight bundle for the code
 * this harness pretends to be (py_model below: 4 KiB of weights, a fixed
 * layout hash).  Either rt_bundle_open refuses it with one line that starts
 * with the file's name, or both mapped sections lie inside the file (every
 * byte of them readable, no SIGBUS) and the tokenizer tables, if any, either
 * open in rt_tok_open or are refused with one line.  With FUZZ_EXPECT_ACCEPT
 * set in the environment, any refusal is a failure too: the test checks its
 * seeds that way, since mutants of refused seeds only exercise refusals.
 * Run: ./fuzz_bundle -max_total_time=60 -max_len=65536 CORPUS_DIR (seed it
 * with the bundles tests/test_fuzz_harnesses.py writes). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/pythia_abi.h"
#include "runtime/rt_bundle.h"
#include "runtime/tokenizer.h"

/* The code the bundle must have been written for (test_fuzz_harnesses.py
 * writes its seeds with these two numbers). */
const PyModel py_model = {.abi_version = PY_ABI_VERSION, .weights_bytes = 4096,
                          .layout_hash = 0x5059544849414655ull};

static char path[64];

static void remove_scratch(void) {
  if (path[0]) unlink(path);
}

static int one_line_naming(const char *err, const char *name) {
  return !strncmp(err, name, strlen(name)) && !strncmp(err + strlen(name), ": ", 2) && !strchr(err, '\n');
}

/* Sums every byte of n at p: a section that reaches past the file faults here. */
static uint8_t touch(const uint8_t *p, uint64_t n) {
  uint8_t x = 0;
  for (uint64_t i = 0; i < n; i++) x ^= p[i];
  return x;
}

volatile uint8_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!path[0]) {
    snprintf(path, sizeof path, "/tmp/fuzz_bundle.%d", (int)getpid());
    atexit(remove_scratch);
  }
  FILE *f = fopen(path, "wb");
  if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f)) abort();
  RtBundle b;
  char err[512];
  if (rt_bundle_open(&b, path, err, sizeof err) != 0) {
    if (!one_line_naming(err, path) || getenv("FUZZ_EXPECT_ACCEPT")) {
      fprintf(stderr, "unclean error: [%s]\n", err);
      abort();
    }
    return 0;
  }
  const PyBundleTrailer *t = &b.trailer;
  if (size < sizeof *t || t->weights_size != py_model.weights_bytes || t->weights_off + t->weights_size > size - sizeof *t ||
      (t->tok_size && t->tok_off + t->tok_size > size - sizeof *t))
    abort();
  sink = touch(b.weights, t->weights_size);
  if (t->tok_size) {
    sink ^= touch(b.tok, t->tok_size);
    RtTokenizer *tok = rt_tok_open(b.tok, t->tok_size, err, sizeof err);
    if (tok) rt_tok_close(tok);
    else if (!err[0] || strchr(err, '\n') || getenv("FUZZ_EXPECT_ACCEPT")) {
      fprintf(stderr, "tokenizer tables refused: [%s]\n", err);
      abort();
    }
  }
  rt_bundle_close(&b);
  return 0;
}
