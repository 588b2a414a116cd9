// Build (from the repo root): clang-14 -g -O1 -fsanitize=fuzzer,address,undefined -I. -Iruntime tests/fuzz/fuzz_tokenizer_import.c compiler/frontend/tokenizer_import.c compiler/frontend/config.c runtime/tokenizer.c ir/base.c -lcjson -lutf8proc -lxxhash -lm -o fuzz_tokenizer_import
/* fuzz_tokenizer_import.c — libFuzzer harness for pythiac's tokenizer.json
 * importer and, through it, the runtime tokenizer.
 *
 * The input is a tokenizer.json, written to a memfd and imported with
 * tok_import_file through /proc/self/fd/N.  Either the importer refuses it
 * with one line that names the file, or its tables must open in the runtime
 * (rt_tok_open) and every id that encoding a few fixed texts gives must be
 * below the vocabulary and decode without error.  So an importer that writes
 * tables the runtime would refuse or misread fails here.
 * Run: ./fuzz_tokenizer_import -max_total_time=60 -max_len=4096 CORPUS_DIR
 * (seed the corpus with small tokenizer.json files, e.g. the ones
 * tests/test_tokenizer.c writes). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compiler/frontend/tokenizer_import.h"
#include "runtime/tokenizer.h"

static const char *const texts[] = {"", "ab ab", "a\xcc\x81 b", "<|endoftext|>ab", "\t\n  x"};

/* Encodes each fixed text; whatever ids come back must decode. */
static void exercise(const RtTokenizer *t) {
  for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
    int32_t *ids = NULL;
    size_t n = 0;
    char err[256];
    if (rt_tok_encode(t, texts[i], strlen(texts[i]), &ids, &n, err, sizeof err) == 0) {
      for (size_t j = 0; j < n; j++)
        if (ids[j] < 0 || ids[j] >= rt_tok_n_vocab(t)) abort();
      char *out = NULL;
      size_t out_len = 0;
      if (rt_tok_decode(t, ids, n, &out, &out_len, err, sizeof err) != 0) {
        fprintf(stderr, "decode of its own ids failed: %s\n", err);
        abort();
      }
      free(out);
    }
    free(ids);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int fd = memfd_create("tokenizer.json", 0);
  if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size)) abort();
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  uint8_t *blob = NULL;
  size_t blob_size = 0;
  Err e = {0};
  if (tok_import_file(path, &blob, &blob_size, &e) == 0) {
    char err[256];
    RtTokenizer *t = rt_tok_open(blob, blob_size, err, sizeof err);
    if (!t) {
      fprintf(stderr, "imported tables do not open: %s\n", err);
      abort();
    }
    exercise(t);
    rt_tok_close(t);
    free(blob);
  } else if (!e.set || strncmp(e.msg, path, strlen(path)) != 0 || strchr(e.msg, '\n') || blob) {
    fprintf(stderr, "unclean error: [%s]\n", e.msg);
    abort();
  }
  close(fd);
  return 0;
}
