/* tokenizer_import.c — reads a Hugging Face tokenizer.json and writes the
 * ready-made tables of runtime/tok_format.h (docs/tokenizer.md).
 *
 * Owns: the refusal of every tokenizer the runtime cannot reproduce exactly
 * (anything but a byte-level BPE with an NFC or no normalizer), the
 * byte-level alphabet (GPT-2's bytes_to_unicode), and Hugging Face's rules
 * for giving ids to added tokens and for decoding a token to bytes.
 *
 * Invariants of a written blob: every id below n_vocab either has decoded
 * bytes or is a hole; the vocab and merge tables are open-addressing hash
 * tables at most half full; every merge names ids below n_vocab; added-token
 * patterns are non-empty and bucketed by (group, first byte), longest first.
 * Messages are one line and start with the file name. */
#include "tokenizer_import.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>
#include <xxhash.h>

#include "config.h" /* neox_json_parse, neox_json_describe */
#include "tok_format.h"
#include "tok_nfc.h"

#define TOK_MAX_FILE (1u << 30)

/* ------------------------------------------------------ byte-level map --- */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves,
 * the other 68 bytes become U+0100.. in byte order. */
static void byte_alphabet(uint32_t cp_of[256], int16_t byte_of[324]) {
  for (int i = 0; i < 324; i++) byte_of[i] = -1;
  uint32_t next = 256;
  for (int b = 0; b < 256; b++) {
    bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    cp_of[b] = keep ? (uint32_t)b : next++;
    byte_of[cp_of[b]] = (int16_t)b;
  }
}

/* Length of the valid UTF-8 prefix of s[0..n). */
static size_t utf8_valid(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &cp);
    if (k <= 0 || cp < 0) return i;
    i += (size_t)k;
  }
  return n;
}

/* Decoded bytes of a token string, as HF's ByteLevel decoder makes them:
 * the bytes the characters stand for if every one is in the alphabet,
 * otherwise the string's own UTF-8.  Returns true for the first case. */
static bool token_bytes(const int16_t byte_of[324], const char *s, size_t n,
                        uint8_t *out, size_t *out_len) {
  size_t i = 0, o = 0;
  while (i < n) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate((const uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
    if (k <= 0 || cp < 0 || cp >= 324 || byte_of[cp] < 0) {
      memcpy(out, s, n);
      *out_len = n;
      return false;
    }
    out[o++] = (uint8_t)byte_of[cp];
    i += (size_t)k;
  }
  *out_len = o;
  return true;
}

/* ------------------------------------------------------ string -> id map --- */

/* Importer-side map from token strings (as written in the JSON) to ids. */
typedef struct {
  const char **key;
  size_t *klen;
  int32_t *val;
  size_t cap, n;
} StrMap;

static bool smap_init(StrMap *m, size_t n) {
  m->cap = 16;
  while (m->cap < 2 * n + 16) m->cap *= 2;
  m->n = 0;
  m->key = calloc(m->cap, sizeof *m->key);
  m->klen = calloc(m->cap, sizeof *m->klen);
  m->val = calloc(m->cap, sizeof *m->val);
  return m->key && m->klen && m->val;
}

static void smap_free(StrMap *m) {
  free(m->key);
  free(m->klen);
  free(m->val);
}

static size_t smap_slot(const StrMap *m, const char *k, size_t n) {
  size_t i = (size_t)XXH3_64bits(k, n) & (m->cap - 1);
  while (m->key[i] && !(m->klen[i] == n && memcmp(m->key[i], k, n) == 0))
    i = (i + 1) & (m->cap - 1);
  return i;
}

static int32_t smap_get(const StrMap *m, const char *k, size_t n) {
  size_t i = smap_slot(m, k, n);
  return m->key[i] ? m->val[i] : -1;
}

/* Returns false if the key was already there. */
static bool smap_put(StrMap *m, const char *k, size_t n, int32_t v) {
  size_t i = smap_slot(m, k, n);
  if (m->key[i]) return false;
  m->key[i] = k, m->klen[i] = n, m->val[i] = v;
  m->n++;
  return true;
}

/* ---------------------------------------------------------- validation --- */

typedef struct {
  const char *path;
  Err *e;
} Ctx;

static const char *describe(const cJSON *v, char *buf, size_t n) {
  return neox_json_describe(v, buf, n);
}

static int bad(Ctx *c, const char *what, const cJSON *v, const char *expected) {
  char got[128];
  return err_set(c->e, "%s: %s: expected %s, got %s", c->path, what, expected,
                 describe(v, got, sizeof got));
}

/* Optional boolean member (absent or null -> dflt). */
static int get_bool(Ctx *c, const cJSON *obj, const char *key, const char *where,
                    bool dflt, bool *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!v || cJSON_IsNull(v)) {
    *out = dflt;
    return 0;
  }
  if (!cJSON_IsBool(v)) {
    char what[160];
    snprintf(what, sizeof what, "%s.%s", where, key);
    return bad(c, what, v, "true or false");
  }
  *out = cJSON_IsTrue(v);
  return 0;
}

static const char *type_of(const cJSON *obj) {
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "type");
  return cJSON_IsString(t) ? t->valuestring : NULL;
}

/* normalizer: null, NFC, or a Sequence of NFCs. */
static int check_normalizer(Ctx *c, const cJSON *n, uint32_t *flags) {
  if (!n || cJSON_IsNull(n)) return 0;
  const char *t = cJSON_IsObject(n) ? type_of(n) : NULL;
  if (t && strcmp(t, "NFC") == 0) {
    *flags |= TOK_F_NFC;
    return 0;
  }
  if (t && strcmp(t, "Sequence") == 0) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
    if (!cJSON_IsArray(list)) return bad(c, "normalizer.normalizers", list, "an array");
    const cJSON *it;
    cJSON_ArrayForEach(it, list) if (check_normalizer(c, it, flags)) return -1;
    return 0;
  }
  char got[128];
  return err_set(c->e, "%s: normalizer %s is not supported (only NFC or none; "
                 "pythiac reproduces Hugging Face byte-level BPE tokenizers exactly)",
                 c->path, t ? describe(cJSON_GetObjectItemCaseSensitive(n, "type"), got, sizeof got)
                            : describe(n, got, sizeof got));
}

/* pre_tokenizer: ByteLevel (or a Sequence holding exactly one ByteLevel). */
static int check_pretok(Ctx *c, const cJSON *p, uint32_t *flags) {
  const char *t = cJSON_IsObject(p) ? type_of(p) : NULL;
  if (t && strcmp(t, "Sequence") == 0) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
    if (cJSON_IsArray(list) && cJSON_GetArraySize(list) == 1)
      return check_pretok(c, cJSON_GetArrayItem(list, 0), flags);
  }
  if (!t || strcmp(t, "ByteLevel") != 0) {
    char got[128];
    return err_set(c->e, "%s: pre_tokenizer: expected ByteLevel (a byte-level BPE), got %s",
                   c->path, describe(t ? cJSON_GetObjectItemCaseSensitive(p, "type") : p, got, sizeof got));
  }
  bool prefix, regex;
  if (get_bool(c, p, "add_prefix_space", "pre_tokenizer", false, &prefix) ||
      get_bool(c, p, "use_regex", "pre_tokenizer", true, &regex))
    return -1;
  if (prefix) *flags |= TOK_F_PREFIX_SPACE;
  if (regex) *flags |= TOK_F_SPLIT;
  return 0;
}

static int check_decoder(Ctx *c, const cJSON *d) {
  const char *t = cJSON_IsObject(d) ? type_of(d) : NULL;
  if (t && strcmp(t, "Sequence") == 0) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(d, "decoders");
    if (cJSON_IsArray(list) && cJSON_GetArraySize(list) == 1)
      return check_decoder(c, cJSON_GetArrayItem(list, 0));
  }
  if (t && strcmp(t, "ByteLevel") == 0) return 0;
  char got[128];
  return err_set(c->e, "%s: decoder: expected ByteLevel (a byte-level BPE), got %s", c->path,
                 describe(t ? cJSON_GetObjectItemCaseSensitive(d, "type") : d, got, sizeof got));
}

/* A JSON string member that must be null, absent or "". */
static int check_unset(Ctx *c, const cJSON *model, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, key);
  if (!v || cJSON_IsNull(v) || (cJSON_IsString(v) && !v->valuestring[0])) return 0;
  char what[64];
  snprintf(what, sizeof what, "model.%s", key);
  return bad(c, what, v, "null (not supported)");
}

/* ----------------------------------------------------------- the blob --- */

typedef struct {
  uint8_t *p;
  size_t n, cap;
} Buf;

static bool buf_put(Buf *b, const void *s, size_t n) {
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + n) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) return false;
    b->p = p, b->cap = cap;
  }
  if (n) memcpy(b->p + b->n, s, n);
  b->n += n;
  return true;
}

typedef struct {
  int32_t id;
  const char *content;   /* as in the JSON */
  size_t len;
  bool special, normalized;
  uint8_t *pat;          /* pattern matched in text (malloc'd) */
  size_t pat_len;
  uint32_t order;
} Added;

static int cmp_added(const void *a, const void *b) {
  const Added *x = a, *y = b;
  int gx = x->normalized, gy = y->normalized;
  if (gx != gy) return gx - gy;
  if (x->pat[0] != y->pat[0]) return (int)x->pat[0] - (int)y->pat[0];
  if (x->pat_len != y->pat_len) return x->pat_len > y->pat_len ? -1 : 1;
  int c = memcmp(x->pat, y->pat, x->pat_len); /* equal patterns side by side */
  if (c) return c;
  return x->order < y->order ? -1 : x->order > y->order;
}

static uint64_t align_up(uint64_t x) { return (x + TOK_ALIGN - 1) & ~(uint64_t)(TOK_ALIGN - 1); }

/* ------------------------------------------------------------- import --- */

static char *read_file(Ctx *c, size_t *len) {
  FILE *f = fopen(c->path, "rb");
  if (!f) {
    err_set(c->e, "%s: cannot open: %s", c->path, strerror(errno));
    return NULL;
  }
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    err_set(c->e, "%s: not a regular file", c->path);
    fclose(f);
    return NULL;
  }
  if ((uint64_t)st.st_size > TOK_MAX_FILE) {
    err_set(c->e, "%s: %lld bytes is too large for a tokenizer.json", c->path, (long long)st.st_size);
    fclose(f);
    return NULL;
  }
  char *s = malloc((size_t)st.st_size + 1);
  size_t n = s ? fread(s, 1, (size_t)st.st_size, f) : 0;
  if (!s || n != (size_t)st.st_size) {
    err_set(c->e, "%s: cannot read: %s", c->path, s ? strerror(errno) : "out of memory");
    free(s);
    fclose(f);
    return NULL;
  }
  fclose(f);
  s[n] = 0;
  *len = n;
  return s;
}

/* Keeps `s` to show in a message: at most 40 bytes, one printable line. */
static const char *shown(const char *s, char *buf, size_t n) {
  return neox_printable(s, buf, n < 48 ? n : 48);
}

int tok_import_file(const char *path, uint8_t **blob_out, size_t *size_out, Err *e) {
  Ctx c = {path, e};
  *blob_out = NULL;
  *size_out = 0;
  size_t text_len = 0;
  char *text = read_file(&c, &text_len);
  if (!text) return -1;
  size_t bad_utf8 = utf8_valid((const uint8_t *)text, text_len);
  if (bad_utf8 < text_len) {
    free(text);
    return err_set(e, "%s: not valid UTF-8 at byte %zu", path, bad_utf8);
  }
  cJSON *root = neox_json_parse(text, text_len, path, 0, e);
  if (!root) {
    free(text);
    return -1;
  }

  int rc = -1;
  uint32_t cp_of[256];
  int16_t byte_of[324];
  byte_alphabet(cp_of, byte_of);
  StrMap vocab = {0}, added_map = {0};
  Added *added = NULL;
  size_t n_added = 0, n_all = 0;
  uint8_t *tmp = NULL;
  TokEnt *tokens = NULL;
  TokVSlot *vslots = NULL;
  TokMSlot *mslots = NULL;
  const char **id_str = NULL; /* model token string of each id */
  const char **owner = NULL;  /* string decoded for each id */
  Buf pool = {0};
  TokNfc nfc = {0};
  uint8_t *blob = NULL;
  char s1[64], s2[64], s3[64];

  if (!cJSON_IsObject(root)) {
    bad(&c, "top level", root, "an object");
    goto out;
  }
  const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "version");
  if (ver && !(cJSON_IsString(ver) && strcmp(ver->valuestring, "1.0") == 0)) {
    bad(&c, "version", ver, "\"1.0\"");
    goto out;
  }

  /* --- pipeline parts --- */
  uint32_t flags = 0;
  const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
  if (!cJSON_IsObject(model)) {
    bad(&c, "model", model, "an object");
    goto out;
  }
  const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
  if (mtype && !(cJSON_IsString(mtype) && strcmp(mtype->valuestring, "BPE") == 0)) {
    bad(&c, "model.type", mtype, "\"BPE\" (pythiac supports byte-level BPE tokenizers only)");
    goto out;
  }
  if (check_normalizer(&c, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), &flags) ||
      check_pretok(&c, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), &flags) ||
      check_decoder(&c, cJSON_GetObjectItemCaseSensitive(root, "decoder")))
    goto out;
  if (check_unset(&c, model, "continuing_subword_prefix") ||
      check_unset(&c, model, "end_of_word_suffix"))
    goto out;
  const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
  if (dropout && !cJSON_IsNull(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0)) {
    bad(&c, "model.dropout", dropout, "null (BPE dropout is random; not supported)");
    goto out;
  }
  bool fuse_unk, byte_fallback, ignore_merges;
  if (get_bool(&c, model, "fuse_unk", "model", false, &fuse_unk) ||
      get_bool(&c, model, "byte_fallback", "model", false, &byte_fallback) ||
      get_bool(&c, model, "ignore_merges", "model", false, &ignore_merges))
    goto out;
  if (byte_fallback) {
    err_set(e, "%s: model.byte_fallback: true is not supported (a byte-level BPE has no <0xNN> tokens)", path);
    goto out;
  }
  if (fuse_unk) flags |= TOK_F_FUSE_UNK;
  if (ignore_merges) flags |= TOK_F_IGNORE_MERGES;

  /* --- vocab --- */
  const cJSON *jvocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
  if (!jvocab) {
    err_set(e, "%s: model.vocab is missing", path);
    goto out;
  }
  if (!cJSON_IsObject(jvocab)) {
    bad(&c, "model.vocab", jvocab, "an object mapping token strings to ids");
    goto out;
  }
  size_t n_model = (size_t)cJSON_GetArraySize(jvocab);
  if (n_model == 0) {
    err_set(e, "%s: model.vocab is empty", path);
    goto out;
  }
  if (n_model >= TOK_MAX_VOCAB) {
    err_set(e, "%s: model.vocab has %zu tokens, more than the %u supported", path, n_model, TOK_MAX_VOCAB - 1);
    goto out;
  }
  if (!smap_init(&vocab, n_model)) goto oom;
  int32_t max_id = -1;
  const cJSON *it;
  cJSON_ArrayForEach(it, jvocab) {
    double d = cJSON_IsNumber(it) ? it->valuedouble : -1;
    if (!cJSON_IsNumber(it) || d < 0 || d >= TOK_MAX_VOCAB || d != (double)(int32_t)d) {
      char what[96];
      snprintf(what, sizeof what, "model.vocab[\"%s\"]", shown(it->string, s1, sizeof s1));
      bad(&c, what, it, "an integer id in [0, 16777215]");
      goto out;
    }
    if ((int32_t)d > max_id) max_id = (int32_t)d;
  }
  id_str = calloc((size_t)max_id + 1, sizeof *id_str);
  if (!id_str) goto oom;
  cJSON_ArrayForEach(it, jvocab) {
    const char *k = it->string;
    int32_t id = (int32_t)it->valuedouble;
    if (id_str[id]) {
      err_set(e, "%s: model.vocab: id %d is given to both \"%s\" and \"%s\"", path, id,
              shown(id_str[id], s1, sizeof s1), shown(k, s2, sizeof s2));
      goto out;
    }
    if (!smap_put(&vocab, k, strlen(k), id)) {
      err_set(e, "%s: model.vocab: token \"%s\" appears twice", path, shown(k, s1, sizeof s1));
      goto out;
    }
    id_str[id] = k;
  }

  /* unk_token must name a vocab entry if it is set. */
  int32_t unk_id = -1;
  const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
  if (unk && !cJSON_IsNull(unk)) {
    if (!cJSON_IsString(unk)) {
      bad(&c, "model.unk_token", unk, "a string or null");
      goto out;
    }
    unk_id = smap_get(&vocab, unk->valuestring, strlen(unk->valuestring));
    if (unk_id < 0) {
      err_set(e, "%s: model.unk_token \"%s\" is not in model.vocab", path,
              shown(unk->valuestring, s1, sizeof s1));
      goto out;
    }
  }

  /* --- added tokens, with Hugging Face's id rule (AddedVocabulary::add_tokens):
   * a content already known keeps its id, a new one gets the next free id
   * after the model vocab (the JSON "id" is only a check there: HF warns). --- */
  const cJSON *jadded = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
  if (jadded && !cJSON_IsNull(jadded) && !cJSON_IsArray(jadded)) {
    bad(&c, "added_tokens", jadded, "an array");
    goto out;
  }
  size_t n_jadded = jadded && cJSON_IsArray(jadded) ? (size_t)cJSON_GetArraySize(jadded) : 0;
  added = calloc(n_jadded + 1, sizeof *added);
  if (!added || !smap_init(&added_map, n_jadded)) goto oom;
  int32_t max_added = -1;
  size_t ai = 0;
  if (n_jadded) cJSON_ArrayForEach(it, jadded) {
    char where[48];
    snprintf(where, sizeof where, "added_tokens[%zu]", ai);
    ai++;
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
    if (!cJSON_IsObject(it) || !cJSON_IsString(content)) {
      char what[64];
      snprintf(what, sizeof what, "%s.content", where);
      bad(&c, what, content, "a string");
      goto out;
    }
    bool special, normalized, single_word, lstrip, rstrip;
    if (get_bool(&c, it, "special", where, false, &special) ||
        get_bool(&c, it, "normalized", where, !special, &normalized) ||
        get_bool(&c, it, "single_word", where, false, &single_word) ||
        get_bool(&c, it, "lstrip", where, false, &lstrip) ||
        get_bool(&c, it, "rstrip", where, false, &rstrip))
      goto out;
    if (single_word || lstrip || rstrip) {
      err_set(e, "%s: %s (\"%s\"): single_word, lstrip and rstrip are not supported", path,
              where, shown(content->valuestring, s1, sizeof s1));
      goto out;
    }
    const char *s = content->valuestring;
    size_t len = strlen(s);
    if (!len) continue; /* HF ignores empty added tokens */
    /* The same token (content and flags) twice: HF ignores the repeat. */
    bool dup = false;
    for (size_t j = 0; j < n_added; j++)
      if (added[j].len == len && memcmp(added[j].content, s, len) == 0 &&
          added[j].special == special && added[j].normalized == normalized)
        dup = true;
    if (dup) continue;
    int32_t id = smap_get(&added_map, s, len);
    if (id < 0) id = smap_get(&vocab, s, len);
    if (id < 0) {
      if (max_added < 0) id = (int32_t)n_model;
      else id = (max_added >= (int32_t)n_model) ? max_added + 1 : (int32_t)n_model;
    }
    if (id >= (int32_t)TOK_MAX_VOCAB) {
      err_set(e, "%s: %s: id %d is too large", path, where, id);
      goto out;
    }
    if (smap_get(&added_map, s, len) < 0) smap_put(&added_map, s, len, id);
    if (id > max_added) max_added = id;
    Added *a = &added[n_added];
    a->id = id, a->content = s, a->len = len, a->special = special;
    a->normalized = normalized, a->order = (uint32_t)n_added;
    n_added++;
  }

  /* Patterns: NFC'd content for tokens matched in normalized text (with
   * HF's NFC, tok_nfc.h).  HF also decodes such a token to its NFC'd
   * content, so the pattern doubles as the decoded string. */
  for (size_t j = 0; j < n_added; j++) {
    Added *a = &added[j];
    size_t n = a->len;
    int rc = (a->normalized && (flags & TOK_F_NFC)) ? tok_nfc((const uint8_t *)a->content, a->len, &nfc, &n) : 0;
    if (rc < 0) goto oom;
    a->pat = malloc(n + 1);
    if (!a->pat) goto oom;
    memcpy(a->pat, rc ? nfc.out : (const uint8_t *)a->content, n);
    a->pat[n] = 0;
    a->pat_len = n;
  }
  uint32_t n_vocab = (uint32_t)((max_id > max_added ? max_id : max_added) + 1);
  /* Decoding looks an id up among the added tokens first; for an id given
   * twice the last registration wins (HF's added_tokens_map_r). */
  owner = calloc(n_vocab, sizeof *owner);
  if (!owner) goto oom;
  for (int32_t id = 0; id <= max_id; id++) owner[id] = id_str[id];
  for (size_t j = 0; j < n_added; j++) owner[added[j].id] = (const char *)added[j].pat;

  /* Identical patterns in one group: the first one wins (Aho-Corasick
   * reports the lowest pattern on a tie). */
  qsort(added, n_added, sizeof *added, cmp_added);
  n_all = n_added;
  {
    /* Dropped entries go to the tail: owner[] may still point at them. */
    size_t w = 0;
    for (size_t j = 0; j < n_added; j++) {
      if (w && added[w - 1].normalized == added[j].normalized && added[w - 1].pat_len == added[j].pat_len &&
          memcmp(added[w - 1].pat, added[j].pat, added[j].pat_len) == 0)
        continue;
      Added tmp_a = added[w];
      added[w++] = added[j];
      added[j] = tmp_a;
    }
    n_added = w;
  }

  /* --- decoded bytes of every id (added content wins, as in HF decode) --- */
  tokens = malloc(n_vocab * sizeof *tokens);
  tmp = malloc(text_len + 16);
  if (!tokens || !tmp) goto oom;
  for (uint32_t id = 0; id < n_vocab; id++) {
    const char *s = owner[id];
    if (!s) {
      tokens[id].off = 0, tokens[id].len = TOK_NO_TOKEN;
      continue;
    }
    size_t n;
    token_bytes(byte_of, s, strlen(s), tmp, &n);
    tokens[id].off = (uint32_t)pool.n;
    tokens[id].len = (uint32_t)n;
    if (!buf_put(&pool, tmp, n)) goto oom;
  }

  /* --- vocab hash: raw bytes of byte-level model tokens -> id --- */
  uint32_t vocab_cap = 16;
  while (vocab_cap < 2 * n_model + 16) vocab_cap *= 2;
  uint32_t vocab_probe = 0, merge_probe = 0;
  vslots = calloc(vocab_cap, sizeof *vslots);
  if (!vslots) goto oom;
  for (uint32_t id = 0; id <= (uint32_t)max_id; id++) {
    const char *s = id_str[id];
    size_t n;
    if (!s || !token_bytes(byte_of, s, strlen(s), tmp, &n)) continue;
    uint64_t h = XXH3_64bits(tmp, n);
    uint32_t i = (uint32_t)h & (vocab_cap - 1), probe = 1;
    while (vslots[i].id1) i = (i + 1) & (vocab_cap - 1), probe++;
    if (probe > vocab_probe) vocab_probe = probe;
    vslots[i].tag = (uint32_t)(h >> 32);
    vslots[i].id1 = id + 1;
  }

  /* --- merges: (left, right) -> (rank, merged); a repeated pair keeps its
   * last rank, as HF's HashMap collect does --- */
  const cJSON *jmerges = cJSON_GetObjectItemCaseSensitive(model, "merges");
  if (!jmerges) {
    err_set(e, "%s: model.merges is missing", path);
    goto out;
  }
  if (!cJSON_IsArray(jmerges)) {
    bad(&c, "model.merges", jmerges, "an array");
    goto out;
  }
  size_t n_merges = (size_t)cJSON_GetArraySize(jmerges);
  uint32_t merge_bits = 4;
  while ((1ull << merge_bits) < 2 * (uint64_t)n_merges + 16) merge_bits++;
  if (merge_bits > 30) {
    err_set(e, "%s: model.merges has %zu entries, too many", path, n_merges);
    goto out;
  }
  uint32_t merge_cap = 1u << merge_bits;
  mslots = malloc((size_t)merge_cap * sizeof *mslots);
  if (!mslots) goto oom;
  for (uint32_t i = 0; i < merge_cap; i++) mslots[i].key = TOK_MERGE_EMPTY, mslots[i].rank = mslots[i].id = 0;
  size_t rank = 0;
  cJSON_ArrayForEach(it, jmerges) {
    const char *a, *b;
    size_t la, lb;
    char *sp = NULL;
    if (cJSON_IsString(it)) {
      /* "a b": exactly one space */
      a = it->valuestring;
      sp = strchr(a, ' ');
      if (!sp || strchr(sp + 1, ' ')) {
        char what[48];
        snprintf(what, sizeof what, "model.merges[%zu]", rank);
        bad(&c, what, it, "two tokens separated by one space");
        goto out;
      }
      la = (size_t)(sp - a), b = sp + 1, lb = strlen(b);
    } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
               cJSON_IsString(cJSON_GetArrayItem(it, 0)) && cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
      a = cJSON_GetArrayItem(it, 0)->valuestring, la = strlen(a);
      b = cJSON_GetArrayItem(it, 1)->valuestring, lb = strlen(b);
    } else {
      char what[48];
      snprintf(what, sizeof what, "model.merges[%zu]", rank);
      bad(&c, what, it, "\"left right\" or [\"left\", \"right\"]");
      goto out;
    }
    int32_t ia = smap_get(&vocab, a, la), ib = smap_get(&vocab, b, lb);
    if (ia < 0 || ib < 0) {
      memcpy(tmp, ia < 0 ? a : b, ia < 0 ? la : lb);
      tmp[ia < 0 ? la : lb] = 0;
      err_set(e, "%s: model.merges[%zu]: unknown token \"%s\" (not in model.vocab)", path, rank,
              shown((char *)tmp, s1, sizeof s1));
      goto out;
    }
    memcpy(tmp, a, la);
    memcpy(tmp + la, b, lb);
    tmp[la + lb] = 0;
    int32_t im = smap_get(&vocab, (char *)tmp, la + lb);
    if (im < 0) {
      err_set(e, "%s: model.merges[%zu]: merged token \"%s\" is not in model.vocab", path, rank,
              shown((char *)tmp, s1, sizeof s1));
      goto out;
    }
    uint64_t key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
    uint32_t i = (uint32_t)((key * TOK_MERGE_MUL) >> (64 - merge_bits)), probe = 1;
    while (mslots[i].key != TOK_MERGE_EMPTY && mslots[i].key != key) i = (i + 1) & (merge_cap - 1), probe++;
    if (probe > merge_probe) merge_probe = probe;
    mslots[i].key = key, mslots[i].rank = (uint32_t)rank, mslots[i].id = (uint32_t)im;
    rank++;
  }
  (void)s3;

  /* --- added-token patterns in the pool, bucket index --- */
  TokAdded *tadded = calloc(n_added + 1, sizeof *tadded);
  uint32_t aidx[2][257];
  if (!tadded) goto oom;
  for (size_t j = 0; j < n_added; j++) {
    tadded[j].id = (uint32_t)added[j].id;
    tadded[j].off = (uint32_t)pool.n;
    tadded[j].len = (uint32_t)added[j].pat_len;
    tadded[j].flags = (added[j].normalized ? TOK_A_NORMALIZED : 0) | (added[j].special ? TOK_A_SPECIAL : 0);
    if (!buf_put(&pool, added[j].pat, added[j].pat_len)) {
      free(tadded);
      goto oom;
    }
  }
  for (int g = 0; g < 2; g++)
    for (int b = 0; b <= 256; b++) {
      uint32_t k = 0;
      while (k < n_added && (added[k].normalized < g || (added[k].normalized == g && added[k].pat[0] < b))) k++;
      aidx[g][b] = k;
    }
  if (pool.n > 0xFFFFFFF0u) {
    free(tadded);
    err_set(e, "%s: token strings add up to more than 4 GiB", path);
    goto out;
  }

  /* --- header and layout --- */
  TokHeader h;
  memset(&h, 0, sizeof h);
  memcpy(h.magic, TOK_MAGIC, 8);
  h.version = TOK_VERSION;
  h.endian = TOK_ENDIAN;
  h.header_size = sizeof h;
  h.flags = flags;
  h.n_vocab = n_vocab;
  h.n_model = (uint32_t)n_model;
  h.n_merges = (uint32_t)n_merges;
  h.n_added = (uint32_t)n_added;
  int32_t eos = smap_get(&added_map, "<|endoftext|>", 13);
  if (eos < 0) eos = smap_get(&vocab, "<|endoftext|>", 13);
  h.eos_id = eos;
  h.unk_id = unk_id;
  h.vocab_cap = vocab_cap;
  h.merge_bits = merge_bits;
  h.vocab_probe = vocab_probe;
  h.merge_probe = merge_probe;
  for (int b = 0; b < 256; b++) {
    uint8_t u[4];
    utf8proc_ssize_t k = utf8proc_encode_char((utf8proc_int32_t)cp_of[b], u);
    h.byte_id[b] = smap_get(&vocab, (const char *)u, (size_t)k);
  }
  const void *src[TOK_S_N] = {tokens, pool.p, vslots, mslots, tadded, aidx};
  uint64_t sz[TOK_S_N] = {(uint64_t)n_vocab * sizeof(TokEnt), pool.n, (uint64_t)vocab_cap * sizeof(TokVSlot),
                          (uint64_t)merge_cap * sizeof(TokMSlot), (uint64_t)n_added * sizeof(TokAdded),
                          sizeof aidx};
  uint64_t off = align_up(sizeof h);
  for (int s = 0; s < TOK_S_N; s++) {
    h.sec[s].off = off;
    h.sec[s].size = sz[s];
    off = align_up(off + sz[s]);
  }
  h.blob_size = off;
  blob = calloc(1, (size_t)off);
  if (!blob) {
    free(tadded);
    goto oom;
  }
  for (int s = 0; s < TOK_S_N; s++)
    if (sz[s]) memcpy(blob + h.sec[s].off, src[s], (size_t)sz[s]);
  free(tadded);
  memcpy(blob, &h, sizeof h);
  h.checksum = XXH3_64bits(blob + 24, (size_t)off - 24);
  memcpy(blob, &h, sizeof h);
  *blob_out = blob;
  *size_out = (size_t)off;
  blob = NULL;
  rc = 0;
  goto out;

oom:
  err_set(e, "%s: out of memory", path);
out:
  for (size_t j = 0; j < (n_all > n_added ? n_all : n_added); j++) free(added[j].pat);
  free(added);
  free(blob);
  free(pool.p);
  free(mslots);
  free(vslots);
  free(tokens);
  free(tmp);
  free(id_str);
  free(owner);
  tok_nfc_free(&nfc);
  smap_free(&vocab);
  smap_free(&added_map);
  cJSON_Delete(root);
  free(text);
  return rc;
}
