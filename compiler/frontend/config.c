/* config.c — reads a GPT-NeoX config.json into a NeoxConfig.
 *
 * Owns: the list of config keys that change the graph, their Hugging Face
 * defaults, and the refusal of every config pythiac cannot compile exactly
 * (other model types, RoPE scaling, activations other than erf GELU, sizes
 * that do not fit).  Also owns the two JSON helpers the frontend shares
 * (neox_json_parse, neox_json_describe).
 *
 * Invariants after neox_config_parse succeeds: every dim is in
 * [1, NEOX_MAX_DIM]; hidden_size % num_attention_heads == 0; rotary_ndims is
 * even, >= 2 and <= head_dim; n_params and n_params * 4 fit in 63 bits.
 * Messages are one line: "<file>: key "<k>": expected <what>, got <value>". */
#include "config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CFG_MAX_FILE (16u << 20) /* a config.json is a few hundred bytes */

/* ---------------------------------------------------------------- JSON --- */

/* cJSON ends a string at an escaped NUL, so "a\u0000b" would read as "a":
 * find the first such escape in (already valid) JSON text; len if none. */
static size_t nul_escape(const char *s, size_t len) {
  bool in_str = false;
  for (size_t i = 0; i < len; i++) {
    if (!in_str) {
      in_str = s[i] == '"';
    } else if (s[i] == '"') {
      in_str = false;
    } else if (s[i] == '\\' && i + 1 < len) {
      if (s[i + 1] == 'u' && i + 5 < len && strncmp(s + i + 2, "0000", 4) == 0) return i;
      i++;
    }
  }
  return len;
}

cJSON *neox_json_parse(const char *text, size_t len, const char *fname,
                       uint64_t base, Err *e) {
  /* cJSON gets a terminated copy with one sentinel byte (\x01, never valid
   * JSON outside a string) after the text: running out of input then fails
   * at offset len, which tells truncation apart from a bad last byte.
   * cJSON's error offsets are otherwise approximate (sometimes one byte past
   * the culprit). */
  char *buf = malloc(len + 2);
  if (!buf) {
    err_set(e, "%s: out of memory reading %zu bytes of JSON", fname, len);
    return NULL;
  }
  if (len) memcpy(buf, text, len);
  buf[len] = 1;
  buf[len + 1] = 0;

  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(buf, len + 1, &end, 0);
  size_t off = end ? (size_t)(end - buf) : 0;
  const char *what = "syntax error";
  if (root) {
    /* Allow trailing whitespace (safetensors pads its header with spaces),
     * refuse anything else. */
    while (off < len && (buf[off] == ' ' || buf[off] == '\t' ||
                         buf[off] == '\n' || buf[off] == '\r'))
      off++;
    if (off >= len && (off = nul_escape(buf, len)) == len) {
      free(buf);
      return root;
    }
    cJSON_Delete(root);
    root = NULL;
    what = off < len && buf[off] == '\\' ? "\\u0000 in a string is not supported"
           : buf[off]                    ? "unexpected text after the JSON value"
                                         : "unexpected NUL byte after the JSON value";
  } else if (off >= len) {
    off = len;
    what = "unexpected end of input";
  } else if (buf[off] == 0) {
    what = "unexpected NUL byte";
  }
  size_t line = 1, col = 1;
  for (size_t i = 0; i < off; i++) {
    if (buf[i] == '\n') line++, col = 1;
    else col++;
  }
  err_set(e, "%s: invalid JSON at line %zu, column %zu (byte %llu): %s", fname,
          line, col, (unsigned long long)(base + off), what);
  free(buf);
  return NULL;
}

const char *neox_printable(const char *s, char *buf, size_t n) {
  size_t o = 0, i = 0;
  for (; s[i] && o + 5 < n && i < 200; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
      o += (size_t)snprintf(buf + o, n - o, "\\x%02x", c);
    else buf[o++] = (char)c;
  }
  if (s[i] && o + 4 < n) buf[o++] = '.', buf[o++] = '.', buf[o++] = '.';
  buf[o] = 0;
  return buf;
}

const char *neox_json_describe(const cJSON *v, char *buf, size_t n) {
  if (!v) snprintf(buf, n, "nothing (key missing)");
  else if (cJSON_IsNull(v)) snprintf(buf, n, "null");
  else if (cJSON_IsTrue(v)) snprintf(buf, n, "true");
  else if (cJSON_IsFalse(v)) snprintf(buf, n, "false");
  else if (cJSON_IsNumber(v)) {
    double d = v->valuedouble;
    if (isfinite(d) && d == floor(d) && fabs(d) < 1e18) snprintf(buf, n, "%.0f", d);
    else snprintf(buf, n, "%.17g", d);
  } else if (cJSON_IsString(v)) {
    /* Quote, cut long strings, and keep messages one printable line. */
    size_t o = 0, i = 0;
    const unsigned char *s = (const unsigned char *)v->valuestring;
    if (o + 1 < n) buf[o++] = '"';
    for (; s[i] && i < 48 && o + 6 < n; i++) {
      if (s[i] == '"' || s[i] == '\\') buf[o++] = '\\', buf[o++] = (char)s[i];
      else if (s[i] < 0x20 || s[i] == 0x7f) o += (size_t)snprintf(buf + o, n - o, "\\x%02x", s[i]);
      else buf[o++] = (char)s[i];
    }
    if (s[i] && o + 4 < n) buf[o++] = '.', buf[o++] = '.', buf[o++] = '.';
    if (o + 1 < n) buf[o++] = '"';
    buf[o < n ? o : n - 1] = 0;
  } else if (cJSON_IsArray(v)) snprintf(buf, n, "an array");
  else if (cJSON_IsObject(v)) snprintf(buf, n, "an object");
  else snprintf(buf, n, "an invalid value");
  return buf;
}

/* ------------------------------------------------------------- readers --- */

typedef struct {
  const cJSON *root;
  const char *fname;
  Err *e;
} Cfg;

static const cJSON *key(const Cfg *c, const char *k) {
  return cJSON_GetObjectItemCaseSensitive(c->root, k);
}

static int bad(const Cfg *c, const char *k, const cJSON *v, const char *expected) {
  char got[96];
  return err_set(c->e, "%s: key \"%s\": expected %s, got %s", c->fname, k,
                 expected, neox_json_describe(v, got, sizeof got));
}

/* An integer in [1, NEOX_MAX_DIM]; an absent key keeps *out (the default). */
static int get_dim(const Cfg *c, const char *k, int *out) {
  const cJSON *v = key(c, k);
  if (!v) return 0;
  char exp[64];
  snprintf(exp, sizeof exp, "an integer in [1, %d]", NEOX_MAX_DIM);
  if (!cJSON_IsNumber(v)) return bad(c, k, v, exp);
  double d = v->valuedouble;
  if (!isfinite(d) || d != floor(d) || d < 1 || d > NEOX_MAX_DIM)
    return bad(c, k, v, exp);
  *out = (int)d;
  return 0;
}

/* A finite number in (lo, hi]; `exp` says so in words for the message. */
static int get_num(const Cfg *c, const char *k, const cJSON *v, double lo,
                   double hi, const char *exp, double *out) {
  if (!cJSON_IsNumber(v)) return bad(c, k, v, exp);
  double d = v->valuedouble;
  if (!isfinite(d) || !(d > lo) || !(d <= hi)) return bad(c, k, v, exp);
  *out = d;
  return 0;
}

static int get_bool(const Cfg *c, const char *k, bool *out) {
  const cJSON *v = key(c, k);
  if (!v) return 0;
  if (!cJSON_IsBool(v)) return bad(c, k, v, "true or false");
  *out = cJSON_IsTrue(v);
  return 0;
}

/* "rope_scaling" (and the type inside "rope_parameters") may only describe
 * plain RoPE. */
static int check_rope_type(const Cfg *c, const char *k, const cJSON *obj) {
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "rope_type");
  if (!t) t = cJSON_GetObjectItemCaseSensitive(obj, "type");
  if (!t) return 0;
  if (cJSON_IsString(t) && strcmp(t->valuestring, "default") == 0) return 0;
  char got[96];
  return err_set(c->e,
                 "%s: key \"%s\": expected plain RoPE (null or type \"default\"),"
                 " got type %s; RoPE scaling is not supported",
                 c->fname, k, neox_json_describe(t, got, sizeof got));
}

static int check_dup_keys(const Cfg *c) {
  char k[256];
  for (const cJSON *a = c->root->child; a; a = a->next)
    for (const cJSON *b = a->next; b; b = b->next)
      if (strcmp(a->string, b->string) == 0)
        return err_set(c->e, "%s: key \"%s\" appears twice", c->fname,
                       neox_printable(a->string, k, sizeof k));
  return 0;
}

/* Sums into *acc with a 63-bit overflow check. */
static bool add_mul(int64_t *acc, int64_t a, int64_t b) {
  int64_t p;
  if (__builtin_mul_overflow(a, b, &p)) return false;
  return !__builtin_add_overflow(*acc, p, acc);
}

static int parse_root(const Cfg *c, NeoxConfig *cfg) {
  const char *f = c->fname;
  if (!cJSON_IsObject(c->root)) {
    char got[96];
    return err_set(c->e, "%s: expected a JSON object at the top level, got %s",
                   f, neox_json_describe(c->root, got, sizeof got));
  }
  if (check_dup_keys(c)) return -1;

  /* Which model this is. */
  const cJSON *v = key(c, "model_type");
  if (!cJSON_IsString(v) || strcmp(v->valuestring, "gpt_neox") != 0)
    return bad(c, "model_type", v, "\"gpt_neox\" (only GPT-NeoX models are supported)");
  v = key(c, "architectures");
  if (v && !cJSON_IsNull(v)) {
    bool ok = cJSON_IsArray(v), causal = false;
    for (const cJSON *a = ok ? v->child : NULL; a; a = a->next) {
      if (!cJSON_IsString(a)) ok = false;
      else if (strcmp(a->valuestring, "GPTNeoXForCausalLM") == 0) causal = true;
    }
    if (!ok || !causal)
      return bad(c, "architectures", ok ? v->child : v,
                 "a list containing \"GPTNeoXForCausalLM\"");
  }

  /* Dims. */
  if (get_dim(c, "hidden_size", &cfg->hidden_size) ||
      get_dim(c, "num_attention_heads", &cfg->num_attention_heads) ||
      get_dim(c, "num_hidden_layers", &cfg->num_hidden_layers) ||
      get_dim(c, "intermediate_size", &cfg->intermediate_size) ||
      get_dim(c, "vocab_size", &cfg->vocab_size) ||
      get_dim(c, "max_position_embeddings", &cfg->max_position_embeddings))
    return -1;

  /* Rotary embedding: old key first, then its newer name, then the
   * rope_parameters object of newer transformers. */
  const cJSON *rp = key(c, "rope_parameters");
  if (rp && !cJSON_IsNull(rp)) {
    if (!cJSON_IsObject(rp)) return bad(c, "rope_parameters", rp, "an object or null");
    if (check_rope_type(c, "rope_parameters", rp)) return -1;
  } else {
    rp = NULL;
  }
  const char *pct_key = "rotary_pct";
  v = key(c, "rotary_pct");
  if (!v && (v = key(c, "partial_rotary_factor"))) pct_key = "partial_rotary_factor";
  if (!v && rp && (v = cJSON_GetObjectItemCaseSensitive(rp, "partial_rotary_factor")))
    pct_key = "rope_parameters.partial_rotary_factor";
  if (v && get_num(c, pct_key, v, 0, 1, "a number in (0, 1]", &cfg->rotary_pct))
    return -1;
  const char *base_key = "rotary_emb_base";
  v = key(c, "rotary_emb_base");
  if (!v && (v = key(c, "rope_theta"))) base_key = "rope_theta";
  if (!v && rp && (v = cJSON_GetObjectItemCaseSensitive(rp, "rope_theta")))
    base_key = "rope_parameters.rope_theta";
  if (v && get_num(c, base_key, v, 0, 1e30, "a positive number", &cfg->rotary_emb_base))
    return -1;
  v = key(c, "rope_scaling");
  if (v && !cJSON_IsNull(v)) {
    if (!cJSON_IsObject(v))
      return bad(c, "rope_scaling", v, "null (RoPE scaling is not supported)");
    if (check_rope_type(c, "rope_scaling", v)) return -1;
    if (!cJSON_GetObjectItemCaseSensitive(v, "rope_type") &&
        !cJSON_GetObjectItemCaseSensitive(v, "type"))
      return bad(c, "rope_scaling", v, "null (RoPE scaling is not supported)");
  }

  /* Norms, residual, embeddings, biases. */
  v = key(c, "layer_norm_eps");
  if (v && get_num(c, "layer_norm_eps", v, 0, 1, "a number in (0, 1]", &cfg->layer_norm_eps))
    return -1;
  if (get_bool(c, "use_parallel_residual", &cfg->use_parallel_residual) ||
      get_bool(c, "tie_word_embeddings", &cfg->tie_word_embeddings) ||
      get_bool(c, "attention_bias", &cfg->attention_bias))
    return -1;

  v = key(c, "hidden_act");
  if (v && !(cJSON_IsString(v) && strcmp(v->valuestring, "gelu") == 0))
    return bad(c, "hidden_act", v,
               "\"gelu\" (exact erf GELU, the only activation supported;"
               " gelu_new, gelu_fast, gelu_pytorch_tanh and other approximations are not)");

  const char *dt_key = "torch_dtype";
  v = key(c, "torch_dtype");
  if (!v && (v = key(c, "dtype"))) dt_key = "dtype";
  if (v && !cJSON_IsNull(v)) {
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= sizeof cfg->torch_dtype)
      return bad(c, dt_key, v, "a dtype name such as \"float16\"");
    strcpy(cfg->torch_dtype, v->valuestring);
  }

  /* Derived values and the checks that relate keys. */
  int D = cfg->hidden_size, H = cfg->num_attention_heads;
  if (D % H != 0)
    return err_set(c->e,
                   "%s: key \"hidden_size\": expected a multiple of num_attention_heads %d, got %d",
                   f, H, D);
  cfg->head_dim = D / H;
  cfg->rotary_ndims = (int)(cfg->head_dim * cfg->rotary_pct); /* as Python's int() */
  if (cfg->rotary_ndims < 2 || cfg->rotary_ndims % 2 != 0)
    return err_set(c->e,
                   "%s: key \"%s\": head_dim %d x %s %g gives rotary_ndims %d; expected an even number >= 2",
                   f, pct_key, cfg->head_dim, pct_key, cfg->rotary_pct, cfg->rotary_ndims);

  int64_t L = cfg->num_hidden_layers, F = cfg->intermediate_size, V = cfg->vocab_size;
  int64_t per_layer = 0, total = 0;
  bool ok = add_mul(&per_layer, 4 * (int64_t)D, 1) &&            /* 2 layer norms */
            add_mul(&per_layer, 3 * (int64_t)D, D) &&           /* qkv */
            add_mul(&per_layer, D, D) &&                        /* dense */
            (!cfg->attention_bias || add_mul(&per_layer, 4 * (int64_t)D, 1)) &&
            add_mul(&per_layer, 2 * F, D) &&                    /* mlp */
            add_mul(&per_layer, F + D, 1) &&
            add_mul(&total, L, per_layer) &&
            add_mul(&total, V, D) &&                            /* embed_in */
            (cfg->tie_word_embeddings || add_mul(&total, V, D)) && /* embed_out */
            add_mul(&total, 2 * (int64_t)D, 1) &&               /* final norm */
            total <= INT64_MAX / 4;
  if (!ok)
    return err_set(c->e,
                   "%s: the sizes (hidden_size %d, intermediate_size %d, num_hidden_layers %d,"
                   " vocab_size %d) give more parameters than fit in 63 bits of bytes",
                   f, D, cfg->intermediate_size, cfg->num_hidden_layers, cfg->vocab_size);
  cfg->n_params = total;
  return 0;
}

int neox_config_parse(const char *json, size_t len, const char *fname,
                      NeoxConfig *cfg, Err *e) {
  memset(cfg, 0, sizeof *cfg);
  cfg->hidden_size = 6144;
  cfg->num_attention_heads = 64;
  cfg->num_hidden_layers = 44;
  cfg->intermediate_size = 24576;
  cfg->vocab_size = 50432;
  cfg->max_position_embeddings = 2048;
  cfg->rotary_pct = 0.25;
  cfg->rotary_emb_base = 10000;
  cfg->layer_norm_eps = 1e-5;
  cfg->use_parallel_residual = true;
  cfg->tie_word_embeddings = false;
  cfg->attention_bias = true;
  strcpy(cfg->hidden_act, "gelu");

  cJSON *root = neox_json_parse(json, len, fname, 0, e);
  if (!root) return -1;
  Cfg c = {root, fname, e};
  int rc = parse_root(&c, cfg);
  cJSON_Delete(root);
  return rc;
}

int neox_config_load(const char *dir, NeoxConfig *cfg, Err *e) {
  struct stat st;
  if (stat(dir, &st) != 0)
    return err_set(e, "%s: cannot open model folder: %s", dir, strerror(errno));
  if (!S_ISDIR(st.st_mode))
    return err_set(e, "%s: not a directory (expected a model folder)", dir);

  size_t dl = strlen(dir);
  while (dl > 1 && dir[dl - 1] == '/') dl--;
  char path[4096];
  if (snprintf(path, sizeof path, "%.*s/config.json", (int)dl, dir) >= (int)sizeof path)
    return err_set(e, "%s: path too long", dir);

  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return err_set(e, "%s: cannot open: %s", path, strerror(errno));
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return err_set(e, "%s: cannot read: not a regular file", path);
  }
  if ((uint64_t)st.st_size > CFG_MAX_FILE) {
    close(fd);
    return err_set(e, "%s: file is %lld bytes; a config.json is at most %u bytes",
                   path, (long long)st.st_size, CFG_MAX_FILE);
  }
  size_t n = (size_t)st.st_size, got = 0;
  char *buf = malloc(n + 1);
  if (!buf) {
    close(fd);
    return err_set(e, "%s: out of memory", path);
  }
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      int er = r < 0 ? errno : 0;
      free(buf);
      close(fd);
      return err_set(e, "%s: cannot read: %s", path, er ? strerror(er) : "file shrank while reading");
    }
    got += (size_t)r;
  }
  close(fd);
  int rc = neox_config_parse(buf, n, path, cfg, e);
  free(buf);
  return rc;
}
