// Build (from the repo root): clang-14 -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_safetensors.c compiler/frontend/safetensors.c compiler/frontend/config.c ir/base.c -lcjson -lm -o fuzz_safetensors
/* fuzz_safetensors.c — libFuzzer harness for the safetensors reader.
 *
 * The first input byte picks what the rest is:
 *   even: a whole .safetensors file, written to a memfd and opened with
 *         st_open_file through /proc/self/fd/N;
 *   odd:  a model.safetensors.index.json, written into a scratch folder that
 *         also holds two small valid shards (a.safetensors, b.safetensors),
 *         and opened with st_open_dir.
 * An accepted model is run through neox_check_tensors and every tensor byte
 * is read, so a range the reader wrongly accepted faults here.
 * Run: ./fuzz_safetensors -max_total_time=60 CORPUS_DIR  (seed the corpus
 * with any small model.safetensors, prefixed with one 0x00 byte). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compiler/frontend/safetensors.h"

static char dir[256];
static NeoxConfig cfg;

static void write_all(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) abort();
}

/* A shard holding one F32 tensor `name` of shape [2, 2]. */
static void write_shard(const char *file, const char *name) {
  char h[256], path[512];
  int hl = snprintf(h, sizeof h, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", name);
  while (hl % 8) h[hl++] = ' ';
  uint8_t buf[512] = {0};
  for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
  memcpy(buf + 8, h, (size_t)hl);
  snprintf(path, sizeof path, "%s/%s", dir, file);
  write_all(path, buf, 8 + (size_t)hl + 16);
}

/* Removes the scratch folder and its three files when the process exits. */
static void remove_scratch(void) {
  static const char *const files[] = {"a.safetensors", "b.safetensors", "model.safetensors.index.json"};
  char path[512];
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, files[i]);
    unlink(path);
  }
  rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  snprintf(dir, sizeof dir, "/tmp/fuzz_safetensors.XXXXXX");
  if (!mkdtemp(dir)) abort();
  atexit(remove_scratch);
  write_shard("a.safetensors", "gpt_neox.embed_in.weight");
  write_shard("b.safetensors", "embed_out.weight");
  static const char j[] =
      "{\"model_type\":\"gpt_neox\",\"hidden_size\":2,\"num_attention_heads\":1,\"num_hidden_layers\":1,"
      "\"intermediate_size\":4,\"vocab_size\":2,\"rotary_pct\":1}";
  Err e = {0};
  if (neox_config_parse(j, sizeof j - 1, "config.json", &cfg, &e)) abort();
  return 0;
}

static void use(const StModel *m) {
  volatile unsigned sum = 0;
  for (int i = 0; i < m->n_tensors; i++) {
    const StTensor *t = &m->tensors[i];
    for (uint64_t j = 0; j < t->nbytes; j++) sum += t->data[j];
    if (st_find(m, t->name) != t) abort();
  }
  Err e = {0};
  neox_check_tensors(&cfg, m, &e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  StModel m;
  Err e = {0};
  if ((data[0] & 1) == 0) {
    int fd = memfd_create("st", MFD_CLOEXEC);
    if (fd < 0) abort();
    if (size > 1 && write(fd, data + 1, size - 1) != (ssize_t)(size - 1)) abort();
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    if (st_open_file(path, &m, &e) == 0) {
      use(&m);
      st_close(&m);
    } else if (!e.set || strchr(e.msg, '\n')) {
      fprintf(stderr, "unclean error: [%s]\n", e.msg);
      abort();
    }
    close(fd);
  } else {
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    write_all(path, data + 1, size - 1);
    if (st_open_dir(dir, &m, &e) == 0) {
      use(&m);
      st_close(&m);
    } else if (!e.set || strchr(e.msg, '\n')) {
      fprintf(stderr, "unclean error: [%s]\n", e.msg);
      abort();
    }
  }
  return 0;
}
