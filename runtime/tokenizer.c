/* tokenizer.c — the GPT-NeoX byte-level BPE tokenizer, run in place from the
 * tables of tok_format.h (written by compiler/frontend/tokenizer_import.c;
 * docs/tokenizer.md describes format, algorithm and the Hugging Face
 * behaviours matched here).
 *
 * Encoding is HF tokenizers' pipeline, step for step:
 *   1. added tokens that are not "normalized" are cut out of the raw text
 *      (leftmost-longest);
 *   2. each remaining piece is NFC-normalized (Unicode 9.0 data, like HF's
 *      unicode-normalization-alignments 0.1.12), then the "normalized" added
 *      tokens are cut out of it;
 *   3. each remaining piece is split with the GPT-2 pattern (Oniguruma
 *      semantics: \s is White_Space, \p{L} and \p{N} of Unicode 16.0 as in
 *      HF's Oniguruma: utf8proc's 15.0 tables plus the 15.1/16.0 additions);
 *   4. each word is BPE-merged by rank on its raw bytes.
 * Decoding joins token bytes and makes lossy UTF-8 of them (one U+FFFD per
 * maximal invalid subpart, as Rust's from_utf8_lossy).
 *
 * Invariants: the blob is never written; rt_tok_open checks every offset,
 * size and id in it, so later code indexes tables without checks.  Encode
 * keeps all of its state (word cache, buffers) per call: a tokenizer can be
 * shared by threads. */
#include "tokenizer.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>
#include <xxhash.h>

#include "tok_format.h"
#include "tok_nfc.h"

struct RtTokenizer {
  const uint8_t *base;
  const TokHeader *h;
  const TokEnt *tok;
  const uint8_t *pool;
  uint64_t pool_size;
  const TokVSlot *vocab;
  uint32_t vmask;
  const TokMSlot *merge;
  uint32_t mbits, mmask;
  uint32_t vprobe, mprobe;
  const TokAdded *added;
  const uint32_t *aidx; /* [2][257] */
  uint32_t n_vocab, flags;
  int32_t eos, unk;
  /* Prefilters for added tokens, per group (0 raw, 1 normalized): which
   * bytes start a pattern, which start a one-byte pattern, and which byte
   * pairs start a longer one. */
  uint8_t first[2][256], one[2][256];
  uint8_t pair[2][8192];
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* ================================================================ open === */

static bool sec_ok(const TokHeader *h, int s, uint64_t elem, uint64_t count) {
  const TokSection *x = &h->sec[s];
  if (x->off % TOK_ALIGN || x->off < h->header_size || x->off > h->blob_size) return false;
  if (x->size > h->blob_size - x->off) return false;
  if (elem && x->size != elem * count) return false;
  return true;
}

RtTokenizer *rt_tok_open(const void *blob, size_t size, char *err, size_t errlen) {
  const uint8_t *b = blob;
  if (!b || ((uintptr_t)b & 7)) {
    set_err(err, errlen, "tokenizer tables: blob is %s", b ? "not 8-byte aligned" : "missing");
    return NULL;
  }
  if (size < sizeof(TokHeader) || memcmp(b, TOK_MAGIC, 8) != 0) {
    set_err(err, errlen, "tokenizer tables: bad magic or truncated header (%zu bytes)", size);
    return NULL;
  }
  const TokHeader *h = blob;
  if (h->version != TOK_VERSION || h->endian != TOK_ENDIAN || h->header_size != sizeof(TokHeader)) {
    set_err(err, errlen, "tokenizer tables: version %u, expected %u (recompile the model)",
            h->version, TOK_VERSION);
    return NULL;
  }
  if (h->blob_size != size) {
    set_err(err, errlen, "tokenizer tables: %zu bytes, header says %llu", size,
            (unsigned long long)h->blob_size);
    return NULL;
  }
  if (XXH3_64bits(b + 24, size - 24) != h->checksum) {
    set_err(err, errlen, "tokenizer tables: checksum mismatch (corrupted)");
    return NULL;
  }
  const char *why = NULL;
  uint32_t nv = h->n_vocab;
  if (nv == 0 || nv > TOK_MAX_VOCAB) why = "n_vocab";
  else if (h->vocab_cap < 2 || (h->vocab_cap & (h->vocab_cap - 1)) || h->vocab_cap > (1u << 30)) why = "vocab_cap";
  else if (h->merge_bits < 1 || h->merge_bits > 30) why = "merge_bits";
  else if (h->eos_id < -1 || h->eos_id >= (int32_t)nv || h->unk_id < -1 || h->unk_id >= (int32_t)nv)
    why = "eos/unk id";
  else if (!sec_ok(h, TOK_S_TOKENS, sizeof(TokEnt), nv) || !sec_ok(h, TOK_S_BYTES, 0, 0) ||
           !sec_ok(h, TOK_S_VOCAB, sizeof(TokVSlot), h->vocab_cap) ||
           !sec_ok(h, TOK_S_MERGES, sizeof(TokMSlot), 1ull << h->merge_bits) ||
           !sec_ok(h, TOK_S_ADDED, sizeof(TokAdded), h->n_added) ||
           !sec_ok(h, TOK_S_ADDED_IDX, sizeof(uint32_t), 2 * 257))
    why = "section table";
  if (why) {
    set_err(err, errlen, "tokenizer tables: bad %s", why);
    return NULL;
  }
  for (int i = 0; i < 256 && !why; i++)
    if (h->byte_id[i] < -1 || h->byte_id[i] >= (int32_t)nv) why = "byte id";

  const TokEnt *tok = (const TokEnt *)(b + h->sec[TOK_S_TOKENS].off);
  uint64_t psize = h->sec[TOK_S_BYTES].size;
  for (uint32_t i = 0; i < nv && !why; i++)
    if (tok[i].len != TOK_NO_TOKEN && (uint64_t)tok[i].off + tok[i].len > psize) why = "token table";

  /* The hash tables are not scanned: lookups stop after the recorded
   * longest probe and check every id they return. */
  const TokVSlot *vs = (const TokVSlot *)(b + h->sec[TOK_S_VOCAB].off);
  const TokMSlot *ms = (const TokMSlot *)(b + h->sec[TOK_S_MERGES].off);
  uint32_t mcap = 1u << h->merge_bits;
  if (!why && (h->vocab_probe > h->vocab_cap || h->merge_probe > mcap)) why = "probe length";

  const TokAdded *ad = (const TokAdded *)(b + h->sec[TOK_S_ADDED].off);
  const uint32_t *ax = (const uint32_t *)(b + h->sec[TOK_S_ADDED_IDX].off);
  const uint8_t *pool = b + h->sec[TOK_S_BYTES].off;
  for (uint32_t i = 0; i < h->n_added && !why; i++)
    if (ad[i].id >= nv || ad[i].len == 0 || (uint64_t)ad[i].off + ad[i].len > psize) why = "added tokens";
  if (!why && (ax[0] != 0 || ax[256] != ax[257] || ax[2 * 257 - 1] != h->n_added)) why = "added index";
  for (int g = 0; g < 2 && !why; g++)
    for (int c = 0; c < 256 && !why; c++) {
      uint32_t lo = ax[g * 257 + c], hi = ax[g * 257 + c + 1];
      if (lo > hi || hi > h->n_added) {
        why = "added index";
        break;
      }
      for (uint32_t k = lo; k < hi; k++)
        if (pool[ad[k].off] != c || (k > lo && ad[k].len > ad[k - 1].len) ||
            (ad[k].flags & TOK_A_NORMALIZED ? 1 : 0) != g)
          why = "added index";
    }
  if (why) {
    set_err(err, errlen, "tokenizer tables: bad %s", why);
    return NULL;
  }

  RtTokenizer *t = calloc(1, sizeof *t);
  if (!t) {
    set_err(err, errlen, "tokenizer: out of memory");
    return NULL;
  }
  t->base = b;
  t->h = h;
  t->tok = tok;
  t->pool = pool;
  t->pool_size = psize;
  t->vocab = vs;
  t->vmask = h->vocab_cap - 1;
  t->merge = ms;
  t->mbits = h->merge_bits;
  t->mmask = mcap - 1;
  t->vprobe = h->vocab_probe;
  t->mprobe = h->merge_probe;
  t->added = ad;
  t->aidx = ax;
  t->n_vocab = nv;
  t->flags = h->flags;
  t->eos = h->eos_id;
  t->unk = h->unk_id;
  for (uint32_t i = 0; i < h->n_added; i++) {
    int g = ad[i].flags & TOK_A_NORMALIZED ? 1 : 0;
    const uint8_t *p = pool + ad[i].off;
    t->first[g][p[0]] = 1;
    if (ad[i].len == 1) t->one[g][p[0]] = 1;
    else t->pair[g][(p[0] << 5) | (p[1] >> 3)] |= (uint8_t)(1u << (p[1] & 7));
  }
  return t;
}

void rt_tok_close(RtTokenizer *t) { free(t); }

int32_t rt_tok_n_vocab(const RtTokenizer *t) { return (int32_t)t->n_vocab; }
int32_t rt_tok_eos(const RtTokenizer *t) { return t->eos; }

const uint8_t *rt_tok_token_bytes(const RtTokenizer *t, int32_t id, size_t *len) {
  if (id < 0 || (uint32_t)id >= t->n_vocab || t->tok[id].len == TOK_NO_TOKEN) return NULL;
  if (len) *len = t->tok[id].len;
  return t->pool + t->tok[id].off;
}

int32_t rt_tok_lookup(const RtTokenizer *t, const void *s, size_t n) {
  uint64_t h = XXH3_64bits(s, n);
  uint32_t tag = (uint32_t)(h >> 32);
  uint32_t i = (uint32_t)h & t->vmask;
  for (uint32_t k = 0; k < t->vprobe; k++, i = (i + 1) & t->vmask) {
    const TokVSlot *v = &t->vocab[i];
    if (!v->id1) return -1;
    if (v->tag == tag && v->id1 <= t->n_vocab) {
      const TokEnt *e = &t->tok[v->id1 - 1];
      if (e->len == n && memcmp(t->pool + e->off, s, n) == 0) return (int32_t)(v->id1 - 1);
    }
  }
  return -1;
}

/* =============================================================== UTF-8 === */

/* A UTF-8 lead byte c (>= 0x80): how many continuation bytes follow (0: c
 * cannot start a character), and the range [*lo, *hi] the first of them
 * must fall in (excludes overlongs, surrogates and code points > U+10FFFF). */
static size_t utf8_lead(uint8_t c, uint8_t *lo, uint8_t *hi) {
  *lo = 0x80, *hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) return 1;
  if (c == 0xE0) return *lo = 0xA0, 2;
  if (c == 0xED) return *hi = 0x9F, 2;
  if (c >= 0xE1 && c <= 0xEF) return 2;
  if (c == 0xF0) return *lo = 0x90, 3;
  if (c >= 0xF1 && c <= 0xF3) return 3;
  if (c == 0xF4) return *hi = 0x8F, 3;
  return 0;
}

/* Length of the longest valid UTF-8 prefix of s[0..n) (Rust's valid_up_to). */
static size_t utf8_valid_upto(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    /* ASCII runs eight bytes at a time */
    while (i + 8 <= n) {
      uint64_t w;
      memcpy(&w, s + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    uint8_t c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    uint8_t lo, hi;
    size_t need = utf8_lead(c, &lo, &hi);
    if (!need) return i;
    if (i + need >= n) return i;
    if (s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k <= need; k++)
      if ((s[i + k] & 0xC0) != 0x80) return i;
    i += need + 1;
  }
  return n;
}

/* Lossy decoding of s[0..n) into out (room for 3n bytes): valid characters
 * are copied, each maximal invalid subpart becomes one U+FFFD.  With
 * `partial`, a valid but unfinished character at the very end is left
 * undecoded; the return value says how many input bytes were consumed. */
static size_t utf8_lossy(const uint8_t *s, size_t n, uint8_t *out, size_t *out_len, bool partial) {
  size_t i = 0, o = 0;
  while (i < n) {
    uint8_t c = s[i];
    if (c < 0x80) {
      out[o++] = c, i++;
      continue;
    }
    uint8_t lo, hi;
    size_t need = utf8_lead(c, &lo, &hi);
    size_t j = i + 1;
    if (need) {
      if (j < n && s[j] >= lo && s[j] <= hi) {
        j++;
        while (j < n && j <= i + need && (s[j] & 0xC0) == 0x80) j++;
      }
      if (j == i + need + 1) {
        memcpy(out + o, s + i, need + 1);
        o += need + 1, i = j;
        continue;
      }
      if (j == n && partial) break; /* unfinished, may complete later */
    }
    out[o++] = 0xEF, out[o++] = 0xBF, out[o++] = 0xBD;
    i = j;
  }
  *out_len = o;
  return i;
}

/* ============================================================== encode === */

enum { CL_L, CL_N, CL_W, CL_O };

/* ASCII classes: letters L, digits N, \t\n\v\f\r and space W, the rest O. */
#define CL CL_L
#define CN CL_N
#define CW CL_W
#define CO CL_O
static const uint8_t ascii_cls[128] = {
  CO, CO, CO, CO, CO, CO, CO, CO, CO, CW, CW, CW, CW, CW, CO, CO,
  CO, CO, CO, CO, CO, CO, CO, CO, CO, CO, CO, CO, CO, CO, CO, CO,
  CW, CO, CO, CO, CO, CO, CO, CO, CO, CO, CO, CO, CO, CO, CO, CO,
  CN, CN, CN, CN, CN, CN, CN, CN, CN, CN, CO, CO, CO, CO, CO, CO,
  CO, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL,
  CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CO, CO, CO, CO, CO,
  CO, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL,
  CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CO, CO, CO, CO, CO,
};
#undef CL
#undef CN
#undef CW
#undef CO

/* Letters and digits of Unicode 15.1 and 16.0, unassigned in utf8proc 2.8
 * (Unicode 15.0) but in the tables of HF's Oniguruma (checked against HF
 * on every code point; docs/tokenizer.md). */
static const struct {
  uint32_t lo, hi;
  uint8_t cls;
} cls_new[] = {
  {0x1C89, 0x1C8A, CL_L},   {0xA7CB, 0xA7CD, CL_L},   {0xA7DA, 0xA7DC, CL_L},   {0x105C0, 0x105F3, CL_L},
  {0x10D40, 0x10D49, CL_N}, {0x10D4A, 0x10D65, CL_L}, {0x10D6F, 0x10D85, CL_L}, {0x10EC2, 0x10EC4, CL_L},
  {0x11380, 0x11389, CL_L}, {0x1138B, 0x1138B, CL_L}, {0x1138E, 0x1138E, CL_L}, {0x11390, 0x113B5, CL_L},
  {0x113B7, 0x113B7, CL_L}, {0x113D1, 0x113D1, CL_L}, {0x113D3, 0x113D3, CL_L}, {0x116D0, 0x116E3, CL_N},
  {0x11BC0, 0x11BE0, CL_L}, {0x11BF0, 0x11BF9, CL_N}, {0x13460, 0x143FA, CL_L}, {0x16100, 0x1611D, CL_L},
  {0x16130, 0x16139, CL_N}, {0x16D40, 0x16D6C, CL_L}, {0x16D70, 0x16D79, CL_N}, {0x18CFF, 0x18CFF, CL_L},
  {0x1CCF0, 0x1CCF9, CL_N}, {0x1E5D0, 0x1E5ED, CL_L}, {0x1E5F0, 0x1E5F0, CL_L}, {0x1E5F1, 0x1E5FA, CL_N},
  {0x2EBF0, 0x2EE5D, CL_L},
};

static int cls_unassigned(uint32_t cp) {
  size_t lo = 0, hi = sizeof cls_new / sizeof cls_new[0];
  while (lo < hi) {
    size_t m = (lo + hi) / 2;
    if (cp < cls_new[m].lo) hi = m;
    else if (cp > cls_new[m].hi) lo = m + 1;
    else return cls_new[m].cls;
  }
  return CL_O;
}

/* Oniguruma's classes for the GPT-2 pattern: \s is Unicode White_Space. */
static inline int cls_cp(uint32_t cp) {
  if (cp < 0x80) return ascii_cls[cp];
  if (cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
      cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000)
    return CL_W;
  switch (utf8proc_get_property((utf8proc_int32_t)cp)->category) {
  case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
  case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
    return CL_L;
  case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
    return CL_N;
  case UTF8PROC_CATEGORY_CN:
    return cls_unassigned(cp);
  default:
    return CL_O;
  }
}

static inline int cls_at(const uint8_t *s, size_t i, size_t *len) {
  if (s[i] < 0x80) return *len = 1, ascii_cls[s[i]];
  return cls_cp(utf8_get(s + i, len));
}

/* End of the GPT-2 pattern match that starts at s[i] (i < n):
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * The alternatives are tried in order, as Oniguruma does. */
static size_t split_next(const uint8_t *s, size_t n, size_t i) {
  if (s[i] == '\'' && i + 1 < n) {
    uint8_t a = s[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (i + 2 < n && (((a == 'r' || a == 'v') && s[i + 2] == 'e') || (a == 'l' && s[i + 2] == 'l')))
      return i + 3;
  }
  size_t k, j;
  int cl = cls_at(s, i, &k);
  j = i + k;
  if (cl == CL_W) {
    if (s[i] == ' ' && j < n) {
      size_t k2;
      int c2 = cls_at(s, j, &k2);
      if (c2 != CL_W) { /* " ?" then a run of the next class */
        cl = c2;
        j += k2;
        goto run;
      }
    }
    /* \s+(?!\S) backs off one character before a non-space; a lone space
     * character before a non-space falls to the final \s+. */
    size_t last = i, count = 1;
    while (j < n) {
      int c = cls_at(s, j, &k);
      if (c != CL_W) break;
      last = j, j += k, count++;
    }
    return (j == n || count == 1) ? j : last;
  }
run:
  while (j < n) {
    if (s[j] < 0x80) {
      if (ascii_cls[s[j]] != cl) break;
      j++;
      continue;
    }
    int c = cls_at(s, j, &k);
    if (c != cl) break;
    j += k;
  }
  return j;
}

/* ---- BPE ---- */

static inline bool merge_get(const RtTokenizer *t, uint32_t a, uint32_t b, uint32_t *rank, uint32_t *id) {
  uint64_t key = (uint64_t)a << 32 | b;
  uint32_t i = (uint32_t)((key * TOK_MERGE_MUL) >> (64 - t->mbits));
  for (uint32_t k = 0; k < t->mprobe; k++, i = (i + 1) & t->mmask) {
    const TokMSlot *m = &t->merge[i];
    if (m->key == key) {
      *rank = m->rank, *id = m->id;
      return m->id < t->n_vocab;
    }
    if (m->key == TOK_MERGE_EMPTY) return false;
  }
  return false;
}

static int bpe_linear_max = 48;
void rt_tok_set_bpe_linear_max(int n) { bpe_linear_max = n < 1 ? 1 : n; }

typedef struct {
  uint32_t rank, pos, id;
} HeapEnt;

/* Per-call encoder state. */
typedef struct {
  const RtTokenizer *t;
  int32_t *ids;
  size_t n, cap;
  bool oom;
  /* word BPE scratch */
  uint32_t *sym, *rk, *nid;
  int32_t *prev, *next;
  HeapEnt *heap;
  size_t scap;
  /* word -> ids cache, direct mapped */
  struct CacheEnt *cache;
  size_t cmask;
  /* NFC and prefix-space buffers */
  TokNfc nfc;
  uint8_t *pbuf;
  size_t pcap;
} Enc;

#define CACHE_WORD 22
#define CACHE_IDS 8
struct CacheEnt {
  uint64_t h;
  uint8_t wlen, n;
  uint8_t w[CACHE_WORD];
  int32_t ids[CACHE_IDS];
};

static inline void push_id(Enc *e, int32_t id) {
  if (e->n == e->cap) {
    size_t cap = e->cap ? e->cap * 2 : 256;
    int32_t *p = realloc(e->ids, cap * sizeof *p);
    if (!p) {
      e->oom = true;
      return;
    }
    e->ids = p, e->cap = cap;
  }
  e->ids[e->n++] = id;
}

static bool scratch(Enc *e, size_t n) {
  if (n <= e->scap) return true;
  size_t cap = e->scap ? e->scap : 64;
  while (cap < n) cap *= 2;
  free(e->sym), free(e->rk), free(e->nid), free(e->prev), free(e->next), free(e->heap);
  e->sym = malloc(cap * sizeof *e->sym);
  e->rk = malloc(cap * sizeof *e->rk);
  e->nid = malloc(cap * sizeof *e->nid);
  e->prev = malloc(cap * sizeof *e->prev);
  e->next = malloc(cap * sizeof *e->next);
  e->heap = malloc(4 * cap * sizeof *e->heap);
  e->scap = cap;
  if (!e->sym || !e->rk || !e->nid || !e->prev || !e->next || !e->heap) {
    e->scap = 0;
    e->oom = true;
    return false;
  }
  return true;
}

/* HF's ordering: lowest rank first, then leftmost position. */
static inline bool heap_less(const HeapEnt *a, const HeapEnt *b) {
  return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(HeapEnt *h, size_t *n, HeapEnt x) {
  size_t i = (*n)++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!heap_less(&x, &h[p])) break;
    h[i] = h[p];
    i = p;
  }
  h[i] = x;
}

static HeapEnt heap_pop(HeapEnt *h, size_t *n) {
  HeapEnt top = h[0], x = h[--*n];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    const HeapEnt *best = &x;
    if (l < *n && heap_less(&h[l], best)) m = l, best = &h[l];
    if (r < *n && heap_less(&h[r], best)) m = r;
    if (m == i) break;
    h[i] = h[m];
    i = m;
  }
  if (*n) h[i] = x;
  return top;
}

/* Merges the symbols e->sym[0..n) by rank; returns the new count. */
static size_t bpe_merge(Enc *e, size_t n) {
  const RtTokenizer *t = e->t;
  uint32_t *sym = e->sym, *rk = e->rk, *nid = e->nid;
  if (n < 2) return n;
  if ((int)n <= bpe_linear_max) {
    /* Short words: scan for the lowest rank, leftmost on ties. */
    for (size_t i = 0; i + 1 < n; i++)
      if (!merge_get(t, sym[i], sym[i + 1], &rk[i], &nid[i])) rk[i] = UINT32_MAX;
    for (;;) {
      uint32_t best = UINT32_MAX;
      size_t bi = 0;
      for (size_t i = 0; i + 1 < n; i++)
        if (rk[i] < best) best = rk[i], bi = i;
      if (best == UINT32_MAX) break;
      sym[bi] = nid[bi];
      for (size_t i = bi + 1; i + 1 < n; i++) sym[i] = sym[i + 1], rk[i] = rk[i + 1], nid[i] = nid[i + 1];
      n--;
      if (bi + 1 < n) {
        if (!merge_get(t, sym[bi], sym[bi + 1], &rk[bi], &nid[bi])) rk[bi] = UINT32_MAX;
      } else {
        rk[bi] = UINT32_MAX;
      }
      if (bi > 0 && !merge_get(t, sym[bi - 1], sym[bi], &rk[bi - 1], &nid[bi - 1])) rk[bi - 1] = UINT32_MAX;
    }
    return n;
  }
  /* Long words: a heap of candidate merges over a linked list of symbols,
   * stale entries skipped when popped (HF's Word::merge_all). */
  int32_t *prev = e->prev, *next = e->next;
  HeapEnt *heap = e->heap;
  size_t hn = 0;
  uint32_t *dead = rk; /* rk is free in this mode: 1 = merged away */
  memset(dead, 0, n * sizeof *dead);
  for (size_t i = 0; i < n; i++) prev[i] = (int32_t)i - 1, next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
  for (size_t i = 0; i + 1 < n; i++) {
    uint32_t r, id;
    if (merge_get(t, sym[i], sym[i + 1], &r, &id)) heap_push(heap, &hn, (HeapEnt){r, (uint32_t)i, id});
  }
  while (hn) {
    HeapEnt top = heap_pop(heap, &hn);
    uint32_t p = top.pos;
    if (dead[p] || next[p] < 0) continue;
    uint32_t q = (uint32_t)next[p], r, id;
    if (!merge_get(t, sym[p], sym[q], &r, &id) || id != top.id) continue;
    sym[p] = id;
    dead[q] = 1;
    next[p] = next[q];
    if (next[q] >= 0) prev[next[q]] = (int32_t)p;
    /* room: n - 1 initial entries plus at most 2 per merge < 4 * scap */
    if (prev[p] >= 0 && merge_get(t, sym[prev[p]], sym[p], &r, &id))
      heap_push(heap, &hn, (HeapEnt){r, (uint32_t)prev[p], id});
    if (next[p] >= 0 && merge_get(t, sym[p], sym[next[p]], &r, &id))
      heap_push(heap, &hn, (HeapEnt){r, p, id});
  }
  size_t w = 0;
  for (int32_t i = 0; i >= 0; i = next[i]) sym[w++] = sym[i];
  return w;
}

/* BPE of one word (raw bytes); appends the ids. */
static void bpe_word(Enc *e, const uint8_t *w, size_t n) {
  const RtTokenizer *t = e->t;
  const TokHeader *h = t->h;
  if (n == 1 && h->byte_id[w[0]] >= 0) {
    push_id(e, h->byte_id[w[0]]);
    return;
  }
  struct CacheEnt *ce = NULL;
  uint64_t hash = 0;
  if (n <= CACHE_WORD && e->cache) {
    hash = XXH3_64bits(w, n) | 1;
    ce = &e->cache[hash & e->cmask];
    if (ce->h == hash && ce->wlen == n && memcmp(ce->w, w, n) == 0) {
      for (int i = 0; i < ce->n; i++) push_id(e, ce->ids[i]);
      return;
    }
  }
  size_t ns = 0;
  int32_t whole = (t->flags & TOK_F_IGNORE_MERGES) ? rt_tok_lookup(t, w, n) : -1;
  if (whole >= 0) {
    if (!scratch(e, 1)) return;
    e->sym[ns++] = (uint32_t)whole;
  } else {
    if (!scratch(e, n)) return;
    /* One symbol per byte; bytes without a token become unk (fused runs
     * with fuse_unk) or vanish, as in HF's BPE::merge_word. */
    bool in_unk = false;
    for (size_t i = 0; i < n; i++) {
      int32_t id = h->byte_id[w[i]];
      if (id >= 0) {
        e->sym[ns++] = (uint32_t)id;
        in_unk = false;
      } else if (t->unk >= 0) {
        if (!(in_unk && (t->flags & TOK_F_FUSE_UNK))) e->sym[ns++] = (uint32_t)t->unk;
        in_unk = true;
      }
    }
    ns = bpe_merge(e, ns);
  }
  for (size_t i = 0; i < ns; i++) push_id(e, (int32_t)e->sym[i]);
  if (ce && ns <= CACHE_IDS) {
    ce->h = hash;
    ce->wlen = (uint8_t)n;
    ce->n = (uint8_t)ns;
    memcpy(ce->w, w, n);
    for (size_t i = 0; i < ns; i++) ce->ids[i] = (int32_t)e->sym[i];
  }
}

/* A piece with all added tokens removed: pre-tokenize and BPE. */
static void encode_words(Enc *e, const uint8_t *s, size_t n) {
  if (!n) return;
  if ((e->t->flags & TOK_F_PREFIX_SPACE) && s[0] != ' ') {
    if (n + 1 > e->pcap) {
      uint8_t *p = realloc(e->pbuf, n + 1);
      if (!p) {
        e->oom = true;
        return;
      }
      e->pbuf = p, e->pcap = n + 1;
    }
    e->pbuf[0] = ' ';
    memcpy(e->pbuf + 1, s, n);
    s = e->pbuf, n++;
  }
  if (!(e->t->flags & TOK_F_SPLIT)) {
    bpe_word(e, s, n);
    return;
  }
  for (size_t i = 0; i < n && !e->oom;) {
    size_t j = split_next(s, n, i);
    bpe_word(e, s + i, j - i);
    i = j;
  }
}

/* Longest added token of group g starting at s[0], or NULL. */
static const TokAdded *match_added(const RtTokenizer *t, int g, const uint8_t *s, size_t n) {
  uint8_t c = s[0];
  if (n >= 2 && !(t->pair[g][(c << 5) | (s[1] >> 3)] & (1u << (s[1] & 7)))) {
    if (!t->one[g][c]) return NULL;
  }
  for (uint32_t k = t->aidx[g * 257 + c], end = t->aidx[g * 257 + c + 1]; k < end; k++) {
    const TokAdded *a = &t->added[k];
    if (a->len <= n && memcmp(t->pool + a->off, s, a->len) == 0) return a;
  }
  return NULL;
}

/* Cuts group-g added tokens out of s[0..n), leftmost-longest, and passes
 * the pieces between them on (group 0: to NFC, group 1: to the splitter). */
static void encode_normalized(Enc *e, const uint8_t *s, size_t n);
static void split_added(Enc *e, int g, const uint8_t *s, size_t n) {
  const RtTokenizer *t = e->t;
  size_t start = 0;
  for (size_t i = 0; i < n;) {
    if (!t->first[g][s[i]]) {
      i++;
      continue;
    }
    const TokAdded *a = match_added(t, g, s + i, n - i);
    if (!a) {
      i++;
      continue;
    }
    if (i > start) {
      if (g == 0) encode_normalized(e, s + start, i - start);
      else encode_words(e, s + start, i - start);
    }
    push_id(e, (int32_t)a->id);
    i += a->len;
    start = i;
  }
  if (n > start) {
    if (g == 0) encode_normalized(e, s + start, n - start);
    else encode_words(e, s + start, n - start);
  }
}

/* NFC of a piece (tok_nfc.h), then the normalized added tokens. */
static void encode_normalized(Enc *e, const uint8_t *s, size_t n) {
  size_t m;
  int rc = (e->t->flags & TOK_F_NFC) ? tok_nfc(s, n, &e->nfc, &m) : 0;
  if (rc < 0) e->oom = true;
  else if (rc == 0) split_added(e, 1, s, n);
  else split_added(e, 1, e->nfc.out, m); /* never re-enters encode_normalized */
}

static void enc_free(Enc *e) {
  free(e->sym), free(e->rk), free(e->nid), free(e->prev), free(e->next), free(e->heap);
  free(e->cache), free(e->pbuf);
  tok_nfc_free(&e->nfc);
}

int rt_tok_encode(const RtTokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n_ids,
                  char *err, size_t errlen) {
  *ids = NULL;
  *n_ids = 0;
  const uint8_t *s = (const uint8_t *)text;
  if (len && !s) {
    set_err(err, errlen, "prompt is missing");
    return -1;
  }
  size_t bad = utf8_valid_upto(s, len);
  if (bad < len) {
    set_err(err, errlen, "prompt is not valid UTF-8 at byte %zu", bad);
    return -1;
  }
  Enc e = {.t = t};
  size_t centries = 64;
  while (centries < len / 16 && centries < (1u << 16)) centries *= 2;
  e.cache = calloc(centries, sizeof *e.cache);
  e.cmask = centries - 1;
  split_added(&e, 0, s, len);
  if (e.oom) {
    enc_free(&e);
    free(e.ids);
    set_err(err, errlen, "tokenizer: out of memory");
    return -1;
  }
  enc_free(&e);
  if (!e.ids) e.ids = malloc(sizeof *e.ids); /* a valid pointer even for no ids */
  *ids = e.ids;
  *n_ids = e.n;
  return 0;
}

/* ============================================================== decode === */

int rt_tok_decode(const RtTokenizer *t, const int32_t *ids, size_t n, char **out, size_t *out_len,
                  char *err, size_t errlen) {
  *out = NULL;
  *out_len = 0;
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if (ids[i] < 0 || (uint32_t)ids[i] >= t->n_vocab || t->tok[ids[i]].len == TOK_NO_TOKEN) {
      set_err(err, errlen, "token id %d is not in the vocabulary (0..%u)", ids[i], t->n_vocab - 1);
      return -1;
    }
    total += t->tok[ids[i]].len;
  }
  uint8_t *raw = malloc(total + 1), *res = malloc(3 * total + 1);
  if (!raw || !res) {
    free(raw), free(res);
    set_err(err, errlen, "tokenizer: out of memory");
    return -1;
  }
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    const TokEnt *te = &t->tok[ids[i]];
    memcpy(raw + o, t->pool + te->off, te->len);
    o += te->len;
  }
  size_t m;
  utf8_lossy(raw, total, res, &m, false);
  free(raw);
  res[m] = 0;
  *out = (char *)res;
  *out_len = m;
  return 0;
}

void rt_tok_stream_push(const RtTokenizer *t, RtDecodeStream *s, int32_t id, FILE *out) {
  size_t len;
  const uint8_t *b = rt_tok_token_bytes(t, id, &len);
  if (!b || !len) return; /* HF skips ids it does not know */
  rt_tok_stream_bytes(s, b, len, out);
}

void rt_tok_stream_bytes(RtDecodeStream *s, const uint8_t *b, size_t len, FILE *out) {
  if (!len) return;
  if (s->npend < 0 || s->npend > 3) s->npend = 0; /* a stream that was never zeroed */
  uint8_t small[256], osmall[3 * 256];
  size_t n = (size_t)s->npend + len;
  uint8_t *in = n <= sizeof small ? small : malloc(n);
  uint8_t *o = n <= sizeof small ? osmall : malloc(3 * n);
  if (!in || !o) {
    if (in != small) free(in);
    if (o != osmall) free(o);
    return;
  }
  memcpy(in, s->pend, (size_t)s->npend);
  memcpy(in + s->npend, b, len);
  size_t m, used = utf8_lossy(in, n, o, &m, true);
  if (m) fwrite(o, 1, m, out);
  s->npend = (int)(n - used); /* an unfinished character: at most 3 bytes */
  memcpy(s->pend, in + used, (size_t)s->npend);
  if (in != small) free(in);
  if (o != osmall) free(o);
}

void rt_tok_stream_flush(RtDecodeStream *s, FILE *out) {
  if (s->npend) fwrite("\xEF\xBF\xBD", 1, 3, out);
  s->npend = 0;
}
