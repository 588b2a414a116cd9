/* test_safetensors.c — st_open_file / st_open_dir / st_find and
 * neox_check_tensors on small files this test writes itself: valid single
 * and sharded models (f32, f16, bf16, tied embeddings, no attention bias,
 * legacy buffers), every refusal checked by a piece of its one-line message,
 * and a seeded fuzz loop of byte mutations that must end in success (with
 * the reader's invariants holding) or a clean error, never a crash.
 * Prints "N passed, N failed"; exits non-zero on any failure. */
#define _GNU_SOURCE /* nftw */
#include "compiler/frontend/safetensors.h"

#define TEST_FILE "test_safetensors.c"
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[1024];

/* ------------------------------------------------------ writing files --- */

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  return remove(p);
}

static void write_bytes(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) die("cannot write", path);
}

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

/* A fresh, empty folder root/name. */
static const char *case_dir(const char *name) {
  static char dir[1200];
  snprintf(dir, sizeof dir, "%s/%s", root, name);
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  mkdir_p(dir);
  return dir;
}

static const char *in(const char *dir, const char *file) {
  static char bufs[4][1400];
  static int k;
  char *b = bufs[k++ % 4];
  snprintf(b, sizeof bufs[0], "%s/%s", dir, file);
  return b;
}

/* The data section's bytes follow one pattern, so a tensor's first byte
 * says where its data pointer points. */
static uint8_t pat(uint64_t i) { return (uint8_t)(i * 131 + 7); }

/* A safetensors file from its raw header text; the length field says
 * `hlen_field` (normally strlen(header)). */
static void write_st_hlen(const char *path, uint64_t hlen_field, const char *header, size_t data_len) {
  size_t hl = strlen(header), n = 8 + hl + data_len;
  uint8_t *b = malloc(n);
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hlen_field >> (8 * i));
  memcpy(b + 8, header, hl);
  for (size_t i = 0; i < data_len; i++) b[8 + hl + i] = pat(i);
  write_bytes(path, b, n);
  free(b);
}
static void write_st_raw(const char *path, const char *header, size_t data_len) {
  write_st_hlen(path, strlen(header), header, data_len);
}

typedef struct {
  char name[128];
  char dtype[16];
  int rank;
  int64_t shape[4];
} TS;
typedef struct {
  TS t[128];
  int n;
} Spec;

static int esize(const char *dt) {
  if (!strcmp(dt, "F32") || !strcmp(dt, "I32")) return 4;
  if (!strcmp(dt, "F16") || !strcmp(dt, "BF16")) return 2;
  if (!strcmp(dt, "I64") || !strcmp(dt, "F64")) return 8;
  return 1;
}

static TS *add(Spec *s, const char *name, const char *dt, int rank, int64_t d0, int64_t d1) {
  TS *t = &s->t[s->n++];
  memset(t, 0, sizeof *t);
  snprintf(t->name, sizeof t->name, "%s", name);
  snprintf(t->dtype, sizeof t->dtype, "%s", dt);
  t->rank = rank;
  t->shape[0] = d0;
  t->shape[1] = d1;
  return t;
}

static TS *get(Spec *s, const char *name) {
  for (int i = 0; i < s->n; i++)
    if (!strcmp(s->t[i].name, name)) return &s->t[i];
  fprintf(stderr, "test_safetensors.c: no tensor %s in spec\n", name);
  exit(1);
}

static void del(Spec *s, const char *name) {
  TS *t = get(s, name);
  *t = s->t[--s->n];
}

/* Writes the tensors of `s` whose index i has (mask >> i & 1) or all when
 * mask is ~0; data laid out in order, header padded to 8 bytes. */
static void write_st_mask(const char *path, const Spec *s, uint64_t mask) {
  char *h = malloc(65536);
  size_t o = (size_t)sprintf(h, "{\"__metadata__\":{\"format\":\"pt\"}");
  uint64_t off = 0;
  for (int i = 0; i < s->n; i++) {
    if (i < 64 && !(mask >> i & 1)) continue;
    const TS *t = &s->t[i];
    uint64_t n = (uint64_t)esize(t->dtype);
    o += (size_t)sprintf(h + o, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name, t->dtype);
    for (int d = 0; d < t->rank; d++) {
      o += (size_t)sprintf(h + o, "%s%lld", d ? "," : "", (long long)t->shape[d]);
      n *= (uint64_t)t->shape[d];
    }
    o += (size_t)sprintf(h + o, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                         (unsigned long long)(off + n));
    off += n;
  }
  h[o++] = '}';
  while (o % 8) h[o++] = ' ';
  h[o] = 0;
  write_st_raw(path, h, (size_t)off);
  free(h);
}
static void write_st(const char *path, const Spec *s) { write_st_mask(path, s, ~0ull); }

/* --------------------------------------------------- the tiny model --- */

/* D 8, heads 2, layers 2, F 32, vocab 16. */
enum { D = 8, F = 32, V = 16, L = 2 };

static NeoxConfig tiny_cfg(bool tie, bool bias) {
  char j[512];
  snprintf(j, sizeof j,
           "{\"model_type\":\"gpt_neox\",\"hidden_size\":%d,\"num_attention_heads\":2,"
           "\"num_hidden_layers\":%d,\"intermediate_size\":%d,\"vocab_size\":%d,\"rotary_pct\":0.5,"
           "\"tie_word_embeddings\":%s,\"attention_bias\":%s}",
           D, L, F, V, tie ? "true" : "false", bias ? "true" : "false");
  NeoxConfig c;
  Err e = {0};
  if (neox_config_parse(j, strlen(j), "config.json", &c, &e)) {
    fprintf(stderr, "test_safetensors.c: tiny config: %s\n", e.msg);
    exit(1);
  }
  return c;
}

static void tiny_spec(Spec *s, const char *dt, bool tie, bool bias) {
  s->n = 0;
  char nm[128];
  add(s, "gpt_neox.embed_in.weight", dt, 2, V, D);
  for (int l = 0; l < L; l++) {
#define LAYER(suffix, rank, d0, d1)                                        \
  snprintf(nm, sizeof nm, "gpt_neox.layers.%d.%s", l, suffix);             \
  add(s, nm, dt, rank, d0, d1)
    LAYER("input_layernorm.weight", 1, D, 0);
    LAYER("input_layernorm.bias", 1, D, 0);
    LAYER("post_attention_layernorm.weight", 1, D, 0);
    LAYER("post_attention_layernorm.bias", 1, D, 0);
    LAYER("attention.query_key_value.weight", 2, 3 * D, D);
    if (bias) { LAYER("attention.query_key_value.bias", 1, 3 * D, 0); }
    LAYER("attention.dense.weight", 2, D, D);
    if (bias) { LAYER("attention.dense.bias", 1, D, 0); }
    LAYER("mlp.dense_h_to_4h.weight", 2, F, D);
    LAYER("mlp.dense_h_to_4h.bias", 1, F, 0);
    LAYER("mlp.dense_4h_to_h.weight", 2, D, F);
    LAYER("mlp.dense_4h_to_h.bias", 1, D, 0);
#undef LAYER
  }
  add(s, "gpt_neox.final_layer_norm.weight", dt, 1, D, 0);
  add(s, "gpt_neox.final_layer_norm.bias", dt, 1, D, 0);
  if (!tie) add(s, "embed_out.weight", dt, 2, V, D);
}

/* ------------------------------------------------------------ expects --- */

static bool msg_ok(const Err *e, const char *sub) {
  return e->set && strstr(e->msg, sub) && !strchr(e->msg, '\n');
}

static void open_dir_err(int line, const char *dir, const char *sub) {
  StModel m;
  Err e = {0};
  int rc = st_open_dir(dir, &m, &e);
  char d[2048];
  snprintf(d, sizeof d, "want: ...%s...\n    got (rc %d): %s", sub, rc, e.set ? e.msg : "(no error)");
  report(rc == -1 && msg_ok(&e, sub) && m.n_tensors == 0 && m.n_files == 0, line,
         "st_open_dir refused with the expected message", d);
  if (rc == 0) st_close(&m);
}

static void open_file_err(int line, const char *path, const char *sub) {
  StModel m;
  Err e = {0};
  int rc = st_open_file(path, &m, &e);
  char d[2048];
  snprintf(d, sizeof d, "want: ...%s...\n    got (rc %d): %s", sub, rc, e.set ? e.msg : "(no error)");
  report(rc == -1 && msg_ok(&e, sub) && strncmp(e.msg, path, strlen(path)) == 0, line,
         "st_open_file refused with the expected message", d);
  if (rc == 0) st_close(&m);
}

/* Opens fine, and neox_check_tensors gives rc 0 (sub NULL) or an error
 * containing sub. */
static void check_tensors(int line, const char *dir, const NeoxConfig *cfg, const char *sub) {
  StModel m;
  Err e = {0};
  int rc = st_open_dir(dir, &m, &e);
  char d[2048];
  if (rc != 0) {
    snprintf(d, sizeof d, "open failed: %s", e.msg);
    report(false, line, "st_open_dir", d);
    return;
  }
  rc = neox_check_tensors(cfg, &m, &e);
  snprintf(d, sizeof d, "want: %s%s%s\n    got (rc %d): %s", sub ? "..." : "success", sub ? sub : "",
           sub ? "..." : "", rc, e.set ? e.msg : "(no error)");
  report(sub ? rc == -1 && msg_ok(&e, sub) : rc == 0 && !e.set, line,
         sub ? "neox_check_tensors refused with the expected message" : "neox_check_tensors accepted", d);
  st_close(&m);
}
#define DIR_ERR(dir, sub) open_dir_err(__LINE__, dir, sub)
#define FILE_ERR(path, sub) open_file_err(__LINE__, path, sub)
#define CHK_OK(dir, cfg) check_tensors(__LINE__, dir, cfg, NULL)
#define CHK_ERR(dir, cfg, sub) check_tensors(__LINE__, dir, cfg, sub)

/* -------------------------------------------------------------- tests --- */

static void test_single(void) {
  NeoxConfig cfg = tiny_cfg(false, true);
  Spec s;
  tiny_spec(&s, "F32", false, true);
  const char *dir = case_dir("single");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_OK(dir, &cfg);

  StModel m;
  Err e = {0};
  CHECK(st_open_dir(dir, &m, &e) == 0);
  CHECK(m.n_files == 1 && m.n_tensors == s.n);
  CHECK(m.source && strcmp(m.source, in(dir, "model.safetensors")) == 0);
  bool sorted = true;
  for (int i = 1; i < m.n_tensors; i++) sorted &= strcmp(m.tensors[i - 1].name, m.tensors[i].name) < 0;
  CHECK(sorted);
  /* Each tensor is where the header says, with its shape and size. */
  uint64_t off = 0;
  bool all = true;
  for (int i = 0; i < s.n; i++) {
    const StTensor *t = st_find(&m, s.t[i].name);
    uint64_t n = 4;
    for (int d = 0; d < s.t[i].rank; d++) n *= (uint64_t)s.t[i].shape[d];
    all &= t && t->dtype == ST_F32 && t->rank == s.t[i].rank && t->nbytes == n &&
           t->data[0] == pat(off) && t->data[n - 1] == pat(off + n - 1) &&
           strcmp(t->dtype_str, "F32") == 0 && strcmp(t->file, m.source) == 0;
    for (int d = 0; t && d < t->rank; d++) all &= t->shape[d] == s.t[i].shape[d];
    off += n;
  }
  CHECK(all);
  CHECK(st_find(&m, "gpt_neox.layers.0.mlp.dense_h_to_4h.weight")->shape[0] == F);
  CHECK(st_find(&m, "no.such.tensor") == NULL);
  CHECK(st_find(&m, "") == NULL);
  st_close(&m);
  CHECK(m.n_tensors == 0 && m.n_files == 0 && m.tensors == NULL);
  st_close(&m); /* twice is harmless */

  /* The same file through st_open_file. */
  CHECK(st_open_file(in(dir, "model.safetensors"), &m, &e) == 0 && m.n_tensors == s.n);
  st_close(&m);

  /* A trailing slash on the folder. */
  char slash[1300];
  snprintf(slash, sizeof slash, "%s/", dir);
  CHK_OK(slash, &cfg);

  CHECK(strcmp(st_dtype_name(ST_F32), "F32") == 0 && strcmp(st_dtype_name(ST_F16), "F16") == 0 &&
        strcmp(st_dtype_name(ST_BF16), "BF16") == 0 && strcmp(st_dtype_name(ST_OTHER), "other") == 0);
}

static void test_dtypes_and_variants(void) {
  Spec s;
  /* F16 and BF16; a mix of dtypes is fine too. */
  NeoxConfig cfg = tiny_cfg(false, true);
  tiny_spec(&s, "F16", false, true);
  const char *dir = case_dir("f16");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_OK(dir, &cfg);
  StModel m;
  Err e = {0};
  CHECK(st_open_dir(dir, &m, &e) == 0 && st_find(&m, "embed_out.weight")->dtype == ST_F16 &&
        st_find(&m, "embed_out.weight")->nbytes == V * D * 2);
  st_close(&m);

  tiny_spec(&s, "BF16", false, true);
  snprintf(get(&s, "gpt_neox.final_layer_norm.weight")->dtype, 16, "F32");
  dir = case_dir("bf16");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_OK(dir, &cfg);
  CHECK(st_open_dir(dir, &m, &e) == 0 && st_find(&m, "embed_out.weight")->dtype == ST_BF16 &&
        st_find(&m, "gpt_neox.final_layer_norm.weight")->dtype == ST_F32);
  st_close(&m);

  /* Tied embeddings: no embed_out, or an embed_out that is ignored. */
  NeoxConfig tied = tiny_cfg(true, true);
  tiny_spec(&s, "F32", true, true);
  dir = case_dir("tied");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_OK(dir, &tied);
  CHK_ERR(dir, &cfg, "missing tensor \"embed_out.weight\" (expected shape [16, 8]) (config.json has tie_word_embeddings false)");
  add(&s, "embed_out.weight", "I64", 1, 3, 0);
  dir = case_dir("tied_extra");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_OK(dir, &tied);

  /* No attention biases. */
  NeoxConfig nob = tiny_cfg(false, false);
  tiny_spec(&s, "F32", false, false);
  dir = case_dir("nobias");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_OK(dir, &nob);
  CHK_ERR(dir, &cfg, "missing tensor \"gpt_neox.layers.0.attention.query_key_value.bias\" (expected shape [24]) (config.json has attention_bias true)");
  tiny_spec(&s, "F32", false, true);
  dir = case_dir("bias_unexpected");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_ERR(dir, &nob, "unexpected tensor \"gpt_neox.layers.0.attention.dense.bias\" (config.json has attention_bias false)");
}

static void test_legacy_buffers(void) {
  NeoxConfig cfg = tiny_cfg(false, true);
  Spec s;
  tiny_spec(&s, "F16", false, true);
  char nm[128];
  for (int l = 0; l < L; l++) {
    snprintf(nm, sizeof nm, "gpt_neox.layers.%d.attention.bias", l);
    TS *t = add(&s, nm, "BOOL", 4, 1, 1);
    t->shape[2] = t->shape[3] = 8;
    snprintf(nm, sizeof nm, "gpt_neox.layers.%d.attention.masked_bias", l);
    add(&s, nm, "F32", 0, 0, 0);
    snprintf(nm, sizeof nm, "gpt_neox.layers.%d.attention.rotary_emb.inv_freq", l);
    add(&s, nm, "F32", 1, 1, 0);
  }
  add(&s, "gpt_neox.rotary_emb.inv_freq", "F32", 1, 1, 0);
  const char *dir = case_dir("legacy");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_OK(dir, &cfg);
  StModel m;
  Err e = {0};
  CHECK(st_open_dir(dir, &m, &e) == 0);
  const StTensor *t = st_find(&m, "gpt_neox.layers.1.attention.bias");
  CHECK(t && t->dtype == ST_OTHER && strcmp(t->dtype_str, "BOOL") == 0 && t->rank == 4 && t->nbytes == 64);
  t = st_find(&m, "gpt_neox.layers.0.attention.masked_bias");
  CHECK(t && t->rank == 0 && t->nbytes == 4);
  st_close(&m);

  /* ...but only for layers the config has. */
  add(&s, "gpt_neox.layers.2.attention.bias", "BOOL", 1, 1, 0);
  dir = case_dir("legacy_extra_layer");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_ERR(dir, &cfg, "unexpected tensor \"gpt_neox.layers.2.attention.bias\" (config.json has num_hidden_layers 2)");
}

static void test_tensor_checks(void) {
  NeoxConfig cfg = tiny_cfg(false, true);
  Spec s;
  const char *dir;

  tiny_spec(&s, "F32", false, true);
  del(&s, "gpt_neox.layers.1.mlp.dense_4h_to_h.bias");
  dir = case_dir("missing");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_ERR(dir, &cfg, "model.safetensors: missing tensor \"gpt_neox.layers.1.mlp.dense_4h_to_h.bias\" (expected shape [8])");

  tiny_spec(&s, "F32", false, true);
  get(&s, "gpt_neox.layers.1.mlp.dense_h_to_4h.weight")->shape[1] = D - 1;
  dir = case_dir("shape");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_ERR(dir, &cfg, "/model.safetensors: tensor \"gpt_neox.layers.1.mlp.dense_h_to_4h.weight\": expected shape [32, 8], got [32, 7]");

  tiny_spec(&s, "F32", false, true);
  get(&s, "gpt_neox.final_layer_norm.bias")->rank = 2;
  get(&s, "gpt_neox.final_layer_norm.bias")->shape[1] = 1;
  dir = case_dir("rank");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_ERR(dir, &cfg, "tensor \"gpt_neox.final_layer_norm.bias\": expected shape [8], got [8, 1]");

  /* A transposed weight is caught by its shape. */
  tiny_spec(&s, "F32", false, true);
  get(&s, "gpt_neox.layers.0.attention.query_key_value.weight")->shape[0] = D;
  get(&s, "gpt_neox.layers.0.attention.query_key_value.weight")->shape[1] = 3 * D;
  dir = case_dir("transposed");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_ERR(dir, &cfg, "expected shape [24, 8], got [8, 24]");

  tiny_spec(&s, "F32", false, true);
  snprintf(get(&s, "gpt_neox.embed_in.weight")->dtype, 16, "I64");
  dir = case_dir("dtype_i64");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_ERR(dir, &cfg, "model.safetensors: tensor \"gpt_neox.embed_in.weight\" has dtype I64, supported: F32, F16, BF16");

  tiny_spec(&s, "F32", false, true);
  snprintf(get(&s, "gpt_neox.layers.0.input_layernorm.weight")->dtype, 16, "F8_E4M3");
  dir = case_dir("dtype_f8");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_ERR(dir, &cfg, "has dtype F8_E4M3, supported: F32, F16, BF16");

  /* A dtype name safetensors does not define is kept as "other". */
  tiny_spec(&s, "F32", false, true);
  snprintf(get(&s, "gpt_neox.layers.0.input_layernorm.bias")->dtype, 16, "Q4_K");
  dir = case_dir("dtype_unknown");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_ERR(dir, &cfg, "tensor \"gpt_neox.layers.0.input_layernorm.bias\" has dtype Q4_K, supported");

  tiny_spec(&s, "F32", false, true);
  add(&s, "lm_head.weight", "F32", 2, V, D);
  dir = case_dir("unexpected");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_ERR(dir, &cfg, "model.safetensors: unexpected tensor \"lm_head.weight\"");

  tiny_spec(&s, "F32", false, true);
  add(&s, "gpt_neox.layers.7.mlp.dense_h_to_4h.weight", "F32", 2, F, D);
  dir = case_dir("extra_layer");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_ERR(dir, &cfg, "unexpected tensor \"gpt_neox.layers.7.mlp.dense_h_to_4h.weight\" (config.json has num_hidden_layers 2)");
  /* Layer names must be canonical: "01" is not layer 1. */
  tiny_spec(&s, "F32", false, true);
  add(&s, "gpt_neox.layers.01.attention.bias", "BOOL", 1, 1, 0);
  dir = case_dir("layer_01");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_ERR(dir, &cfg, "unexpected tensor \"gpt_neox.layers.01.attention.bias\"");
  /* The config has fewer layers than the file: unexpected; more: missing. */
  NeoxConfig one = cfg;
  one.num_hidden_layers = 1;
  tiny_spec(&s, "F32", false, true);
  dir = case_dir("layers_mismatch");
  write_st(in(dir, "model.safetensors"), &s);
  CHK_ERR(dir, &one, "unexpected tensor \"gpt_neox.layers.1.");
  NeoxConfig three = cfg;
  three.num_hidden_layers = 3;
  CHK_ERR(dir, &three, "missing tensor \"gpt_neox.layers.2.input_layernorm.weight\"");
  /* A wrong vocab size shows on embed_in first. */
  NeoxConfig v2 = cfg;
  v2.vocab_size = 17;
  CHK_ERR(dir, &v2, "tensor \"gpt_neox.embed_in.weight\": expected shape [17, 8], got [16, 8]");

  /* A model of another architecture. */
  Spec ll = {0};
  add(&ll, "model.embed_tokens.weight", "F16", 2, V, D);
  add(&ll, "model.layers.0.self_attn.q_proj.weight", "F16", 2, D, D);
  dir = case_dir("llama");
  write_st(in(dir, "model.safetensors"), &ll);
  CHK_ERR(dir, &cfg, "no tensor is named gpt_neox.* (first is \"model.embed_tokens.weight\"); not a GPT-NeoX model");
  dir = case_dir("no_tensors");
  write_st_raw(in(dir, "model.safetensors"), "{\"__metadata__\":{\"format\":\"pt\"}}", 0);
  CHK_ERR(dir, &cfg, "model.safetensors: contains no tensors");
}

static void test_header_errors(void) {
  const char *dir = case_dir("header");
  const char *p = in(dir, "t.safetensors");
  char want[1500];
  /* One valid tensor t: F32 [2, 3] at [0, 24). */
#define T24 "\"t\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"

  FILE_ERR(in(dir, "absent.safetensors"), "absent.safetensors: cannot open: No such file or directory");
  FILE_ERR(dir, ": not a regular file");
  write_bytes(p, "", 0);
  FILE_ERR(p, "file is 0 bytes, too short for a safetensors file");
  write_bytes(p, "\x02\0\0\0\0\0\0", 7);
  FILE_ERR(p, "file is 7 bytes, too short");
  write_st_hlen(p, 1000, "{}", 0);
  FILE_ERR(p, "header length 1000 runs past the end of the file (10 bytes)");
  write_st_hlen(p, 200ull << 20, "{}", 0);
  FILE_ERR(p, "header length 209715200 is over the 100 MB limit");
  write_st_hlen(p, ~0ull, "{}", 0);
  FILE_ERR(p, "is over the 100 MB limit");
  write_st_hlen(p, 0, "", 0);
  FILE_ERR(p, "invalid JSON at line 1, column 1 (byte 8): unexpected end of input");
  write_st_raw(p, "{\"t\":{\"dtype\":\"F32\",,}}", 0);
  snprintf(want, sizeof want, "%s: invalid JSON at line 1, column ", p);
  FILE_ERR(p, want);
  write_st_raw(p, "{\"t\":\n{\"dtype\":\"F32\"", 0);
  FILE_ERR(p, "invalid JSON at line 2, column 15 (byte 28): unexpected end of input");
  write_st_raw(p, "{" T24 "} x", 24);
  FILE_ERR(p, "unexpected text after the JSON value");
  write_st_raw(p, "{" T24 "}\n  \t ", 24); /* whitespace padding is fine */
  StModel m;
  Err e = {0};
  CHECK(st_open_file(p, &m, &e) == 0 && m.n_tensors == 1 && st_find(&m, "t")->nbytes == 24);
  st_close(&m);
  write_st_raw(p, "[1, 2]", 0);
  FILE_ERR(p, "header: expected a JSON object, got an array");
  write_st_raw(p, "{\"t\": 3}", 0);
  FILE_ERR(p, "tensor \"t\": expected an object with dtype, shape and data_offsets, got 3");

  write_st_raw(p, "{\"t\":{\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24);
  FILE_ERR(p, "tensor \"t\": key \"dtype\": expected a string such as \"F16\", got nothing (key missing)");
  write_st_raw(p, "{\"t\":{\"dtype\":4,\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24);
  FILE_ERR(p, "key \"dtype\": expected a string such as \"F16\", got 4");
  write_st_raw(p, "{\"t\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24);
  FILE_ERR(p, "tensor \"t\": key \"dtype\" appears twice");

  write_st_raw(p, "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,24]}}", 24);
  FILE_ERR(p, "key \"shape\": expected an array of at most 4 non-negative integers, got nothing");
  write_st_raw(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":\"2x3\",\"data_offsets\":[0,24]}}", 24);
  FILE_ERR(p, "got \"2x3\"");
  write_st_raw(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,24]}}", 24);
  FILE_ERR(p, "key \"shape\": expected non-negative integers (at most 2^53), got -3");
  write_st_raw(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,1.5],\"data_offsets\":[0,24]}}", 24);
  FILE_ERR(p, "expected non-negative integers (at most 2^53), got 1.5");
  write_st_raw(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,\"3\"],\"data_offsets\":[0,24]}}", 24);
  FILE_ERR(p, "expected non-negative integers (at most 2^53), got \"3\"");
  write_st_raw(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,6],\"data_offsets\":[0,24]}}", 24);
  FILE_ERR(p, "key \"shape\": expected at most 4 dims, got 5");
  write_st_raw(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,24]}}", 24);
  FILE_ERR(p, "expected non-negative integers");
  write_st_raw(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,24]}}", 24);
  FILE_ERR(p, "tensor \"t\": shape [4294967296, 4294967296, 16] is too large (byte size overflows 64 bits)");
  write_st_raw(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,24]}}", 24);
  FILE_ERR(p, "key \"shape\": expected non-negative integers (at most 2^53), got 4.6116860184273879e+18");

  write_st_raw(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,3]}}", 24);
  FILE_ERR(p, "key \"data_offsets\": expected [begin, end] (two non-negative integers), got nothing");
  write_st_raw(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24,48]}}", 48);
  FILE_ERR(p, "key \"data_offsets\": expected [begin, end]");
  write_st_raw(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0]}}", 24);
  FILE_ERR(p, "key \"data_offsets\": expected [begin, end]");
  write_st_raw(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[-1,23]}}", 24);
  FILE_ERR(p, "key \"data_offsets\": expected [begin, end]");
  write_st_raw(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[24,0]}}", 24);
  FILE_ERR(p, "tensor \"t\": data_offsets [24, 0]: begin is after end");
  write_st_raw(p, "{" T24 "}", 20);
  FILE_ERR(p, "tensor \"t\": data_offsets [0, 24] run past the end of the data section (20 bytes)");
  write_st_raw(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24);
  FILE_ERR(p, "tensor \"t\": dtype F32 x shape [2, 3] is 24 bytes, but data_offsets [0, 20] hold 20");
  write_st_raw(p, "{\"t\":{\"dtype\":\"I64\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24);
  FILE_ERR(p, "dtype I64 x shape [2, 3] is 48 bytes");
  write_st_raw(p, "{\"t\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[0,4]}}", 24);
  FILE_ERR(p, "dtype BF16 x shape [] is 2 bytes, but data_offsets [0, 4] hold 4");

  write_st_raw(p, "{" T24 ",\"u\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24);
  FILE_ERR(p, "tensors \"t\" [0, 24) and \"u\" [8, 24) overlap in the data section");
  write_st_raw(p, "{\"u\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[20,24]}," T24 "}", 24);
  FILE_ERR(p, "tensors \"t\" [0, 24) and \"u\" [20, 24) overlap");
  write_st_raw(p, "{" T24 "," T24 "}", 24);
  FILE_ERR(p, "tensor \"t\" appears twice in the header");
  /* Zero-size tensors share offsets harmlessly; holes are allowed;
   * unknown keys and __metadata__ are skipped. */
  write_st_raw(p,
               "{\"__metadata__\":{\"format\":\"pt\",\"x\":[1]},\"z1\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[8,8]},"
               "\"z2\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[8,8],\"extra\":1},"
               "\"t\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[16,40]}}",
               48);
  e = (Err){0};
  int rc = st_open_file(p, &m, &e);
  report(rc == 0 && m.n_tensors == 3 && st_find(&m, "z1")->nbytes == 0 && st_find(&m, "t")->data[0] == pat(16) &&
             !st_find(&m, "__metadata__"),
         __LINE__, "zero-size tensors, holes, metadata", e.msg);
  if (rc == 0) st_close(&m);
  /* Control characters in a name are shown escaped, on one line. */
  write_st_raw(p, "{\"a\\nb\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24);
  FILE_ERR(p, "tensor \"a\\x0ab\": dtype F32");
  /* A name cJSON would cut at an escaped NUL is refused. */
  write_st_raw(p, "{\"t\\u0000x\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24);
  FILE_ERR(p, "invalid JSON at line 1, column 4 (byte 11): \\u0000 in a string is not supported");
#undef T24
}

static void test_dir_errors(void) {
  char path[1300];
  snprintf(path, sizeof path, "%s/no_such_model", root);
  char want[1500];
  snprintf(want, sizeof want, "%s: cannot open model folder: No such file or directory", path);
  DIR_ERR(path, want);
  const char *dir = case_dir("a_file_not_dir");
  write_bytes(in(dir, "f"), "x", 1);
  DIR_ERR(in(dir, "f"), "f: not a directory (expected a model folder)");
  dir = case_dir("empty_model");
  snprintf(want, sizeof want, "%s: no weights: looked for model.safetensors and model.safetensors.index.json", dir);
  DIR_ERR(dir, want);
  dir = case_dir("bin_model");
  write_bytes(in(dir, "pytorch_model.bin"), "PK", 2);
  DIR_ERR(dir, "(found pytorch_model.bin; only safetensors weights are supported");
  /* Errors inside the file name the file's path. */
  dir = case_dir("bad_single");
  write_bytes(in(dir, "model.safetensors"), "abc", 3);
  snprintf(want, sizeof want, "%s/model.safetensors: file is 3 bytes", dir);
  DIR_ERR(dir, want);
}

/* Writes the tiny model as two shards + index; `mutate` edits the index text
 * (weight_map entries) before writing. */
static const char *write_sharded(const char *name, const Spec *s, const char *index_override) {
  const char *dir = case_dir(name);
  uint64_t first = 0;
  for (int i = 0; i < s->n / 2; i++) first |= 1ull << i;
  write_st_mask(in(dir, "model-00001-of-00002.safetensors"), s, first);
  write_st_mask(in(dir, "model-00002-of-00002.safetensors"), s, ~first & ((1ull << s->n) - 1));
  char *idx = malloc(65536);
  if (index_override) {
    snprintf(idx, 65536, "%s", index_override);
  } else {
    size_t o = (size_t)sprintf(idx, "{\"metadata\":{\"total_size\":1234},\"weight_map\":{");
    for (int i = 0; i < s->n; i++)
      o += (size_t)sprintf(idx + o, "%s\"%s\":\"model-0000%d-of-00002.safetensors\"", i ? "," : "",
                           s->t[i].name, i < s->n / 2 ? 1 : 2);
    sprintf(idx + o, "}}");
  }
  write_bytes(in(dir, "model.safetensors.index.json"), idx, strlen(idx));
  free(idx);
  return dir;
}

static void test_sharded(void) {
  NeoxConfig cfg = tiny_cfg(false, true);
  Spec s;
  tiny_spec(&s, "BF16", false, true);
  const char *dir = write_sharded("sharded", &s, NULL);
  CHK_OK(dir, &cfg);
  StModel m;
  Err e = {0};
  CHECK(st_open_dir(dir, &m, &e) == 0);
  CHECK(m.n_files == 2 && m.n_tensors == s.n && strstr(m.source, "model.safetensors.index.json"));
  const StTensor *a = st_find(&m, s.t[0].name), *b = st_find(&m, s.t[s.n - 1].name);
  CHECK(a && strstr(a->file, "model-00001-of-00002.safetensors") && a->data[0] == pat(0));
  CHECK(b && strstr(b->file, "model-00002-of-00002.safetensors"));
  st_close(&m);

  /* The index wins over a model.safetensors next to it. */
  write_bytes(in(dir, "model.safetensors"), "junk", 4);
  CHK_OK(dir, &cfg);

  /* An error in a shard names the shard. */
  tiny_spec(&s, "BF16", false, true);
  get(&s, "embed_out.weight")->shape[0] = V + 1;
  dir = write_sharded("sharded_shape", &s, NULL);
  CHK_ERR(dir, &cfg, "model-00002-of-00002.safetensors: tensor \"embed_out.weight\": expected shape [16, 8], got [17, 8]");
  tiny_spec(&s, "BF16", false, true);
  del(&s, "gpt_neox.layers.0.input_layernorm.bias");
  dir = write_sharded("sharded_missing", &s, NULL);
  CHK_ERR(dir, &cfg, "model.safetensors.index.json: missing tensor \"gpt_neox.layers.0.input_layernorm.bias\"");

  /* Index and shards disagree. */
  tiny_spec(&s, "F32", false, true);
  char idx[65536];
  size_t o = (size_t)sprintf(idx, "{\"weight_map\":{");
  for (int i = 0; i < s.n; i++)
    o += (size_t)sprintf(idx + o, "%s\"%s\":\"model-0000%d-of-00002.safetensors\"", i ? "," : "", s.t[i].name,
                         i == 0 ? 2 : i < s.n / 2 ? 1 : 2);
  sprintf(idx + o, "}}");
  dir = write_sharded("index_wrong_shard", &s, idx);
  snprintf(idx, sizeof idx, "model.safetensors.index.json: index lists tensor \"%s\" in model-00002-of-00002.safetensors, but it is in %s/model-00001-of-00002.safetensors",
           s.t[0].name, dir);
  DIR_ERR(dir, idx);

  o = (size_t)sprintf(idx, "{\"weight_map\":{\"ghost\":\"model-00001-of-00002.safetensors\"");
  for (int i = 0; i < s.n; i++)
    o += (size_t)sprintf(idx + o, ",\"%s\":\"model-0000%d-of-00002.safetensors\"", s.t[i].name, i < s.n / 2 ? 1 : 2);
  sprintf(idx + o, "}}");
  dir = write_sharded("index_ghost", &s, idx);
  DIR_ERR(dir, "index lists tensor \"ghost\" in model-00001-of-00002.safetensors, but that shard does not contain it");

  o = (size_t)sprintf(idx, "{\"weight_map\":{");
  for (int i = 1; i < s.n; i++)
    o += (size_t)sprintf(idx + o, "%s\"%s\":\"model-0000%d-of-00002.safetensors\"", i > 1 ? "," : "", s.t[i].name,
                         i < s.n / 2 ? 1 : 2);
  sprintf(idx + o, "}}");
  dir = write_sharded("index_unlisted", &s, idx);
  snprintf(idx, sizeof idx, "model-00001-of-00002.safetensors: tensor \"%s\" is not listed in %s/model.safetensors.index.json",
           s.t[0].name, dir);
  DIR_ERR(dir, idx);

  /* The same name in two shards. */
  dir = case_dir("dup_across");
  Spec one = {0};
  add(&one, "gpt_neox.embed_in.weight", "F32", 2, V, D);
  write_st(in(dir, "a.safetensors"), &one);
  write_st(in(dir, "b.safetensors"), &one);
  snprintf(idx, sizeof idx, "{\"weight_map\":{\"gpt_neox.embed_in.weight\":\"a.safetensors\",\"x\":\"b.safetensors\"}}");
  write_bytes(in(dir, "model.safetensors.index.json"), idx, strlen(idx));
  snprintf(idx, sizeof idx, "%s/b.safetensors: tensor \"gpt_neox.embed_in.weight\" is also in %s/a.safetensors (duplicate tensor name across shards)", dir, dir);
  DIR_ERR(dir, idx);

  /* Bad index files. */
  dir = case_dir("index_bad");
  const char *ip = in(dir, "model.safetensors.index.json");
  write_text(ip, "{\"weight_map\": {");
  DIR_ERR(dir, "model.safetensors.index.json: invalid JSON at line 1, column 17 (byte 16): unexpected end of input");
  write_text(ip, "[]");
  DIR_ERR(dir, "model.safetensors.index.json: expected a JSON object at the top level, got an array");
  write_text(ip, "{\"metadata\":{}}");
  DIR_ERR(dir, "model.safetensors.index.json: key \"weight_map\": expected an object {tensor name: shard file}, got nothing (key missing)");
  write_text(ip, "{\"weight_map\":[]}");
  DIR_ERR(dir, "key \"weight_map\": expected an object {tensor name: shard file}, got an array");
  write_text(ip, "{\"weight_map\":{}}");
  DIR_ERR(dir, "model.safetensors.index.json: key \"weight_map\" is empty");
  write_text(ip, "{\"weight_map\":{\"a\":3}}");
  DIR_ERR(dir, "weight_map[\"a\"]: expected a shard file name in the same folder (\"*.safetensors\"), got 3");
  write_text(ip, "{\"weight_map\":{\"a\":\"../x.safetensors\"}}");
  DIR_ERR(dir, "weight_map[\"a\"]: expected a shard file name in the same folder (\"*.safetensors\"), got \"../x.safetensors\"");
  write_text(ip, "{\"weight_map\":{\"a\":\"model.bin\"}}");
  DIR_ERR(dir, "got \"model.bin\"");
  write_text(ip, "{\"weight_map\":{\"a\\nb\":\"x\\ny.safetensors\"}}");
  DIR_ERR(dir, "weight_map[\"a\\x0ab\"]: expected a shard file name in the same folder (\"*.safetensors\"), got \"x\\x0ay.safetensors\"");
  write_text(ip, "{\"weight_map\":{\"a\":\"\"}}");
  DIR_ERR(dir, "weight_map[\"a\"]: expected a shard file name");
  write_text(ip, "{\"weight_map\":{\"a\":\"s.safetensors\",\"a\":\"s.safetensors\"}}");
  DIR_ERR(dir, "weight_map lists tensor \"a\" twice");
  write_text(ip, "{\"weight_map\":{\"a\":\"missing.safetensors\"}}");
  snprintf(idx, sizeof idx, "%s/missing.safetensors: cannot open: No such file or directory", dir);
  DIR_ERR(dir, idx);
}

/* ------------------------------------------------------------- fuzz --- */

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static int cmp_tensor_data(const void *a, const void *b) {
  const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
  return x->data < y->data ? -1 : x->data > y->data;
}

/* What st_open_file promises, checked on an accepted input. */
static bool invariants(const StModel *m, uint64_t file_size) {
  const StTensor **by = malloc(((size_t)m->n_tensors + 1) * sizeof *by);
  int k = 0;
  unsigned sum = 0;
  bool ok = m->n_files == 1;
  for (int i = 0; i < m->n_tensors; i++) {
    const StTensor *t = &m->tensors[i];
    if (i) ok &= strcmp(m->tensors[i - 1].name, t->name) < 0;
    ok &= t->rank >= 0 && t->rank <= 4 && t->nbytes <= file_size;
    if (t->dtype != ST_OTHER) {
      uint64_t n = t->dtype == ST_F32 ? 4 : 2;
      for (int d = 0; d < t->rank; d++) n *= (uint64_t)t->shape[d];
      ok &= n == t->nbytes;
    }
    for (uint64_t j = 0; j < t->nbytes; j++) sum += t->data[j]; /* must not fault */
    if (t->nbytes) by[k++] = t;
    ok &= st_find(m, t->name) == t;
  }
  qsort(by, (size_t)k, sizeof *by, cmp_tensor_data);
  for (int i = 1; i < k; i++) ok &= by[i - 1]->data + by[i - 1]->nbytes <= by[i]->data;
  if (k) ok &= (uint64_t)(by[k - 1]->data + by[k - 1]->nbytes - by[0]->data) <= file_size;
  free(by);
  (void)sum;
  return ok;
}

static void test_fuzz(int iters) {
  NeoxConfig cfg = tiny_cfg(false, true);
  Spec s;
  tiny_spec(&s, "F16", false, true);
  /* One layer is enough and keeps the file small. */
  cfg.num_hidden_layers = 1;
  for (int i = s.n - 1; i >= 0; i--)
    if (strncmp(s.t[i].name, "gpt_neox.layers.1.", 18) == 0) s.t[i] = s.t[--s.n];
  add(&s, "gpt_neox.layers.0.attention.masked_bias", "F32", 0, 0, 0);
  add(&s, "gpt_neox.layers.0.attention.bias", "BOOL", 2, 2, 2);
  const char *dir = case_dir("fuzz");
  const char *base_path = in(dir, "base.safetensors");
  write_st(base_path, &s);
  FILE *f = fopen(base_path, "rb");
  static uint8_t base[1 << 16], buf[1 << 16];
  size_t n0 = fread(base, 1, sizeof base, f);
  fclose(f);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | base[i];
  static const char alphabet[] = "0123456789,:[]{}\" -.eFI";

  char path[1400];
  snprintf(path, sizeof path, "%s/fuzz.safetensors", dir);
  int accepted = 0, refused = 0, checked = 0, bad = 0;
  for (int it = 0; it < iters; it++) {
    memcpy(buf, base, n0);
    size_t n = n0;
    int edits = 1 + (int)(rnd() % 3);
    for (int k = 0; k < edits && n > 0; k++) {
      size_t at = rnd() % n;
      size_t hat = 8 + rnd() % (hlen ? hlen : 1); /* somewhere in the header */
      switch (rnd() % 8) {
      case 0: buf[at] ^= (uint8_t)(1u << (rnd() % 8)); break;                /* bit flip */
      case 1: n = at; break;                                                 /* truncate */
      case 2: buf[hat] = (uint8_t)alphabet[rnd() % (sizeof alphabet - 1)]; break;
      case 3:                                                                /* digit in header */
        for (size_t j = hat; j < 8 + hlen && j < n; j++)
          if (buf[j] >= '0' && buf[j] <= '9') {
            buf[j] = (uint8_t)('0' + rnd() % 10);
            break;
          }
        break;
      case 4: buf[rnd() % 8] = (uint8_t)rnd(); break;                        /* length field */
      case 5: {                                                              /* length +- small */
        uint64_t h = 0;
        for (int i = 7; i >= 0; i--) h = h << 8 | buf[i];
        h += (uint64_t)((int64_t)(rnd() % 17) - 8);
        for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(h >> (8 * i));
        break;
      }
      case 6:                                                                /* delete in header */
        if (hat < n) memmove(buf + hat, buf + hat + 1, n - hat - 1), n--;
        break;
      case 7: buf[at] = (uint8_t)rnd(); break;
      }
    }
    write_bytes(path, buf, n);
    StModel m;
    Err e = {0};
    int rc = st_open_file(path, &m, &e);
    if (rc == 0) {
      accepted++;
      if (!invariants(&m, n)) {
        if (bad++ < 5) fprintf(stderr, "fuzz: iteration %d: accepted file breaks an invariant\n", it);
      }
      Err e2 = {0};
      if (neox_check_tensors(&cfg, &m, &e2) == 0) checked++;
      else if (!e2.set || strchr(e2.msg, '\n')) bad++;
      st_close(&m);
    } else {
      refused++;
      if (rc != -1 || !e.set || strncmp(e.msg, path, strlen(path)) != 0 || strchr(e.msg, '\n') ||
          m.n_tensors || m.n_files) {
        if (bad++ < 5) fprintf(stderr, "fuzz: iteration %d: unclean error: %s\n", it, e.msg);
      }
    }
  }
  printf("safetensors fuzz: %d iterations, %d accepted (%d pass the tensor check), %d refused\n", iters,
         accepted, checked, refused);
  report(bad == 0, __LINE__, "fuzz: every input gives success with invariants or a clean error", NULL);
  report(accepted > 0 && refused > 0 && checked > 0, __LINE__, "fuzz: all outcomes seen", NULL);
}

int main(void) {
  const char *tmp = getenv("TEST_TMP");
  snprintf(root, sizeof root, "%s/test_safetensors", tmp && *tmp ? tmp : "/tmp");
  mkdir_p(root);

  test_single();
  test_dtypes_and_variants();
  test_legacy_buffers();
  test_tensor_checks();
  test_header_errors();
  test_dir_errors();
  test_sharded();
  test_fuzz(4000);

  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}
