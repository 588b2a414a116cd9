/* test_tokenizer.c — the GPT-NeoX tokenizer against Hugging Face's goldens.
 *
 * Imports $SHARED_DIR/tokenizer/tokenizer.json, opens the blob, and checks:
 *   - golden.jsonl: ids of every text and the decoded text of those ids;
 *   - decode_cases.jsonl: decoded text of the ids (partial UTF-8 etc.);
 *   - unicode_version_cases.jsonl: Unicode-version-dependent inputs;
 *   - streaming decode == rt_tok_decode, byte for byte, on all of the above;
 *   - the heap BPE path == the linear one;
 *   - malformed tokenizer.json files give one clear error each;
 *   - corrupted/truncated blobs never crash rt_tok_open (nor encode after it);
 *   - random text: valid UTF-8 round-trips to its NFC, invalid UTF-8 is
 *     refused at the right byte.
 * Exits 77 (skipped) when $SHARED_DIR/tokenizer is absent. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <utf8proc.h>
#include <xxhash.h>

#include "compiler/frontend/tokenizer_import.h"
#include "runtime/tok_format.h"
#include "runtime/tokenizer.h"

#define TEST_FILE "test_tokenizer.c"
#include "check.h"

/* ------------------------------------------------ tiny JSON-lines reader --- */
/* cJSON cuts strings at \u0000 and the goldens hold NULs, so the cases are
 * read with this small reader that keeps string lengths. */

typedef struct {
  char *s;
  size_t n;
} Str;

typedef struct {
  Str text, decoded;
  bool has_text, has_decoded, has_ids;
  int32_t *ids;
  size_t n_ids;
} Case;

typedef struct {
  const char *p, *end;
  bool bad;
} J;

static void jws(J *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static unsigned hex4(J *j) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    if (j->p >= j->end) return j->bad = true, 0;
    char c = *j->p++;
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else j->bad = true;
  }
  return v;
}

static Str jstring(J *j) {
  Str r = {malloc((size_t)(j->end - j->p) + 1), 0};
  if (j->p >= j->end || *j->p != '"') {
    j->bad = true;
    return r;
  }
  j->p++;
  while (j->p < j->end && *j->p != '"') {
    char c = *j->p++;
    if (c != '\\') {
      r.s[r.n++] = c;
      continue;
    }
    if (j->p >= j->end) break;
    c = *j->p++;
    switch (c) {
    case 'n': r.s[r.n++] = '\n'; break;
    case 't': r.s[r.n++] = '\t'; break;
    case 'r': r.s[r.n++] = '\r'; break;
    case 'b': r.s[r.n++] = '\b'; break;
    case 'f': r.s[r.n++] = '\f'; break;
    case 'u': {
      unsigned cp = hex4(j);
      if (cp >= 0xD800 && cp < 0xDC00 && j->p + 6 <= j->end && j->p[0] == '\\' && j->p[1] == 'u') {
        j->p += 2;
        unsigned lo = hex4(j);
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      }
      r.n += (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (uint8_t *)r.s + r.n);
      break;
    }
    default: r.s[r.n++] = c;
    }
  }
  if (j->p < j->end) j->p++;
  else j->bad = true;
  r.s[r.n] = 0;
  return r;
}

static void jskip(J *j);

static void jskip_compound(J *j, char close) {
  j->p++;
  jws(j);
  if (j->p < j->end && *j->p == close) {
    j->p++;
    return;
  }
  while (j->p < j->end && !j->bad) {
    if (close == '}') {
      Str k = jstring(j);
      free(k.s);
      jws(j);
      if (j->p < j->end && *j->p == ':') j->p++;
    }
    jskip(j);
    jws(j);
    if (j->p < j->end && *j->p == ',') {
      j->p++;
      continue;
    }
    if (j->p < j->end && *j->p == close) {
      j->p++;
      return;
    }
    j->bad = true;
  }
}

static void jskip(J *j) {
  jws(j);
  if (j->p >= j->end) return (void)(j->bad = true);
  if (*j->p == '"') {
    Str s = jstring(j);
    free(s.s);
  } else if (*j->p == '[') jskip_compound(j, ']');
  else if (*j->p == '{') jskip_compound(j, '}');
  else
    while (j->p < j->end && *j->p != ',' && *j->p != '}' && *j->p != ']') j->p++;
}

static bool parse_case(const char *line, size_t len, Case *c) {
  memset(c, 0, sizeof *c);
  J j = {line, line + len, false};
  jws(&j);
  if (j.p >= j.end || *j.p != '{') return false;
  j.p++;
  while (!j.bad) {
    jws(&j);
    if (j.p < j.end && *j.p == '}') break;
    Str k = jstring(&j);
    jws(&j);
    if (j.p < j.end && *j.p == ':') j.p++;
    jws(&j);
    if (!strcmp(k.s, "text")) c->text = jstring(&j), c->has_text = true;
    else if (!strcmp(k.s, "decoded")) c->decoded = jstring(&j), c->has_decoded = true;
    else if (!strcmp(k.s, "ids")) {
      c->has_ids = true;
      c->ids = malloc(sizeof(int32_t) * (len + 1));
      if (j.p < j.end && *j.p == '[') j.p++;
      for (;;) {
        jws(&j);
        if (j.p >= j.end) {
          j.bad = true;
          break;
        }
        if (*j.p == ']') {
          j.p++;
          break;
        }
        char *e;
        long v = strtol(j.p, &e, 10);
        if (e == j.p) {
          j.bad = true;
          break;
        }
        c->ids[c->n_ids++] = (int32_t)v;
        j.p = e;
        jws(&j);
        if (j.p < j.end && *j.p == ',') j.p++;
      }
    } else jskip(&j);
    free(k.s);
    jws(&j);
    if (j.p < j.end && *j.p == ',') j.p++;
  }
  return !j.bad;
}

static void free_case(Case *c) {
  free(c->text.s);
  free(c->decoded.s);
  free(c->ids);
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  if (fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
  s[n] = 0;
  fclose(f);
  *len = (size_t)n;
  return s;
}

/* Reads every line of a JSONL file; returns the count (cases malloc'd). */
static size_t load_cases(const char *path, Case **out) {
  size_t len;
  char *s = slurp(path, &len);
  *out = NULL;
  if (!s) return 0;
  size_t n = 0, cap = 64;
  Case *cs = malloc(cap * sizeof *cs);
  for (char *p = s; p < s + len;) {
    char *nl = memchr(p, '\n', (size_t)(s + len - p));
    size_t l = nl ? (size_t)(nl - p) : (size_t)(s + len - p);
    if (l) {
      if (n == cap) cs = realloc(cs, (cap *= 2) * sizeof *cs);
      if (parse_case(p, l, &cs[n])) n++;
      else {
        fprintf(stderr, "%s: cannot parse line %.40s...\n", path, p);
        n_fail++;
      }
    }
    p += l + 1;
  }
  free(s);
  *out = cs;
  return n;
}

/* ------------------------------------------------------------- helpers --- */

static void show(const char *what, const char *s, size_t n) {
  fprintf(stderr, "  %s: \"", what);
  for (size_t i = 0; i < n && i < 160; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == '"' || c == '\\' || c == 0x7f) fprintf(stderr, "\\x%02x", c);
    else fputc(c, stderr);
  }
  fprintf(stderr, "%s\"\n", n > 160 ? "..." : "");
}

static void show_ids(const char *what, const int32_t *ids, size_t n) {
  fprintf(stderr, "  %s: [", what);
  for (size_t i = 0; i < n && i < 64; i++) fprintf(stderr, "%s%d", i ? "," : "", ids[i]);
  fprintf(stderr, "%s]\n", n > 64 ? ",..." : "");
}

/* Streaming decode of ids into a memory buffer. */
static char *stream_decode(const RtTokenizer *t, const int32_t *ids, size_t n, size_t *len) {
  char *buf = NULL;
  size_t sz = 0;
  FILE *f = open_memstream(&buf, &sz);
  RtDecodeStream st = {0};
  for (size_t i = 0; i < n; i++) rt_tok_stream_push(t, &st, ids[i], f);
  rt_tok_stream_flush(&st, f);
  fclose(f);
  *len = sz;
  return buf;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ------------------------------------------------------------- goldens --- */

typedef struct {
  int ids_pass, ids_fail, dec_pass, dec_fail, stream_pass, stream_fail;
} Counts;

static void check_cases(const RtTokenizer *t, const char *name, Case *cs, size_t n, Counts *k) {
  char err[256];
  int shown = 0;
  for (size_t i = 0; i < n; i++) {
    Case *c = &cs[i];
    if (c->has_text && c->has_ids) {
      int32_t *ids;
      size_t nids;
      int rc = rt_tok_encode(t, c->text.s, c->text.n, &ids, &nids, err, sizeof err);
      bool ok = rc == 0 && nids == c->n_ids && !memcmp(ids, c->ids, nids * sizeof *ids);
      if (ok) k->ids_pass++;
      else {
        k->ids_fail++;
        if (shown++ < 10) {
          fprintf(stderr, "FAIL %s line %zu: ids differ%s%s\n", name, i + 1, rc ? ": " : "", rc ? err : "");
          show("text", c->text.s, c->text.n);
          show_ids("want", c->ids, c->n_ids);
          if (!rc) show_ids("got ", ids, nids);
        }
      }
      if (!rc) free(ids);
    }
    if (c->has_ids && c->has_decoded) {
      char *out;
      size_t n_out;
      int rc = rt_tok_decode(t, c->ids, c->n_ids, &out, &n_out, err, sizeof err);
      bool ok = rc == 0 && n_out == c->decoded.n && !memcmp(out, c->decoded.s, n_out);
      if (ok) k->dec_pass++;
      else {
        k->dec_fail++;
        if (shown++ < 10) {
          fprintf(stderr, "FAIL %s line %zu: decoded text differs%s%s\n", name, i + 1, rc ? ": " : "",
                  rc ? err : "");
          show("want", c->decoded.s, c->decoded.n);
          if (!rc) show("got ", out, n_out);
        }
      }
      if (!rc) {
        size_t sl;
        char *s = stream_decode(t, c->ids, c->n_ids, &sl);
        if (sl == n_out && !memcmp(s, out, sl)) k->stream_pass++;
        else {
          k->stream_fail++;
          if (shown++ < 10) {
            fprintf(stderr, "FAIL %s line %zu: streaming decode differs\n", name, i + 1);
            show("decode", out, n_out);
            show("stream", s, sl);
          }
        }
        free(s);
        free(out);
      }
    }
  }
}

/* The heap BPE (used for long words) must agree with the linear scan. */
static void check_bpe_paths(const RtTokenizer *t, Case *cs, size_t n) {
  char err[256];
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    if (!cs[i].has_text) continue;
    int32_t *a, *b;
    size_t na, nb;
    rt_tok_set_bpe_linear_max(1 << 30);
    int ra = rt_tok_encode(t, cs[i].text.s, cs[i].text.n, &a, &na, err, sizeof err);
    rt_tok_set_bpe_linear_max(1);
    int rb = rt_tok_encode(t, cs[i].text.s, cs[i].text.n, &b, &nb, err, sizeof err);
    rt_tok_set_bpe_linear_max(48);
    if (ra || rb || na != nb || memcmp(a, b, na * sizeof *a)) bad++;
    if (!ra) free(a);
    if (!rb) free(b);
  }
  CHECKF(bad == 0, "heap BPE and linear BPE disagree on %d golden texts", bad);
}

/* ---------------------------------------------------- malformed inputs --- */

static const char *tmpdir(void) {
  const char *d = getenv("TEST_TMP");
  if (d && *d) {
    mkdir(d, 0777);
    return d;
  }
  return "/tmp";
}

static void write_file(const char *path, const char *s) {
  FILE *f = fopen(path, "wb");
  fputs(s, f);
  fclose(f);
}

/* A tiny valid byte-level BPE: the byte alphabet is not complete, which is
 * fine for the refusals tested here. */
#define MINI_HEAD \
  "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":0,\"content\":\"<|endoftext|>\",\"single_word\":false," \
  "\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true}],"
#define MINI_PARTS                                                                       \
  "\"normalizer\":{\"type\":\"NFC\"},\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false," \
  "\"trim_offsets\":true},\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\"},"
#define MINI_VOCAB "{\"<|endoftext|>\":0,\"a\":1,\"b\":2,\"ab\":3,\"\\u0120\":4,\"\\u0120ab\":5,\"\\u0120a\":6}"

static void expect_refused(const char *name, const char *json, const char *needle) {
  char path[512];
  snprintf(path, sizeof path, "%s/tok_bad_%s_%d.json", tmpdir(), name, (int)getpid());
  if (json) write_file(path, json);
  uint8_t *blob = NULL;
  size_t size = 0;
  Err e = {0};
  int rc = tok_import_file(path, &blob, &size, &e);
  CHECKF(rc == -1 && blob == NULL && e.set && strstr(e.msg, path) && strstr(e.msg, needle) &&
            !strchr(e.msg, '\n'),
        "%s: expected a one-line error naming the file and containing \"%s\", got rc %d: %s", name, needle,
        rc, e.msg);
  if (rc == -1) printf("  refused %-16s %s\n", name, e.msg);
  free(blob);
  if (json) unlink(path);
}

static void check_malformed(void) {
  expect_refused("missing", NULL, "cannot open");
  expect_refused("notjson", "{\"model\": [1, 2,,]}", "invalid JSON");
  expect_refused("wordpiece",
                 MINI_HEAD MINI_PARTS "\"model\":{\"type\":\"WordPiece\",\"vocab\":" MINI_VOCAB ",\"merges\":[]}}",
                 "model.type");
  expect_refused("novocab", MINI_HEAD MINI_PARTS "\"model\":{\"type\":\"BPE\",\"merges\":[]}}", "model.vocab");
  expect_refused("nomerges", MINI_HEAD MINI_PARTS "\"model\":{\"type\":\"BPE\",\"vocab\":" MINI_VOCAB "}}",
                 "model.merges");
  expect_refused("unknownmerge",
                 MINI_HEAD MINI_PARTS "\"model\":{\"type\":\"BPE\",\"vocab\":" MINI_VOCAB
                                      ",\"merges\":[\"a b\",\"a zz\"]}}",
                 "unknown token \"zz\"");
  expect_refused("mergedmissing",
                 MINI_HEAD MINI_PARTS "\"model\":{\"type\":\"BPE\",\"vocab\":" MINI_VOCAB
                                      ",\"merges\":[\"b a\"]}}",
                 "merged token \"ba\"");
  expect_refused("badmerge",
                 MINI_HEAD MINI_PARTS "\"model\":{\"type\":\"BPE\",\"vocab\":" MINI_VOCAB ",\"merges\":[\"ab\"]}}",
                 "model.merges[0]");
  expect_refused("lowercase",
                 MINI_HEAD "\"normalizer\":{\"type\":\"Lowercase\"},\"pre_tokenizer\":{\"type\":\"ByteLevel\","
                           "\"add_prefix_space\":false},\"decoder\":{\"type\":\"ByteLevel\"},"
                           "\"model\":{\"type\":\"BPE\",\"vocab\":" MINI_VOCAB ",\"merges\":[]}}",
                 "normalizer");
  expect_refused("whitespace",
                 MINI_HEAD "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Whitespace\"},"
                           "\"decoder\":{\"type\":\"ByteLevel\"},"
                           "\"model\":{\"type\":\"BPE\",\"vocab\":" MINI_VOCAB ",\"merges\":[]}}",
                 "pre_tokenizer");
  expect_refused("nodecoder",
                 MINI_HEAD "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false},"
                           "\"model\":{\"type\":\"BPE\",\"vocab\":" MINI_VOCAB ",\"merges\":[]}}",
                 "decoder");
  expect_refused("lstrip",
                 "{\"added_tokens\":[{\"id\":7,\"content\":\"<m>\",\"lstrip\":true,\"special\":true}]," MINI_PARTS
                 "\"model\":{\"type\":\"BPE\",\"vocab\":" MINI_VOCAB ",\"merges\":[]}}",
                 "lstrip");
  expect_refused("dupid",
                 MINI_HEAD MINI_PARTS "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1,\"b\":1},\"merges\":[]}}",
                 "id 1");
  expect_refused("emptyvocab", MINI_HEAD MINI_PARTS "\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
                 "empty");
  expect_refused("notobject", "[1,2,3]", "top level");
}

/* A small valid tokenizer: BPE paths, prefix-less merges, decode. */
static void check_mini(void) {
  char path[512];
  snprintf(path, sizeof path, "%s/tok_mini_%d.json", tmpdir(), (int)getpid());
  /* id 7: a "normalized" added token with NFD content: matched in NFC'd
   * text, and HF decodes it to its NFC'd content (é is one alphabet
   * character, byte 0xE9, hence U+FFFD). */
  write_file(path, "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":0,\"content\":\"<|endoftext|>\","
                   "\"normalized\":false,\"special\":true},{\"id\":7,\"content\":\"cafe\\u0301\","
                   "\"normalized\":true,\"special\":false}]," MINI_PARTS
                   "\"model\":{\"type\":\"BPE\",\"vocab\":" MINI_VOCAB
                   ",\"merges\":[\"a b\",\"\\u0120 a\",\"\\u0120 ab\",\"\\u0120a b\"]}}");
  uint8_t *blob;
  size_t size;
  Err e = {0};
  int rc = tok_import_file(path, &blob, &size, &e);
  CHECKF(rc == 0, "mini tokenizer: %s", e.msg);
  unlink(path);
  if (rc) return;
  char err[256];
  RtTokenizer *t = rt_tok_open(blob, size, err, sizeof err);
  CHECKF(t != NULL, "mini tokenizer open: %s", err);
  if (t) {
    int32_t *ids;
    size_t n;
    rc = rt_tok_encode(t, "ab ab<|endoftext|>a", 19, &ids, &n, err, sizeof err);
    int32_t want[] = {3, 5, 0, 1};
    CHECKF(rc == 0 && n == 4 && !memcmp(ids, want, sizeof want), "mini encode: got %zu ids", n);
    if (!rc) free(ids);
    CHECKF(rt_tok_eos(t) == 0 && rt_tok_n_vocab(t) == 8, "mini eos/n_vocab");
    static const char *cafes[] = {"caf\xc3\xa9", "cafe\xcc\x81"};
    for (int i = 0; i < 2; i++) {
      rc = rt_tok_encode(t, cafes[i], strlen(cafes[i]), &ids, &n, err, sizeof err);
      CHECKF(rc == 0 && n == 1 && ids[0] == 7, "mini: normalized added token in NFC/NFD text");
      if (!rc) free(ids);
    }
    int32_t seven = 7;
    char *out;
    size_t on;
    rc = rt_tok_decode(t, &seven, 1, &out, &on, err, sizeof err);
    CHECKF(rc == 0 && on == 6 && !memcmp(out, "caf\xef\xbf\xbd", 6), "mini: decode of a normalized added token");
    if (!rc) free(out);
    CHECKF(rt_tok_lookup(t, " ab", 3) == 5 && rt_tok_lookup(t, "zz", 2) == -1, "mini lookup");
    rt_tok_close(t);
  }
  free(blob);
}

/* ------------------------------------------------------- blob fuzzing --- */

static void poke_and_use(const uint8_t *blob, size_t size) {
  char err[256];
  RtTokenizer *t = rt_tok_open(blob, size, err, sizeof err);
  if (!t) return;
  /* Opened: the tables are self-consistent; using them must not crash. */
  static const char text[] = "Hello <|endoftext|> world!  12345 \xc3\xa9t\xc3\xa9 x  \n\n y";
  int32_t *ids;
  size_t n;
  if (rt_tok_encode(t, text, sizeof text - 1, &ids, &n, err, sizeof err) == 0) {
    char *out;
    size_t on;
    if (rt_tok_decode(t, ids, n, &out, &on, err, sizeof err) == 0) free(out);
    free(ids);
  }
  int32_t some[8];
  for (int i = 0; i < 8; i++) some[i] = rand() % (rt_tok_n_vocab(t) + 10) - 5;
  char *out;
  size_t on;
  if (rt_tok_decode(t, some, 8, &out, &on, err, sizeof err) == 0) free(out);
  rt_tok_close(t);
}

static void fuzz_blob(const uint8_t *good, size_t size) {
  uint8_t *b = malloc(size);
  int opened_fixed = 0, rounds = 1500;
  for (int r = 0; r < rounds; r++) {
    memcpy(b, good, size);
    int kind = r % 4;
    size_t n = size;
    if (kind == 0) {
      n = (size_t)rand() % size; /* truncated */
    } else {
      int flips = 1 + rand() % 8;
      for (int f = 0; f < flips; f++) {
        /* bias towards the header, where offsets and sizes live */
        size_t at = (rand() % 2) ? (size_t)rand() % sizeof(TokHeader) : (size_t)rand() % size;
        b[at] ^= (uint8_t)(1 + rand() % 255);
      }
      if (kind >= 2 && n >= sizeof(TokHeader)) {
        /* re-seal the checksum so the structural checks are exercised */
        uint64_t c = XXH3_64bits(b + 24, n - 24);
        memcpy(b + 16, &c, 8);
      }
    }
    uint8_t *copy = malloc(n ? n : 1); /* exact size: overreads are caught by ASan/valgrind */
    memcpy(copy, b, n);
    char err[256];
    RtTokenizer *t = rt_tok_open(copy, n, err, sizeof err);
    if (t) {
      opened_fixed++;
      rt_tok_close(t);
      poke_and_use(copy, n);
    }
    free(copy);
  }
  free(b);
  CHECKF(true, "blob fuzz");
  printf("blob fuzz: %d corrupted/truncated blobs, %d still opened (self-consistent), no crash\n", rounds,
         opened_fixed);
}

/* ------------------------------------------------------- text fuzzing --- */

/* Rust's Utf8Error::valid_up_to, independently of the tokenizer. */
static size_t ref_valid_upto(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &cp);
    if (k <= 0 || cp < 0) return i;
    i += (size_t)k;
  }
  return n;
}

/* Reference: NFC of each piece between <|endoftext|> / <|padding|>. */
static char *ref_nfc_pieces(const char *s, size_t n, size_t *out_n) {
  char *out = malloc(4 * n + 16);
  size_t o = 0, start = 0;
  for (size_t i = 0; i <= n;) {
    size_t ml = 0;
    if (i < n && s[i] == '<') {
      if (n - i >= 13 && !memcmp(s + i, "<|endoftext|>", 13)) ml = 13;
      else if (n - i >= 11 && !memcmp(s + i, "<|padding|>", 11)) ml = 11;
    }
    if (i == n || ml) {
      if (i > start) {
        utf8proc_uint8_t *nfc = NULL;
        utf8proc_ssize_t m = utf8proc_map((const uint8_t *)s + start, (utf8proc_ssize_t)(i - start), &nfc,
                                          UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (m > 0) memcpy(out + o, nfc, (size_t)m), o += (size_t)m;
        free(nfc);
      }
      if (i == n) break;
      memcpy(out + o, s + i, ml);
      o += ml;
      i += ml;
      start = i;
    } else {
      i++;
    }
  }
  *out_n = o;
  return out;
}

/* Characters for random text: ASCII of every class, whitespace of every
 * kind, Latin letters precomposed and combining marks, Hangul syllables and
 * jamo, CJK, Indic (with composing vowel signs), emoji, Arabic digits,
 * compatibility characters and singletons.  Marks newer than Unicode 9.0
 * are left out: there HF's NFC and utf8proc's differ on purpose. */
static const uint32_t pool_cps[] = {
  'a', 'b', 'z', 'A', 'Q', '0', '7', ' ', ' ', ' ', ' ', '\n', '\t', '\r', '\'', 's', 't', 'l', 'd', 'm',
  'r', 'e', 'v', '.', ',', '!', '?', '<', '>', '|', '_', '-', 0, 0x1F, 0x7F, 0x85, 0xA0, 0x1680, 0x2003,
  0x2028, 0x202F, 0x3000, 0xFEFF, 0x180E, 0xE9, 0xC5, 0xDF, 0x300, 0x301, 0x308, 0x323, 0x327, 0x338,
  0x345, 0x1E0B, 0x212B, 0x2126, 0x37E, 0x390, 0x3B1, 0x1F00, 0x1100, 0x1161, 0x11A8, 0xAC00, 0xAC01,
  0xD7A3, 0x4E2D, 0x6587, 0x3042, 0x30AB, 0x3099, 0x915, 0x93C, 0x958, 0x94D, 0xBC6, 0xBBE, 0xBD7, 0xD46,
  0xD3E, 0x1F600, 0x1F44D, 0x1F3FD, 0x200D, 0x660, 0x663, 0x2167, 0xFB01, 0xFF21, 0x2460, 0xE000, 0x10FFFD,
  0x11131, 0x11127, 0x1D15E, 0x2ADC, 0xF900, 0x2F800,
};

static size_t random_text(char *buf, size_t max_cps) {
  size_t o = 0, n = (size_t)rand() % max_cps;
  for (size_t i = 0; i < n; i++) {
    int r = rand() % 100;
    if (r < 2) {
      const char *sp = (rand() & 1) ? "<|endoftext|>" : "<|padding|>";
      memcpy(buf + o, sp, strlen(sp));
      o += strlen(sp);
      continue;
    }
    if (r < 6) { /* a run of spaces, to hit the space-run tokens */
      int k = 1 + rand() % 30;
      memset(buf + o, ' ', (size_t)k);
      o += (size_t)k;
      continue;
    }
    uint32_t cp = pool_cps[(size_t)rand() % (sizeof pool_cps / sizeof pool_cps[0])];
    o += (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (uint8_t *)buf + o);
  }
  return o;
}

static void fuzz_text(const RtTokenizer *t) {
  char err[256], buf[4096];
  int rt_bad = 0, inval_bad = 0, shown = 0;
  const int rounds = 3000;
  for (int r = 0; r < rounds; r++) {
    size_t n = random_text(buf, 60);
    int32_t *ids;
    size_t nids;
    if (rt_tok_encode(t, buf, n, &ids, &nids, err, sizeof err)) {
      rt_bad++;
      continue;
    }
    char *out;
    size_t on;
    size_t rn;
    char *ref = ref_nfc_pieces(buf, n, &rn);
    if (rt_tok_decode(t, ids, nids, &out, &on, err, sizeof err) || on != rn || memcmp(out, ref, rn)) {
      if (shown++ < 5) {
        fprintf(stderr, "FAIL round trip\n");
        show("text", buf, n);
        show("nfc ", ref, rn);
      }
      rt_bad++;
    } else {
      free(out);
    }
    free(ref);
    free(ids);

    /* Now break it: an invalid byte pattern at a random place. */
    static const char *junk[] = {"\x80", "\xbf", "\xc0\xaf", "\xc1\xbf", "\xc3", "\xe0\x80\xaf", "\xe2\x82",
                                 "\xed\xa0\x80", "\xf0\x80\x80\x80", "\xf4\x90\x80\x80", "\xf5", "\xff",
                                 "\xf0\x9f\x98"};
    const char *jk = junk[(size_t)rand() % (sizeof junk / sizeof junk[0])];
    size_t at = n ? (size_t)rand() % (n + 1) : 0;
    char bad[4200];
    memcpy(bad, buf, at);
    memcpy(bad + at, jk, strlen(jk));
    memcpy(bad + at + strlen(jk), buf + at, n - at);
    size_t bn = n + strlen(jk);
    size_t want = ref_valid_upto((const uint8_t *)bad, bn);
    if (want == bn) continue; /* the junk completed a character: still valid */
    char expect[96];
    snprintf(expect, sizeof expect, "not valid UTF-8 at byte %zu", want);
    int rc = rt_tok_encode(t, bad, bn, &ids, &nids, err, sizeof err);
    if (rc != -1 || !strstr(err, expect)) {
      if (shown++ < 5) fprintf(stderr, "FAIL invalid UTF-8: want \"%s\", got rc %d \"%s\"\n", expect, rc, err);
      inval_bad++;
      if (!rc) free(ids);
    }
  }
  CHECKF(rt_bad == 0, "random text: %d of %d did not round-trip to NFC", rt_bad, rounds);
  CHECKF(inval_bad == 0, "random invalid UTF-8: %d of %d not refused at the right byte", inval_bad, rounds);
  printf("text fuzz: %d random texts round-trip to their NFC; invalid UTF-8 refused at the right byte\n", rounds);
}

/* Long words (heap BPE) and pathological inputs. */
static void check_long(const RtTokenizer *t) {
  char err[256];
  size_t n = 200000;
  char *s = malloc(n);
  for (size_t i = 0; i < n; i++) s[i] = "aaaab"[i % 5];
  int32_t *a, *b;
  size_t na, nb;
  int ra = rt_tok_encode(t, s, n, &a, &na, err, sizeof err);
  for (size_t i = 0; i < n; i++) s[i] = (char)('a' + rand() % 26);
  rt_tok_set_bpe_linear_max(1 << 30);
  int rb = rt_tok_encode(t, s, 3000, &b, &nb, err, sizeof err);
  rt_tok_set_bpe_linear_max(48);
  int32_t *c;
  size_t nc;
  int rc = rt_tok_encode(t, s, 3000, &c, &nc, err, sizeof err);
  CHECKF(ra == 0 && rb == 0 && rc == 0 && nb == nc && !memcmp(b, c, nb * sizeof *b),
        "long words: heap and linear BPE disagree");
  if (!ra) free(a);
  if (!rb) free(b);
  if (!rc) free(c);
  /* empty text, empty id list */
  rc = rt_tok_encode(t, "", 0, &a, &na, err, sizeof err);
  CHECKF(rc == 0 && na == 0, "empty text");
  if (!rc) free(a);
  char *out;
  size_t on;
  rc = rt_tok_decode(t, NULL, 0, &out, &on, err, sizeof err);
  CHECKF(rc == 0 && on == 0 && out && out[0] == 0, "empty decode");
  if (!rc) free(out);
  int32_t bad_id[] = {5, 50277};
  rc = rt_tok_decode(t, bad_id, 2, &out, &on, err, sizeof err);
  CHECKF(rc == -1 && strstr(err, "50277"), "decode of an id outside the vocabulary: %s", err);
  free(s);
}

/* ---------------------------------------------------------------- main --- */

int main(void) {
  const char *shared = getenv("SHARED_DIR");
  char dir[1024], path[1200];
  snprintf(dir, sizeof dir, "%s/tokenizer", shared && *shared ? shared : "../shared");
  snprintf(path, sizeof path, "%s/tokenizer.json", dir);
  struct stat st;
  if (stat(path, &st) != 0) {
    printf("SKIP: %s not found (set SHARED_DIR to the folder holding tokenizer/)\n", path);
    return 77;
  }
  srand(20240607);
  /* tok_nfc.h and the \p{L}/\p{N} table assume utf8proc's Unicode 15.0 data */
  CHECKF(!strcmp(utf8proc_unicode_version(), "15.0.0"),
        "utf8proc has Unicode %s; the tokenizer's Unicode 9.0 NFC mask and 16.0 letter table assume 15.0.0 "
        "(utf8proc 2.8): update runtime/tok_nfc.h and cls_new in runtime/tokenizer.c",
        utf8proc_unicode_version());

  double t0 = now_ms();
  uint8_t *blob;
  size_t size;
  Err e = {0};
  int rc = tok_import_file(path, &blob, &size, &e);
  double t1 = now_ms();
  if (rc) {
    fprintf(stderr, "FAIL import: %s\n", e.msg);
    printf("0 passed, 1 failed\n");
    return 1;
  }
  char err[256];
  double t2 = now_ms();
  RtTokenizer *t = rt_tok_open(blob, size, err, sizeof err);
  double t3 = now_ms();
  if (!t) {
    fprintf(stderr, "FAIL open: %s\n", err);
    printf("0 passed, 1 failed\n");
    return 1;
  }
  printf("import %.0f ms, blob %zu bytes, rt_tok_open %.3f ms, n_vocab %d, eos %d\n", t1 - t0, size, t3 - t2,
         rt_tok_n_vocab(t), rt_tok_eos(t));
  CHECKF(rt_tok_n_vocab(t) == 50277 && rt_tok_eos(t) == 0, "n_vocab/eos: %d %d", rt_tok_n_vocab(t), rt_tok_eos(t));

  static const char *files[] = {"golden.jsonl", "decode_cases.jsonl", "unicode_version_cases.jsonl"};
  for (int f = 0; f < 3; f++) {
    snprintf(path, sizeof path, "%s/%s", dir, files[f]);
    Case *cs;
    size_t n = load_cases(path, &cs);
    if (!n) {
      printf("%s: not found or empty%s\n", files[f], f == 2 ? " (optional)" : "");
      if (f < 2) n_fail++;
      continue;
    }
    Counts k = {0};
    check_cases(t, files[f], cs, n, &k);
    if (f == 0) check_bpe_paths(t, cs, n);
    printf("%s: %zu cases: ids %d passed, %d failed; decoded %d passed, %d failed; stream %d passed, %d failed\n",
           files[f], n, k.ids_pass, k.ids_fail, k.dec_pass, k.dec_fail, k.stream_pass, k.stream_fail);
    n_pass += k.ids_pass + k.dec_pass + k.stream_pass;
    n_fail += k.ids_fail + k.dec_fail + k.stream_fail;
    for (size_t i = 0; i < n; i++) free_case(&cs[i]);
    free(cs);
  }

  check_long(t);
  fuzz_text(t);
  check_malformed();
  check_mini();
  fuzz_blob(blob, size);

  rt_tok_close(t);
  free(blob);
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}
