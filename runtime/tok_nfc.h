/* tok_nfc.h — NFC exactly as Hugging Face tokenizers computes it, shared by
 * the runtime tokenizer and the tokenizer importer (static functions: each
 * includer gets its own copy; nothing here allocates except TokNfc).
 *
 * HF normalizes with unicode-normalization-alignments 0.1.12, whose tables
 * are Unicode 9.0; utf8proc 2.8 has Unicode 15.0.  The data is utf8proc's,
 * minus the code points that 9.0 did not know (tok_nfc_new): for HF those
 * are plain starters.  Checked against HF on every code point with a
 * decomposition or a combining class (docs/tokenizer.md).
 *
 * Input must be valid UTF-8. */
#ifndef RT_TOK_NFC_H
#define RT_TOK_NFC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* Decodes one code point of valid UTF-8 at s (n >= 1 bytes left). */
static inline uint32_t utf8_get(const uint8_t *s, size_t *len) {
  uint8_t c = s[0];
  if (c < 0x80) return *len = 1, c;
  if (c < 0xE0) return *len = 2, ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F);
  if (c < 0xF0) return *len = 3, ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
  return *len = 4, ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
                       ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

static inline size_t utf8_put(uint32_t cp, uint8_t *o) {
  if (cp < 0x80) return o[0] = (uint8_t)cp, 1;
  if (cp < 0x800) return o[0] = (uint8_t)(0xC0 | cp >> 6), o[1] = (uint8_t)(0x80 | (cp & 0x3F)), 2;
  if (cp < 0x10000) {
    o[0] = (uint8_t)(0xE0 | cp >> 12), o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (uint8_t)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (uint8_t)(0xF0 | cp >> 18), o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F)), o[3] = (uint8_t)(0x80 | (cp & 0x3F));
  return 4;
}


/* Code points that utf8proc (Unicode 15.0) normalizes but HF's tables
 * (Unicode 9.0) do not know: combining marks with a non-zero class, and the
 * parts and result of the one canonical composition added since (U+11938).
 * For HF they are plain starters that never decompose or compose. */
static const uint32_t nfc_new[] = {
  0x7FD, 0x898, 0x899, 0x89A, 0x89B, 0x89C, 0x89D, 0x89E, 0x89F, 0x8CA, 0x8CB,
  0x8CC, 0x8CD, 0x8CE, 0x8CF, 0x8D0, 0x8D1, 0x8D2, 0x8D3, 0x9FE, 0xC3C, 0xD3B,
  0xD3C, 0xEBA, 0x1715, 0x1ABF, 0x1AC0, 0x1AC1, 0x1AC2, 0x1AC3, 0x1AC4, 0x1AC5,
  0x1AC6, 0x1AC7, 0x1AC8, 0x1AC9, 0x1ACA, 0x1ACB, 0x1ACC, 0x1ACD, 0x1ACE,
  0x1DF6, 0x1DF7, 0x1DF8, 0x1DF9, 0x1DFA, 0xA82C, 0x10D24, 0x10D25, 0x10D26,
  0x10D27, 0x10EAB, 0x10EAC, 0x10EFD, 0x10EFE, 0x10EFF, 0x10F46, 0x10F47,
  0x10F48, 0x10F49, 0x10F4A, 0x10F4B, 0x10F4C, 0x10F4D, 0x10F4E, 0x10F4F,
  0x10F50, 0x10F82, 0x10F83, 0x10F84, 0x10F85, 0x11070, 0x1133B, 0x1145E,
  0x11839, 0x1183A, 0x11930, 0x11935, 0x11938, 0x1193D, 0x1193E, 0x11943,
  0x119E0, 0x11A34, 0x11A47, 0x11A99, 0x11D42, 0x11D44, 0x11D45, 0x11D97,
  0x11F41, 0x11F42, 0x16FF0, 0x16FF1, 0x1E08F, 0x1E130, 0x1E131, 0x1E132,
  0x1E133, 0x1E134, 0x1E135, 0x1E136, 0x1E2AE, 0x1E2EC, 0x1E2ED, 0x1E2EE,
  0x1E2EF, 0x1E4EC, 0x1E4ED, 0x1E4EE, 0x1E4EF,
};

static bool nfc_is_new(uint32_t cp) {
  size_t lo = 0, hi = sizeof nfc_new / sizeof nfc_new[0];
  if (cp < nfc_new[0]) return false;
  while (lo < hi) {
    size_t m = (lo + hi) / 2;
    if (nfc_new[m] == cp) return true;
    if (nfc_new[m] < cp) lo = m + 1;
    else hi = m;
  }
  return false;
}

static inline int nfc_ccc(uint32_t cp) {
  int c = utf8proc_get_property((utf8proc_int32_t)cp)->combining_class;
  return c && nfc_is_new(cp) ? 0 : c;
}

/* True if NFC leaves cp alone whatever surrounds it and nothing before it
 * can reorder or compose across it: a starter without canonical
 * decomposition that is never the second half of a composition (those are
 * all marks, or Hangul vowel/trailing jamo). */
static bool nfc_inert(uint32_t cp) {
  if (cp < 0x80) return true;
  const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
  if (p->combining_class) return false;
  if (p->decomp_seqindex != UINT16_MAX && p->decomp_type == 0) return false;
  if (p->category == UTF8PROC_CATEGORY_MN || p->category == UTF8PROC_CATEGORY_MC ||
      p->category == UTF8PROC_CATEGORY_ME)
    return false;
  if ((cp >= 0x1161 && cp <= 0x1175) || (cp >= 0x11A8 && cp <= 0x11C2)) return false;
  return true;
}

/* Canonical composition of a pair, or 0. */
static uint32_t nfc_compose(uint32_t a, uint32_t b) {
  if (nfc_is_new(a) || nfc_is_new(b)) return 0;
  utf8proc_int32_t buf[2] = {(utf8proc_int32_t)a, (utf8proc_int32_t)b};
  if (utf8proc_normalize_utf32(buf, 2, UTF8PROC_COMPOSE | UTF8PROC_STABLE) != 1) return 0;
  return nfc_is_new((uint32_t)buf[0]) ? 0 : (uint32_t)buf[0];
}

typedef struct {
  uint32_t *cp;
  size_t n, cap;
} CpVec;

static bool cp_push(CpVec *v, uint32_t c) {
  if (v->n == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 64;
    uint32_t *p = realloc(v->cp, cap * sizeof *p);
    if (!p) return false;
    v->cp = p, v->cap = cap;
  }
  v->cp[v->n++] = c;
  return true;
}

/* Full NFC of the region s[0..n): decompose, order marks, compose.  Writes
 * UTF-8 to out (room for 3n + 16 bytes); returns its length or -1. */
static long nfc_region(const uint8_t *s, size_t n, CpVec *v, uint8_t *out) {
  v->n = 0;
  for (size_t i = 0; i < n;) {
    size_t k;
    uint32_t cp = utf8_get(s + i, &k);
    i += k;
    if (cp < 0x80 || nfc_is_new(cp)) {
      if (!cp_push(v, cp)) return -1;
      continue;
    }
    utf8proc_int32_t d[32];
    int bc = 0;
    utf8proc_ssize_t m = utf8proc_decompose_char((utf8proc_int32_t)cp, d, 32, UTF8PROC_DECOMPOSE, &bc);
    if (m < 1 || m > 32) d[0] = (utf8proc_int32_t)cp, m = 1;
    for (utf8proc_ssize_t j = 0; j < m; j++)
      if (!cp_push(v, (uint32_t)d[j])) return -1;
  }
  /* canonical ordering: stable insertion sort inside runs of non-starters */
  uint32_t *c = v->cp;
  for (size_t i = 1; i < v->n; i++) {
    int ci = nfc_ccc(c[i]);
    if (!ci) continue;
    size_t j = i;
    uint32_t x = c[i];
    while (j > 0) {
      int cj = nfc_ccc(c[j - 1]);
      if (cj <= ci) break;
      c[j] = c[j - 1];
      j--;
    }
    c[j] = x;
  }
  /* canonical composition */
  size_t w = 0;
  long starter = -1;
  int maxc = -1;
  for (size_t i = 0; i < v->n; i++) {
    uint32_t x = c[i];
    int cc = nfc_ccc(x);
    if (starter >= 0 && cc > maxc) {
      uint32_t y = nfc_compose(c[starter], x);
      if (y) {
        c[starter] = y;
        continue;
      }
    }
    c[w] = x;
    if (cc) {
      if (cc > maxc) maxc = cc;
    } else {
      starter = (long)w, maxc = -1;
    }
    w++;
  }
  size_t o = 0;
  for (size_t i = 0; i < w; i++) o += utf8_put(c[i], out + o);
  return (long)o;
}

/* Reusable output buffer of tok_nfc. */
typedef struct {
  uint8_t *out;
  size_t cap;
  CpVec cps;
} TokNfc;

static void tok_nfc_free(TokNfc *b) {
  free(b->out);
  free(b->cps.cp);
  b->out = NULL, b->cap = 0;
  b->cps.cp = NULL, b->cps.n = b->cps.cap = 0;
}

/* NFC of s[0..n).  Returns 0 if s is already NFC (nothing written), 1 with
 * the result in b->out[0..*out_len), or -1 when out of memory.  Text NFC
 * leaves alone (all of ASCII, most of everything else) is only scanned; the
 * regions around characters that may change are rebuilt. */
static int tok_nfc(const uint8_t *s, size_t n, TokNfc *b, size_t *out_len) {
  size_t o = 0, copied = 0, last_inert = 0;
  bool changed = false;
  for (size_t i = 0; i < n;) {
    if (s[i] < 0x80) {
      last_inert = i++;
      continue;
    }
    size_t k;
    uint32_t cp = utf8_get(s + i, &k);
    if (nfc_inert(cp)) {
      last_inert = i;
      i += k;
      continue;
    }
    /* a region from the last inert character to the next one */
    size_t start = last_inert > copied ? last_inert : copied;
    size_t j = i + k;
    while (j < n) {
      if (s[j] < 0x80) break;
      uint32_t c2 = utf8_get(s + j, &k);
      if (nfc_inert(c2)) break;
      j += k;
    }
    if (!changed) {
      size_t need = 3 * n + 16; /* NFC grows UTF-8 at most threefold */
      if (need > b->cap) {
        free(b->out);
        b->out = malloc(need);
        b->cap = b->out ? need : 0;
        if (!b->out) return -1;
      }
      changed = true;
    }
    memcpy(b->out + o, s + copied, start - copied);
    o += start - copied;
    long m = nfc_region(s + start, j - start, &b->cps, b->out + o);
    if (m < 0) return -1;
    o += (size_t)m;
    copied = last_inert = j;
    i = j;
  }
  if (!changed) return 0;
  memcpy(b->out + o, s + copied, n - copied);
  *out_len = o + (n - copied);
  return 1;
}

#endif
