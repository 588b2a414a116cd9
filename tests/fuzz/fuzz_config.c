// Build (from the repo root): clang-14 -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_config.c compiler/frontend/config.c ir/base.c -lcjson -lm -o fuzz_config
/* fuzz_config.c — libFuzzer harness for neox_config_parse: any bytes give
 * either a config that keeps the documented invariants or a clean one-line
 * error.  Run: ./fuzz_config -max_total_time=60 CORPUS_DIR (seed the corpus
 * with a real config.json). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/frontend/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  NeoxConfig c;
  Err e = {0};
  if (neox_config_parse((const char *)data, size, "config.json", &c, &e) == 0) {
    if (e.set || c.hidden_size < 1 || c.hidden_size > NEOX_MAX_DIM ||
        c.head_dim * c.num_attention_heads != c.hidden_size || c.rotary_ndims < 2 ||
        c.rotary_ndims % 2 || c.rotary_ndims > c.head_dim || c.n_params <= 0 ||
        !(c.layer_norm_eps > 0) || !(c.rotary_pct > 0 && c.rotary_pct <= 1))
      abort();
  } else if (!e.set || strncmp(e.msg, "config.json: ", 13) != 0 || strchr(e.msg, '\n')) {
    fprintf(stderr, "unclean error: [%s]\n", e.msg);
    abort();
  }
  return 0;
}
