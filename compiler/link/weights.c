/* weights.c — streams the weights from the mapped safetensors into the
 * executable in the layout the kernels read, evaluating each weight's recipe.
 *
 * Memory stays bounded by CHUNK elements: a tensor is converted a chunk at a
 * time, written, and its source pages are dropped (MADV_DONTNEED on a
 * read-only file mapping only forgets them; the page cache keeps them). */
#include <errno.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include "link.h"
#include "quantize.h"

enum { CHUNK = 1 << 20 };

uint16_t f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u, exp = (x >> 23) & 0xffu, man = x & 0x7fffffu;
  if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u | (man >> 13) : 0));
  int e = (int)exp - 127 + 15;
  if (e >= 31) return (uint16_t)(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return (uint16_t)sign;
    man |= 0x800000u;
    int shift = 14 - e;
    uint32_t h = man >> shift, rem = man & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (h & 1))) h++;
    return (uint16_t)(sign | h);
  }
  uint32_t h = ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++; /* may carry into exp: correct */
  return (uint16_t)(sign | h);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, x;
  if (exp == 0) {
    if (!man) x = sign;
    else {
      float f = ldexpf((float)man, -24);
      memcpy(&x, &f, 4);
      x |= sign;
    }
  } else if (exp == 31) x = sign | 0x7f800000u | (man << 13);
  else x = sign | ((exp + 112) << 23) | (man << 13);
  float f;
  memcpy(&f, &x, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

__attribute__((target("avx,f16c"))) static void f32_to_f16_run_f16c(const float *x, int64_t n, uint16_t *out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i *)(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; i++) out[i] = f32_to_f16(x[i]);
}

void f32_to_f16_run(const float *x, int64_t n, uint16_t *out) {
  static int f16c = -1;
  if (f16c < 0) {
    __builtin_cpu_init();
    f16c = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  }
  if (f16c) f32_to_f16_run_f16c(x, n, out);
  else
    for (int64_t i = 0; i < n; i++) out[i] = f32_to_f16(x[i]);
}

float bf16_to_f32(uint16_t h) {
  uint32_t x = (uint32_t)h << 16;
  float f;
  memcpy(&f, &x, 4);
  return f;
}


static int st_matches(StDtype s, DType d) {
  return (s == ST_F32 && d == DT_F32) || (s == ST_F16 && d == DT_F16) || (s == ST_BF16 && d == DT_BF16);
}

static void release(const StTensor *t) {
  uintptr_t a = (uintptr_t)t->data & ~(uintptr_t)4095;
  uintptr_t end = (uintptr_t)t->data + t->nbytes;
  madvise((void *)a, end - a, MADV_DONTNEED);
}

/* The output goes through a staging buffer so that every write() but the
 * last covers whole 2 MiB-aligned stretches of the file: the page cache then
 * keeps the executable in 2 MiB folios (ext4 and other filesystems with large
 * folios size them from the write), which the runtime's MADV_HUGEPAGE mapping
 * maps with 2 MiB entries.  Written in 4 KiB or unaligned pieces, the same
 * file stays in small folios until it is evicted (docs/runtime.md). */
enum { OUT_ALIGN = 2 << 20, OUT_STAGE = 8 << 20 };

typedef struct {
  int fd;
  XXH3_state_t *h;
  uint64_t written;    /* bytes of the blob handed to out_write */
  uint8_t *stage;
  size_t staged, limit; /* bytes in stage; flush when staged reaches limit */
} Out;

static int out_flush(Out *o, Err *e) {
  const uint8_t *b = o->stage;
  size_t n = o->staged;
  while (n) {
    ssize_t w = write(o->fd, b, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return err_set(e, "writing the weights: %s", strerror(errno));
    }
    b += w, n -= (size_t)w;
  }
  o->staged = 0;
  o->limit = OUT_STAGE; /* the file offset is 2 MiB-aligned from the first flush on */
  return 0;
}

static int out_open(Out *o, int fd, uint64_t file_pos) {
  *o = (Out){.fd = fd, .h = XXH3_createState(), .stage = malloc(OUT_STAGE)};
  if (!o->h || !o->stage) return -1;
  XXH3_64bits_reset(o->h);
  /* the first flush ends on the last 2 MiB boundary within OUT_STAGE of file_pos */
  o->limit = (size_t)((file_pos + OUT_STAGE) / OUT_ALIGN * OUT_ALIGN - file_pos);
  return 0;
}

static void out_close(Out *o) {
  XXH3_freeState(o->h);
  free(o->stage);
}

static int out_write(Out *o, const void *p, size_t n, Err *e) {
  const uint8_t *b = p;
  XXH3_64bits_update(o->h, p, n);
  o->written += n;
  while (n) {
    size_t k = o->limit - o->staged < n ? o->limit - o->staged : n;
    memcpy(o->stage + o->staged, b, k);
    o->staged += k, b += k, n -= k;
    if (o->staged == o->limit && out_flush(o, e)) return -1;
  }
  return 0;
}

static int out_zeros(Out *o, uint64_t to, Err *e) {
  static const uint8_t zero[4096];
  while (o->written < to) {
    uint64_t n = to - o->written;
    if (n > sizeof zero) n = sizeof zero;
    if (out_write(o, zero, n, e)) return -1;
  }
  return 0;
}

/* Every half's value as f32, built on first use from f16_to_f32 (256 KiB):
 * a row of f16 weights converts by lookup instead of a branchy function. */
static const float *f16_values(void) {
  static float *table;
  if (!table) {
    table = malloc(65536 * sizeof *table);
    PY_ASSERT(table);
    for (uint32_t h = 0; h < 65536; h++) table[h] = f16_to_f32((uint16_t)h);
  }
  return table;
}

/* Elements [first, first + n) of t as f32: load_src's values, one switch a row. */
static void load_src_run(const StTensor *t, uint64_t first, int64_t n, float *out) {
  switch (t->dtype) {
  case ST_F32: memcpy(out, t->data + 4 * first, (size_t)n * 4); return;
  case ST_F16: {
    const float *v = f16_values();
    const uint8_t *p = t->data + 2 * first;
    for (int64_t k = 0; k < n; k++) {
      uint16_t h;
      memcpy(&h, p + 2 * k, 2);
      out[k] = v[h];
    }
    return;
  }
  case ST_BF16: {
    const uint8_t *p = t->data + 2 * first;
    for (int64_t k = 0; k < n; k++) {
      uint16_t h;
      memcpy(&h, p + 2 * k, 2);
      out[k] = bf16_to_f32(h);
    }
    return;
  }
  default: PY_ASSERT(0);
  }
}

/* Element i of t as f32. */
static float load_src(const StTensor *t, uint64_t i) {
  float f;
  load_src_run(t, i, 1, &f);
  return f;
}

/* n f32 values as dtype d at out, which may be x itself (out's elements
 * are never wider than x's, and each is written after it is read). */
static void store_row(DType d, float *x, int64_t n, uint8_t *out) {
  switch (d) {
  case DT_F32: memmove(out, x, (size_t)n * 4); return;
  case DT_F16: {
    enum { RUN = 256 }; /* through a small buffer: f32_to_f16_run wants distinct arrays */
    uint16_t h[RUN];
    for (int64_t k = 0; k < n; k += RUN) {
      const int64_t len = n - k < RUN ? n - k : RUN;
      f32_to_f16_run(x + k, len, h);
      memcpy(out + 2 * k, h, (size_t)len * 2);
    }
    return;
  }
  case DT_BF16:
    for (int64_t k = 0; k < n; k++) {
      const uint16_t v = f32_to_bf16(x[k]);
      memcpy(out + 2 * k, &v, 2);
    }
    return;
  default: PY_ASSERT(0);
  }
}

/* Row n of matrix weight w as f32, its recipe applied. */
static void weight_row(const Value *w, const StModel *m, int64_t n, const float *gamma, float *row) {
  const StTensor *t = st_find(m, w->recipe == WR_TENSOR ? w->tensor : w->wargs[0]->tensor);
  int64_t K = w->dims[1];
  load_src_run(t, (uint64_t)(n * K), K, row);
  if (w->recipe == WR_FOLD_LN_W)
    for (int64_t k = 0; k < K; k++) row[k] *= gamma[k];
}

/* Panel rows [0, g) of a source stored in the output's dtype (es bytes an
 * element), row-major with K columns, into the panel layout: element (i, k)
 * at k*rn + i, rows g..rn-1 zero.  Bytes are moved, not converted (the same
 * values the f32 round trip gives, for every non-NaN input), in blocks of
 * KB columns so that the block's source lines and its output stay in L1. */
static void pack_panel_raw(uint8_t *dst, const uint8_t *src, int64_t g, int64_t rn, int64_t K, int es) {
  enum { KB = 64 };
  if (g < rn) memset(dst, 0, (size_t)(rn * K * es));
  for (int64_t k0 = 0; k0 < K; k0 += KB) {
    const int64_t k1 = k0 + KB < K ? k0 + KB : K;
    for (int64_t i = 0; i < g; i++) {
      const uint8_t *row = src + (size_t)((i * K) * es);
      if (es == 2)
        for (int64_t k = k0; k < k1; k++) memcpy(dst + (size_t)((k * rn + i) * 2), row + (size_t)(k * 2), 2);
      else
        for (int64_t k = k0; k < k1; k++) memcpy(dst + (size_t)((k * rn + i) * 4), row + (size_t)(k * 4), 4);
    }
  }
}

/* A matrix, row group by row group, converted, folded and packed as its
 * Value says; plain row-major copies of same-dtype tensors go straight
 * from the mapping, and packed ones are moved byte for byte. */
static int write_matrix(Out *o, const Value *w, const StModel *m, uint8_t *buf, Err *e) {
  const StTensor *src = st_find(m, w->recipe == WR_TENSOR ? w->tensor : w->wargs[0]->tensor);
  if (!src) return err_set(e, "tensor \"%s\" is missing", w->recipe == WR_TENSOR ? w->tensor : w->wargs[0]->tensor);
  if (w->recipe == WR_TENSOR && !w->pack_rn && st_matches(src->dtype, w->dtype)) {
    for (uint64_t off = 0; off < src->nbytes; off += (uint64_t)CHUNK * 4) {
      uint64_t len = src->nbytes - off < (uint64_t)CHUNK * 4 ? src->nbytes - off : (uint64_t)CHUNK * 4;
      if (out_write(o, src->data + off, len, e)) return -1;
    }
    release(src);
    return 0;
  }
  const int64_t N = w->dims[0], K = w->dims[1];
  const int rn = w->pack_rn ? w->pack_rn : 1;
  float *gamma = NULL, *rows = malloc(sizeof(float) * (size_t)(K * rn));
  if (w->recipe == WR_FOLD_LN_W) {
    const StTensor *gt = st_find(m, w->wargs[1]->tensor);
    gamma = malloc(sizeof(float) * (size_t)K);
    for (int64_t k = 0; k < K; k++) gamma[k] = load_src(gt, (uint64_t)k);
  }
  int rc = 0;
  if (dtype_is_quant(w->dtype)) { /* quantize.c quantizes and packs each row group */
    PY_ASSERT(w->pack_rn);
    for (int64_t n0 = 0; n0 < N && !rc;) {
      int64_t used = 0;
      do { /* groups of rn rows, the last one zero-padded */
        int g = N - n0 < rn ? (int)(N - n0) : rn;
        for (int i = 0; i < g; i++) weight_row(w, m, n0 + i, gamma, rows + i * K);
        used += quant_pack_group(w->dtype, rn, K, rows, g, buf + used);
        n0 += g;
      } while (n0 < N && used + ir_qgroup_bytes(w->dtype, rn, K) <= (32 << 20));
      rc = out_write(o, buf, (uint64_t)used, e);
    }
    release(src);
    free(rows);
    free(gamma);
    return rc;
  }
  /* panels of rn rows (rn = 1: row-major), element (i, k) of a panel at
   * k*rn + i, the last panel's missing rows zero; the panel's bytes moved
   * from the mapping when the tensor is already in the output dtype, else
   * from its rows converted first (in place: a converted row is never
   * longer); batched into the output buffer up to CHUNK elements */
  const bool moved = w->recipe == WR_TENSOR && st_matches(src->dtype, w->dtype);
  const int es = dtype_size(w->dtype);
  int64_t per_batch = CHUNK / (K * rn) > 0 ? CHUNK / (K * rn) : 1;
  PY_ASSERT((int64_t)rn * K * es <= 64 * 1024 * 1024); /* one panel fits the buffer (write_weights) */
  for (int64_t n0 = 0; n0 < N && !rc;) {
    int64_t in_buf = 0;
    for (int64_t b = 0; b < per_batch && n0 < N; b++) {
      int64_t g = N - n0 < rn ? N - n0 : rn;
      const uint8_t *panel = src->data + (size_t)(n0 * K * es);
      if (!moved) {
        uint8_t *conv = (uint8_t *)rows;
        for (int64_t i = 0; i < g; i++) {
          float *row = rows + i * K;
          weight_row(w, m, n0 + i, gamma, row);
          store_row(w->dtype, row, K, conv + (size_t)(i * K * es));
        }
        panel = conv;
      }
      pack_panel_raw(buf + (size_t)(in_buf * es), panel, g, rn, K, es);
      in_buf += rn * K;
      n0 += g;
    }
    rc = out_write(o, buf, (uint64_t)(in_buf * es), e);
  }
  release(src);
  free(rows);
  free(gamma);
  return rc;
}

/* Folded LayerNorm bias: b'[n] = b[n] + sum_k W[n,k] beta[k], in double. */
static int write_folded_bias(Out *o, const Value *w, const StModel *m, uint8_t *buf, Err *e) {
  const StTensor *W = st_find(m, w->wargs[0]->tensor), *v = st_find(m, w->wargs[1]->tensor);
  const StTensor *b = w->wargs[2] ? st_find(m, w->wargs[2]->tensor) : NULL;
  PY_ASSERT(W && v);
  int64_t N = W->shape[0], K = W->shape[1];
  float *out = (float *)buf;
  for (int64_t n = 0; n < N; n++) {
    double s = b ? load_src(b, (uint64_t)n) : 0.0;
    for (int64_t k = 0; k < K; k++) s += (double)load_src(W, (uint64_t)(n * K + k)) * load_src(v, (uint64_t)k);
    out[n] = (float)s;
  }
  release(W);
  return out_write(o, buf, (uint64_t)N * 4, e);
}

/* A vector (LayerNorm parameters, biases): always f32. */
static int write_vector(Out *o, const Value *w, const StModel *m, uint8_t *buf, Err *e) {
  const StTensor *t = st_find(m, w->tensor);
  if (!t) return err_set(e, "tensor \"%s\" is missing", w->tensor);
  int64_t n = w->dims[0];
  load_src_run(t, 0, n, (float *)buf);
  store_row(w->dtype, (float *)buf, n, buf);
  return out_write(o, buf, (uint64_t)(n * dtype_size(w->dtype)), e);
}

int weights_write(const Graph *g, const StModel *m, int fd, uint64_t file_pos, uint64_t *hash, Err *e) {
  /* weights in blob order */
  int nw = 0;
  const Value **ws = calloc((size_t)g->n_values, sizeof *ws);
  for (int i = 0; i < g->n_values; i++)
    if (g->values[i]->kind == VK_WEIGHT && g->values[i]->offset >= 0) ws[nw++] = g->values[i];
  for (int i = 1; i < nw; i++)
    for (int j = i; j > 0 && ws[j - 1]->offset > ws[j]->offset; j--) {
      const Value *t = ws[j];
      ws[j] = ws[j - 1];
      ws[j - 1] = t;
    }
  uint8_t *buf = malloc((size_t)CHUNK * 4 > 64 * 1024 * 1024 ? (size_t)CHUNK * 4 : 64u * 1024 * 1024);
  Out o;
  if (out_open(&o, fd, file_pos)) {
    out_close(&o);
    free(buf);
    free(ws);
    return err_set(e, "out of memory staging the weights");
  }
  int rc = 0;
  for (int i = 0; i < nw && !rc; i++) {
    const Value *w = ws[i];
    if ((rc = out_zeros(&o, (uint64_t)w->offset, e))) break;
    if (w->recipe == WR_FOLD_LN_B) rc = write_folded_bias(&o, w, m, buf, e);
    else if (w->rank == 1) rc = write_vector(&o, w, m, buf, e);
    else rc = write_matrix(&o, w, m, buf, e);
  }
  if (!rc) rc = out_zeros(&o, (uint64_t)g->weights_bytes, e);
  if (!rc) rc = out_flush(&o, e);
  *hash = XXH3_64bits_digest(o.h);
  out_close(&o);
  free(buf);
  free(ws);
  return rc;
}

uint64_t weights_layout_hash(const Graph *g) {
  XXH3_state_t *h = XXH3_createState();
  XXH3_64bits_reset(h);
  for (int i = 0; i < g->n_values; i++) {
    const Value *v = g->values[i];
    if (v->kind != VK_WEIGHT || v->offset < 0) continue;
    XXH3_64bits_update(h, v->name, strlen(v->name) + 1);
    int64_t rec[8] = {v->dtype, v->rank, v->dims[0], v->rank > 1 ? v->dims[1] : 0, v->offset, v->recipe,
                      v->pack_rn, v->pack_vw};
    XXH3_64bits_update(h, rec, sizeof rec);
  }
  uint64_t r = XXH3_64bits_digest(h);
  XXH3_freeState(h);
  return r;
}
