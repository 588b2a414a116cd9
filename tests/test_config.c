/* test_config.c — neox_config_parse / neox_config_load: Hugging Face defaults
 * for absent keys, both spellings of the rotary keys, every refusal (checked
 * by a piece of its one-line message), the folder/file errors, and a seeded
 * fuzz loop over mutated config text that must end in success or a clean
 * error.  Prints "N passed, N failed"; exits non-zero on any failure. */
#include "compiler/frontend/config.h"

#define TEST_FILE "test_config.c"
#include "check.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


/* ------------------------------------------------------------ configs --- */

/* Pythia-6.9B's config.json as published (the keys that matter and the ones
 * that do not). */
static const char PYTHIA_6_9B[] =
    "{\n"
    "  \"architectures\": [\n    \"GPTNeoXForCausalLM\"\n  ],\n"
    "  \"bos_token_id\": 0,\n"
    "  \"eos_token_id\": 0,\n"
    "  \"hidden_act\": \"gelu\",\n"
    "  \"hidden_size\": 4096,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 16384,\n"
    "  \"layer_norm_eps\": 1e-05,\n"
    "  \"max_position_embeddings\": 2048,\n"
    "  \"model_type\": \"gpt_neox\",\n"
    "  \"num_attention_heads\": 32,\n"
    "  \"num_hidden_layers\": 32,\n"
    "  \"rotary_emb_base\": 10000,\n"
    "  \"rotary_pct\": 0.25,\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"torch_dtype\": \"float16\",\n"
    "  \"transformers_version\": \"4.24.0\",\n"
    "  \"use_cache\": true,\n"
    "  \"use_parallel_residual\": true,\n"
    "  \"vocab_size\": 50432\n"
    "}\n";

/* A small config with overrides: mk("key", "json value", ..., NULL); the
 * value DEL removes the key, a key not in the base is appended. */
#define DEL ((const char *)1)
static const char *BASE[][2] = {
    {"model_type", "\"gpt_neox\""}, {"hidden_size", "64"},        {"num_attention_heads", "4"},
    {"num_hidden_layers", "2"},     {"intermediate_size", "256"}, {"vocab_size", "100"},
    {"rotary_pct", "0.25"},         {"hidden_act", "\"gelu\""},
};
#define NBASE ((int)(sizeof BASE / sizeof BASE[0]))

static char cfgbuf[8192];
static const char *mk(const char *k0, ...) {
  const char *keys[32], *vals[32];
  int n = 0;
  va_list ap;
  va_start(ap, k0);
  for (const char *k = k0; k; k = va_arg(ap, const char *)) {
    keys[n] = k;
    vals[n++] = va_arg(ap, const char *);
  }
  va_end(ap);
  size_t o = (size_t)snprintf(cfgbuf, sizeof cfgbuf, "{");
  bool first = true, used[32] = {0};
  for (int b = 0; b < NBASE; b++) {
    const char *v = BASE[b][1];
    for (int i = 0; i < n; i++)
      if (strcmp(keys[i], BASE[b][0]) == 0) v = vals[i], used[i] = true;
    if (v == DEL) continue;
    o += (size_t)snprintf(cfgbuf + o, sizeof cfgbuf - o, "%s\"%s\": %s", first ? "" : ", ", BASE[b][0], v);
    first = false;
  }
  for (int i = 0; i < n; i++)
    if (!used[i] && vals[i] != DEL) {
      o += (size_t)snprintf(cfgbuf + o, sizeof cfgbuf - o, "%s\"%s\": %s", first ? "" : ", ", keys[i], vals[i]);
      first = false;
    }
  snprintf(cfgbuf + o, sizeof cfgbuf - o, "}");
  return cfgbuf;
}

/* ------------------------------------------------------------ helpers --- */

static void expect_ok(int line, const char *json, NeoxConfig *cfg) {
  Err e = {0};
  int rc = neox_config_parse(json, strlen(json), "config.json", cfg, &e);
  char d[2048];
  snprintf(d, sizeof d, "input: %s\n    error: %s", json, e.msg);
  report(rc == 0 && !e.set, line, "config accepted", d);
}

/* The parse must fail with a one-line message that contains `sub`. */
static void expect_err(int line, const char *json, const char *sub) {
  Err e = {0};
  NeoxConfig cfg;
  int rc = neox_config_parse(json, strlen(json), "config.json", &cfg, &e);
  bool ok = rc == -1 && e.set && strstr(e.msg, sub) && !strchr(e.msg, '\n') &&
            strncmp(e.msg, "config.json: ", 13) == 0;
  char d[2048];
  snprintf(d, sizeof d, "input: %s\n    want: ...%s...\n    got (rc %d): %s", json, sub, rc,
           e.set ? e.msg : "(no error)");
  report(ok, line, "config refused with the expected message", d);
}
#define OK(json, cfg) expect_ok(__LINE__, json, cfg)
#define ERR(json, sub) expect_err(__LINE__, json, sub)

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(text, 1, strlen(text), f) != strlen(text) || fclose(f) != 0) die("cannot write", path);
}


/* -------------------------------------------------------------- tests --- */

static void test_pythia(void) {
  NeoxConfig c;
  OK(PYTHIA_6_9B, &c);
  CHECK(c.hidden_size == 4096 && c.num_attention_heads == 32 && c.num_hidden_layers == 32);
  CHECK(c.intermediate_size == 16384 && c.vocab_size == 50432 && c.max_position_embeddings == 2048);
  CHECK(c.head_dim == 128 && c.rotary_ndims == 32);
  CHECK(c.rotary_pct == 0.25 && c.rotary_emb_base == 10000 && c.layer_norm_eps == 1e-5);
  CHECK(c.use_parallel_residual && !c.tie_word_embeddings && c.attention_bias);
  CHECK(strcmp(c.hidden_act, "gelu") == 0 && strcmp(c.torch_dtype, "float16") == 0);
  /* 6.9B: 6,857,302,016 parameters with untied embed_out. */
  CHECK(c.n_params == 6857302016LL);
}

static void test_defaults(void) {
  NeoxConfig c;
  OK("{\"model_type\": \"gpt_neox\"}", &c);
  CHECK(c.hidden_size == 6144 && c.num_attention_heads == 64 && c.num_hidden_layers == 44);
  CHECK(c.intermediate_size == 24576 && c.vocab_size == 50432 && c.max_position_embeddings == 2048);
  CHECK(c.rotary_pct == 0.25 && c.rotary_emb_base == 10000 && c.layer_norm_eps == 1e-5);
  CHECK(c.use_parallel_residual && !c.tie_word_embeddings && c.attention_bias);
  CHECK(strcmp(c.hidden_act, "gelu") == 0 && c.torch_dtype[0] == 0);
  CHECK(c.head_dim == 96 && c.rotary_ndims == 24);

  OK(mk("use_parallel_residual", "false", "tie_word_embeddings", "true", "attention_bias", "false",
        "layer_norm_eps", "1e-6", "max_position_embeddings", "4096", NULL), &c);
  CHECK(!c.use_parallel_residual && c.tie_word_embeddings && !c.attention_bias);
  CHECK(c.layer_norm_eps == 1e-6 && c.max_position_embeddings == 4096);
  /* A whole-number float is an integer; null torch_dtype is absent. */
  OK(mk("hidden_size", "64.0", "torch_dtype", "null", NULL), &c);
  CHECK(c.hidden_size == 64 && c.torch_dtype[0] == 0);
  /* rotary_pct 1: rotary on the whole head. */
  OK(mk("rotary_pct", "1", NULL), &c);
  CHECK(c.rotary_ndims == 16);
  /* Python's int() truncates: 16 * 0.3 = 4.8 -> 4. */
  OK(mk("rotary_pct", "0.3", NULL), &c);
  CHECK(c.rotary_ndims == 4);
}

static void test_key_spellings(void) {
  NeoxConfig c;
  /* Newer names when the old ones are absent. */
  OK(mk("rotary_pct", DEL, "partial_rotary_factor", "0.5", "rope_theta", "500000", NULL), &c);
  CHECK(c.rotary_pct == 0.5 && c.rotary_ndims == 8 && c.rotary_emb_base == 500000);
  /* The old names win when both are there (as in transformers). */
  OK(mk("rotary_pct", "0.25", "partial_rotary_factor", "0.5", "rotary_emb_base", "10000",
        "rope_theta", "20000", NULL), &c);
  CHECK(c.rotary_pct == 0.25 && c.rotary_emb_base == 10000);
  /* transformers v5 rope_parameters, lowest priority. */
  OK(mk("rotary_pct", DEL,
        "rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": 40000, \"partial_rotary_factor\": 0.5}",
        NULL), &c);
  CHECK(c.rotary_pct == 0.5 && c.rotary_emb_base == 40000);
  ERR(mk("rope_parameters", "{\"rope_type\": \"yarn\", \"factor\": 4}", NULL),
      "key \"rope_parameters\": expected plain RoPE");
  ERR(mk("rope_parameters", "[]", NULL), "key \"rope_parameters\": expected an object or null, got an array");
  /* "dtype" is the newer name of torch_dtype. */
  OK(mk("dtype", "\"bfloat16\"", NULL), &c);
  CHECK(strcmp(c.torch_dtype, "bfloat16") == 0);
  /* Errors name the key actually used. */
  ERR(mk("rotary_pct", DEL, "partial_rotary_factor", "\"x\"", NULL),
      "key \"partial_rotary_factor\": expected a number in (0, 1], got \"x\"");
  ERR(mk("rope_theta", "-1", NULL), "key \"rope_theta\": expected a positive number, got -1");
  ERR(mk("rotary_pct", DEL, "rope_parameters", "{\"partial_rotary_factor\": 2}", NULL),
      "key \"rope_parameters.partial_rotary_factor\": expected a number in (0, 1], got 2");
}

static void test_refusals(void) {
  /* The example from STYLE.md, whole. */
  {
    Err e = {0};
    NeoxConfig c;
    const char *j = mk("rotary_pct", "\"abc\"", NULL);
    neox_config_parse(j, strlen(j), "config.json", &c, &e);
    report(strcmp(e.msg, "config.json: key \"rotary_pct\": expected a number in (0, 1], got \"abc\"") == 0,
           __LINE__, "exact rotary_pct message", e.msg);
  }
  ERR(mk("rotary_pct", "0", NULL), "key \"rotary_pct\": expected a number in (0, 1], got 0");
  ERR(mk("rotary_pct", "1.5", NULL), "got 1.5");
  ERR(mk("rotary_pct", "null", NULL), "got null");

  /* Other models. */
  ERR(mk("model_type", "\"llama\"", NULL), "key \"model_type\": expected \"gpt_neox\"");
  ERR(mk("model_type", "\"llama\"", NULL), "got \"llama\"");
  ERR(mk("model_type", DEL, NULL), "key \"model_type\": expected \"gpt_neox\" (only GPT-NeoX models are supported), got nothing");
  ERR(mk("model_type", "7", NULL), "key \"model_type\"");
  ERR(mk("architectures", "[\"GPTNeoXForSequenceClassification\"]", NULL),
      "key \"architectures\": expected a list containing \"GPTNeoXForCausalLM\"");
  ERR(mk("architectures", "\"GPTNeoXForCausalLM\"", NULL), "key \"architectures\"");

  /* RoPE scaling. */
  NeoxConfig c;
  OK(mk("rope_scaling", "null", NULL), &c);
  OK(mk("rope_scaling", "{\"rope_type\": \"default\"}", NULL), &c);
  ERR(mk("rope_scaling", "{\"type\": \"linear\", \"factor\": 2.0}", NULL),
      "key \"rope_scaling\": expected plain RoPE (null or type \"default\"), got type \"linear\"; RoPE scaling is not supported");
  ERR(mk("rope_scaling", "{\"rope_type\": \"dynamic\", \"factor\": 2.0}", NULL), "got type \"dynamic\"");
  ERR(mk("rope_scaling", "{\"factor\": 2.0}", NULL), "key \"rope_scaling\": expected null");
  ERR(mk("rope_scaling", "2", NULL), "key \"rope_scaling\": expected null (RoPE scaling is not supported), got 2");

  /* Activation: exact erf GELU only. */
  ERR(mk("hidden_act", "\"gelu_new\"", NULL), "key \"hidden_act\": expected \"gelu\" (exact erf GELU");
  ERR(mk("hidden_act", "\"gelu_new\"", NULL), "are not), got \"gelu_new\"");
  ERR(mk("hidden_act", "\"gelu_fast\"", NULL), "got \"gelu_fast\"");
  ERR(mk("hidden_act", "\"relu\"", NULL), "the only activation supported");
  ERR(mk("hidden_act", "null", NULL), "key \"hidden_act\"");

  /* Dims. */
  ERR(mk("hidden_size", "0", NULL), "key \"hidden_size\": expected an integer in [1, 1048576], got 0");
  ERR(mk("hidden_size", "-64", NULL), "got -64");
  ERR(mk("num_attention_heads", "4.5", NULL), "key \"num_attention_heads\": expected an integer in [1, 1048576], got 4.5");
  ERR(mk("num_hidden_layers", "\"2\"", NULL), "key \"num_hidden_layers\": expected an integer in [1, 1048576], got \"2\"");
  ERR(mk("intermediate_size", "null", NULL), "key \"intermediate_size\": expected an integer in [1, 1048576], got null");
  ERR(mk("vocab_size", "true", NULL), "key \"vocab_size\": expected an integer in [1, 1048576], got true");
  ERR(mk("max_position_embeddings", "1048577", NULL), "got 1048577");
  ERR(mk("vocab_size", "1e300", NULL), "key \"vocab_size\"");
  ERR(mk("vocab_size", "[1]", NULL), "got an array");
  ERR(mk("hidden_size", "{}", NULL), "got an object");
  ERR(mk("hidden_size", "63", NULL), "key \"hidden_size\": expected a multiple of num_attention_heads 4, got 63");
  ERR(mk("hidden_size", "80", NULL), "head_dim 20 x rotary_pct 0.25 gives rotary_ndims 5; expected an even number");
  ERR(mk("rotary_pct", "0.05", NULL), "gives rotary_ndims 0");
  /* Sizes whose products do not fit. */
  ERR(mk("hidden_size", "1048576", "num_attention_heads", "1024", "intermediate_size", "1048576",
         "num_hidden_layers", "1048576", NULL), "more parameters than fit in 63 bits");
  OK(mk("hidden_size", "1048576", "num_attention_heads", "1024", "intermediate_size", "1048576",
        "num_hidden_layers", "1", "vocab_size", "1048576", NULL), &c);

  /* Other numbers and flags. */
  ERR(mk("rotary_emb_base", "\"10000\"", NULL), "key \"rotary_emb_base\": expected a positive number, got \"10000\"");
  ERR(mk("rotary_emb_base", "0", NULL), "got 0");
  ERR(mk("layer_norm_eps", "0", NULL), "key \"layer_norm_eps\": expected a number in (0, 1], got 0");
  ERR(mk("layer_norm_eps", "\"1e-5\"", NULL), "got \"1e-5\"");
  ERR(mk("use_parallel_residual", "1", NULL), "key \"use_parallel_residual\": expected true or false, got 1");
  ERR(mk("tie_word_embeddings", "\"false\"", NULL), "key \"tie_word_embeddings\": expected true or false, got \"false\"");
  ERR(mk("attention_bias", "null", NULL), "key \"attention_bias\": expected true or false, got null");
  ERR(mk("torch_dtype", "16", NULL), "key \"torch_dtype\": expected a dtype name");
  ERR(mk("torch_dtype", "\"a-very-long-dtype-name\"", NULL), "key \"torch_dtype\"");

  /* JSON itself. */
  ERR("{\"model_type\": \"gpt_neox\",\n  \"hidden_size\": 64,,\n}", "config.json: invalid JSON at line 2, column 2");
  ERR("", "invalid JSON at line 1, column 1 (byte 0): unexpected end of input");
  ERR("{\"model_type\": \"gpt_neox\"", "unexpected end of input");
  ERR("{\"model_type\": \"gpt_neox\"} {}", "unexpected text after the JSON value");
  ERR("[1, 2]", "config.json: expected a JSON object at the top level, got an array");
  ERR("\"gpt_neox\"", "got \"gpt_neox\"");
  ERR("{\"model_type\": \"gpt_neox\", \"hidden_size\": 64, \"hidden_size\": 128}", "key \"hidden_size\" appears twice");
  ERR(mk("hidden_act", "\"gel\\u0001\"", NULL), "got \"gel\\x01\"");
  ERR("{\"a\\nb\": 1, \"a\\nb\": 2}", "config.json: key \"a\\x0ab\" appears twice");
  ERR("{\"model_type\": \"gpt_neox\",\n \"hidden_act\": \"gelu\\u0000x\"}", "invalid JSON at line 2, column 21 (byte 47): \\u0000 in a string is not supported");
  OK("{\"model_type\": \"gpt_neox\", \"note\": \"\\\\u0000 is text here\"}", &c);
  {
    /* An embedded NUL is an error, not a truncation. */
    static const char nul[] = "{\"model_type\": \"gpt_neox\"}\0garbage";
    Err e = {0};
    int rc = neox_config_parse(nul, sizeof nul - 1, "config.json", &c, &e);
    report(rc == -1 && strstr(e.msg, "NUL byte"), __LINE__, "NUL after JSON refused", e.msg);
  }
  /* Unknown keys are ignored. */
  OK(mk("some_future_key", "{\"a\": [1, 2]}", "use_cache", "false", NULL), &c);
}

static void test_load(const char *root) {
  char dir[1200], path[1300], want[1400];
  Err e = {0};
  NeoxConfig c;

  snprintf(dir, sizeof dir, "%s/no_such_folder", root);
  int rc = neox_config_load(dir, &c, &e);
  snprintf(want, sizeof want, "%s: cannot open model folder: No such file or directory", dir);
  report(rc == -1 && strcmp(e.msg, want) == 0, __LINE__, "missing folder", e.msg);

  snprintf(dir, sizeof dir, "%s/empty", root);
  mkdir_p(dir);
  e = (Err){0};
  rc = neox_config_load(dir, &c, &e);
  snprintf(want, sizeof want, "%s/config.json: cannot open: No such file or directory", dir);
  report(rc == -1 && strcmp(e.msg, want) == 0, __LINE__, "missing config.json", e.msg);

  snprintf(path, sizeof path, "%s/plain_file", root);
  write_text(path, "x");
  e = (Err){0};
  rc = neox_config_load(path, &c, &e);
  report(rc == -1 && strstr(e.msg, "not a directory"), __LINE__, "file instead of folder", e.msg);

  snprintf(dir, sizeof dir, "%s/dir_config", root);
  snprintf(path, sizeof path, "%s/config.json", dir);
  mkdir_p(path);
  e = (Err){0};
  rc = neox_config_load(dir, &c, &e);
  report(rc == -1 && strstr(e.msg, "config.json: cannot read"), __LINE__, "config.json is a folder", e.msg);

  snprintf(dir, sizeof dir, "%s/pythia", root);
  mkdir_p(dir);
  snprintf(path, sizeof path, "%s/config.json", dir);
  write_text(path, PYTHIA_6_9B);
  e = (Err){0};
  rc = neox_config_load(dir, &c, &e);
  report(rc == 0 && c.hidden_size == 4096, __LINE__, "load Pythia-6.9B config", e.msg);
  /* A trailing slash on the folder is fine. */
  snprintf(path, sizeof path, "%s/", dir);
  e = (Err){0};
  rc = neox_config_load(path, &c, &e);
  report(rc == 0 && c.num_hidden_layers == 32, __LINE__, "folder with trailing slash", e.msg);

  snprintf(dir, sizeof dir, "%s/bad", root);
  mkdir_p(dir);
  snprintf(path, sizeof path, "%s/config.json", dir);
  write_text(path, mk("rotary_pct", "\"abc\"", NULL));
  e = (Err){0};
  rc = neox_config_load(dir, &c, &e);
  snprintf(want, sizeof want, "%s: key \"rotary_pct\": expected a number in (0, 1], got \"abc\"", path);
  report(rc == -1 && strcmp(e.msg, want) == 0, __LINE__, "load error names the file's path", e.msg);
}

/* ------------------------------------------------------------- fuzz --- */

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static void test_fuzz(int iters) {
  static const char alphabet[] = "0123456789.-+eE,:[]{}\" ntrufalse\\";
  const size_t n0 = strlen(PYTHIA_6_9B);
  char *buf = malloc(n0 + 64);
  int accepted = 0, refused = 0, bad = 0;
  for (int it = 0; it < iters; it++) {
    memcpy(buf, PYTHIA_6_9B, n0);
    size_t n = n0;
    int edits = 1 + (int)(rnd() % 4);
    for (int k = 0; k < edits && n > 0; k++) {
      size_t at = rnd() % n;
      switch (rnd() % 6) {
      case 0: buf[at] = (char)rnd(); break;                                  /* any byte */
      case 1: buf[at] = alphabet[rnd() % (sizeof alphabet - 1)]; break;      /* JSON-ish */
      case 2: n = at; break;                                                 /* truncate */
      case 3: memmove(buf + at, buf + at + 1, n - at - 1), n--; break;       /* delete */
      case 4:                                                                /* insert */
        memmove(buf + at + 1, buf + at, n - at), n++;
        buf[at] = alphabet[rnd() % (sizeof alphabet - 1)];
        break;
      case 5:                                                                /* digit */
        for (size_t j = at; j < n; j++)
          if (buf[j] >= '0' && buf[j] <= '9') {
            buf[j] = (char)('0' + rnd() % 10);
            break;
          }
        break;
      }
    }
    Err e = {0};
    NeoxConfig c;
    int rc = neox_config_parse(buf, n, "config.json", &c, &e);
    if (rc == 0) {
      accepted++;
      bool inv = !e.set && c.hidden_size >= 1 && c.hidden_size <= NEOX_MAX_DIM &&
                 c.hidden_size % c.num_attention_heads == 0 &&
                 c.head_dim * c.num_attention_heads == c.hidden_size && c.rotary_ndims >= 2 &&
                 c.rotary_ndims % 2 == 0 && c.rotary_ndims <= c.head_dim && c.n_params > 0 &&
                 c.rotary_pct > 0 && c.rotary_pct <= 1 && isfinite(c.rotary_emb_base) &&
                 c.layer_norm_eps > 0;
      if (!inv) bad++;
    } else {
      refused++;
      if (rc != -1 || !e.set || strncmp(e.msg, "config.json: ", 13) != 0 || strchr(e.msg, '\n')) {
        if (bad++ < 5) fprintf(stderr, "fuzz: unclean error: %s\n", e.msg);
      }
    }
  }
  free(buf);
  printf("config fuzz: %d iterations, %d accepted, %d refused\n", iters, accepted, refused);
  report(bad == 0, __LINE__, "fuzz: every input gives success with invariants or a clean error", NULL);
  report(accepted > 0 && refused > 0, __LINE__, "fuzz: both outcomes seen", NULL);
}

int main(void) {
  const char *tmp = getenv("TEST_TMP");
  char root[1024];
  snprintf(root, sizeof root, "%s/test_config", tmp && *tmp ? tmp : "/tmp");
  mkdir_p(root);

  test_pythia();
  test_defaults();
  test_key_spellings();
  test_refusals();
  test_load(root);
  test_fuzz(5000);

  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}
