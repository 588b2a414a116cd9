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
  int64_t n_params;             /* parameters the dims imply (embed_out once
                                   unless tied); n_params * 4 fits in 63 bits */
} NeoxConfig;

/* Every dim read from config.json is in [1, NEOX_MAX_DIM]. */
#define NEOX_MAX_DIM (1 << 20)

/* Parses JSON text; `fname` is used in messages ("config.json: key ..."). */
int neox_config_parse(const char *json, size_t len, const char *fname,
                      NeoxConfig *cfg, Err *e);
/* Reads dir/config.json. */
int neox_config_load(const char *dir, NeoxConfig *cfg, Err *e);

/* JSON helpers the frontend readers share (cJSON trees).
 * neox_json_parse parses text[0..len) as one JSON value (trailing whitespace
 * allowed); on failure it sets "<fname>: invalid JSON at line L, column C
 * (byte B): <what>", B counted from `base` (the text's offset in its file),
 * and returns NULL.  Free the tree with cJSON_Delete.
 * neox_json_describe writes a short one-line description of a value for the
 * "got ..." part of a message ('"abc"', "null", "an array", ...). */
struct cJSON;
struct cJSON *neox_json_parse(const char *text, size_t len, const char *fname,
                              uint64_t base, Err *e);
const char *neox_json_describe(const struct cJSON *v, char *buf, size_t n);
/* A bounded copy of a name read from a file, control characters, quotes and
 * backslashes shown as \xNN, for messages that must stay on one line. */
const char *neox_printable(const char *s, char *buf, size_t n);

#endif
