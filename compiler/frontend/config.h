/* config.h — the fields of a GPTNeoXForCausalLM config.json that change the
 * graph, with Hugging Face's defaults for absent keys. */
#ifndef NEOX_CONFIG_H
#define NEOX_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "../../ir/base.h"

typedef struct {
  int hidden_size;              /* 6144 */
  int num_attention_heads;      /* 64 */
  int num_hidden_layers;        /* 44 */
  int intermediate_size;        /* 24576 */
  int vocab_size;               /* 50432 */
  int max_position_embeddings;  /* 2048 */
  double rotary_pct;            /* 0.25 */
  double rotary_emb_base;       /* 10000 */
  double layer_norm_eps;        /* 1e-5 */
  bool use_parallel_residual;   /* true */
  bool tie_word_embeddings;     /* false */
  bool attention_bias;          /* true */
  char hidden_act[32];          /* "gelu" (exact erf) */
  char torch_dtype[16];         /* "float16" etc., "" if absent */
  /* derived */
  int head_dim;                 /* hidden_size / num_attention_heads */
  int rotary_ndims;             /* (int)(head_dim * rotary_pct) */
} NeoxConfig;

/* Parses JSON text; `fname` is used in messages ("config.json: key ..."). */
int neox_config_parse(const char *json, size_t len, const char *fname,
                      NeoxConfig *cfg, Err *e);
/* Reads dir/config.json. */
int neox_config_load(const char *dir, NeoxConfig *cfg, Err *e);

#endif
