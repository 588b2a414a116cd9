/* safetensors.c — maps a model's safetensors files and checks them.
 *
 * Owns: the safetensors header reader (one file, or the shards an index
 * lists), the table of dtypes the header may name, and neox_check_tensors,
 * which knows every tensor a GPT-NeoX checkpoint holds.
 *
 * A file is mapped read-only whole; only its JSON header is copied (to parse
 * it).  Invariants after a successful open, for every tensor: its bytes lie
 * in its file's data section; no two tensors (of non-zero size) share a byte;
 * nbytes == element size x product(shape) whenever the dtype's element size
 * is known (every dtype safetensors defines; a dtype name we do not know at
 * all is kept as ST_OTHER with its byte range checked only); names are
 * unique across all files; the tensor array is sorted by name.
 * Messages always start with the file they are about. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER (100ull << 20) /* as the reference implementation */
#define ST_MAX_INDEX (100ull << 20)
#define ST_MAX_INT 9007199254740992.0 /* 2^53: beyond it JSON numbers are inexact */

struct StFile {
  const char *path;    /* as opened; names the file in messages */
  const uint8_t *map;  /* the whole file, PROT_READ */
  size_t size;
  const uint8_t *data; /* the data section: after the 8-byte length + header */
  uint64_t data_len;
};

/* ------------------------------------------------------------- dtypes --- */

static const struct {
  const char *name;
  int size; /* bytes per element */
  StDtype dt;
} dtypes[] = {
    {"F32", 4, ST_F32},      {"F16", 2, ST_F16},      {"BF16", 2, ST_BF16},
    {"F64", 8, ST_OTHER},    {"I64", 8, ST_OTHER},    {"U64", 8, ST_OTHER},
    {"I32", 4, ST_OTHER},    {"U32", 4, ST_OTHER},    {"I16", 2, ST_OTHER},
    {"U16", 2, ST_OTHER},    {"I8", 1, ST_OTHER},     {"U8", 1, ST_OTHER},
    {"BOOL", 1, ST_OTHER},   {"F8_E4M3", 1, ST_OTHER}, {"F8_E5M2", 1, ST_OTHER},
    {"F8_E8M0", 1, ST_OTHER},
};

const char *st_dtype_name(StDtype d) {
  switch (d) {
  case ST_F32: return "F32";
  case ST_F16: return "F16";
  case ST_BF16: return "BF16";
  case ST_OTHER: return "other";
  }
  return "?";
}

/* ------------------------------------------------------------ helpers --- */

static const char *fmt_shape(char *buf, size_t n, int rank, const int64_t *shape) {
  size_t o = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < rank && o < n; i++)
    o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (o < n) snprintf(buf + o, n - o, "]");
  return buf;
}

/* A JSON number that is an exact non-negative integer <= 2^53. */
static bool get_u53(const cJSON *v, uint64_t *out) {
  if (!cJSON_IsNumber(v)) return false;
  double d = v->valuedouble;
  if (!(d >= 0) || d > ST_MAX_INT || d != floor(d)) return false;
  *out = (uint64_t)d;
  return true;
}

/* Tensors gathered while reading, with what the checks need besides. */
typedef struct {
  StTensor t;
  int fidx;
  uint64_t begin, end; /* data_offsets */
} Ent;

typedef struct {
  Ent *v;
  size_t n, cap;
} EntVec;

static Ent *ent_push(EntVec *ev) {
  if (ev->n == ev->cap) {
    size_t cap = ev->cap ? ev->cap * 2 : 256;
    Ent *nv = realloc(ev->v, cap * sizeof *nv);
    if (!nv) return NULL;
    ev->v = nv;
    ev->cap = cap;
  }
  Ent *p = &ev->v[ev->n++];
  memset(p, 0, sizeof *p);
  return p;
}

/* ------------------------------------------------------- one header --- */

static int parse_entry(StModel *m, int fidx, const cJSON *ent, EntVec *ev, Err *e) {
  const struct StFile *f = &m->files[fidx];
  char nm[256], got[96], s1[128];
  neox_printable(ent->string, nm, sizeof nm);
  if (!cJSON_IsObject(ent))
    return err_set(e, "%s: tensor \"%s\": expected an object with dtype, shape and data_offsets, got %s",
                   f->path, nm, neox_json_describe(ent, got, sizeof got));
  const cJSON *dt = NULL, *sh = NULL, *off = NULL;
  for (const cJSON *c = ent->child; c; c = c->next) {
    const cJSON **slot = strcmp(c->string, "dtype") == 0          ? &dt
                         : strcmp(c->string, "shape") == 0        ? &sh
                         : strcmp(c->string, "data_offsets") == 0 ? &off
                                                                  : NULL;
    if (!slot) continue; /* unknown keys are ignored, as the reference does */
    if (*slot)
      return err_set(e, "%s: tensor \"%s\": key \"%s\" appears twice", f->path, nm, c->string);
    *slot = c;
  }

  if (!cJSON_IsString(dt))
    return err_set(e, "%s: tensor \"%s\": key \"dtype\": expected a string such as \"F16\", got %s",
                   f->path, nm, neox_json_describe(dt, got, sizeof got));
  int esize = 0;
  StDtype dtype = ST_OTHER;
  for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
    if (strcmp(dt->valuestring, dtypes[i].name) == 0) esize = dtypes[i].size, dtype = dtypes[i].dt;

  if (!cJSON_IsArray(sh))
    return err_set(e, "%s: tensor \"%s\": key \"shape\": expected an array of at most 4 non-negative integers, got %s",
                   f->path, nm, neox_json_describe(sh, got, sizeof got));
  int rank = 0;
  int64_t shape[4] = {0};
  uint64_t numel = 1;
  bool numel_ok = true;
  for (const cJSON *c = sh->child; c; c = c->next) {
    if (rank == 4)
      return err_set(e, "%s: tensor \"%s\": key \"shape\": expected at most 4 dims, got %d",
                     f->path, nm, cJSON_GetArraySize(sh));
    uint64_t d;
    if (!get_u53(c, &d))
      return err_set(e, "%s: tensor \"%s\": key \"shape\": expected non-negative integers (at most 2^53), got %s",
                     f->path, nm, neox_json_describe(c, got, sizeof got));
    shape[rank++] = (int64_t)d;
    if (__builtin_mul_overflow(numel, d, &numel)) numel_ok = false;
  }

  uint64_t b, en;
  if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !get_u53(off->child, &b) ||
      !get_u53(off->child->next, &en))
    return err_set(e, "%s: tensor \"%s\": key \"data_offsets\": expected [begin, end] (two non-negative integers), got %s",
                   f->path, nm, neox_json_describe(off, got, sizeof got));
  if (b > en)
    return err_set(e, "%s: tensor \"%s\": data_offsets [%llu, %llu]: begin is after end",
                   f->path, nm, (unsigned long long)b, (unsigned long long)en);
  if (en > f->data_len)
    return err_set(e, "%s: tensor \"%s\": data_offsets [%llu, %llu] run past the end of the data section (%llu bytes)",
                   f->path, nm, (unsigned long long)b, (unsigned long long)en,
                   (unsigned long long)f->data_len);
  if (esize) {
    uint64_t want;
    if (!numel_ok || __builtin_mul_overflow(numel, (uint64_t)esize, &want))
      return err_set(e, "%s: tensor \"%s\": shape %s is too large (byte size overflows 64 bits)",
                     f->path, nm, fmt_shape(s1, sizeof s1, rank, shape));
    if (want != en - b)
      return err_set(e, "%s: tensor \"%s\": dtype %s x shape %s is %llu bytes, but data_offsets [%llu, %llu] hold %llu",
                     f->path, nm, dt->valuestring, fmt_shape(s1, sizeof s1, rank, shape),
                     (unsigned long long)want, (unsigned long long)b, (unsigned long long)en,
                     (unsigned long long)(en - b));
  }

  Ent *p = ent_push(ev);
  if (!p) return err_set(e, "%s: out of memory", f->path);
  p->t.name = arena_strdup(&m->arena, ent->string);
  p->t.dtype = dtype;
  p->t.rank = rank;
  memcpy(p->t.shape, shape, sizeof shape);
  p->t.data = f->data + b;
  p->t.nbytes = en - b;
  p->t.file = f->path;
  p->t.dtype_str = arena_strdup(&m->arena, dt->valuestring);
  p->fidx = fidx;
  p->begin = b;
  p->end = en;
  return 0;
}

/* Maps `path` as m->files[m->n_files] and reads its header into ev. */
static int load_file(StModel *m, const char *path, EntVec *ev, Err *e) {
  struct StFile *f = &m->files[m->n_files];
  f->path = arena_strdup(&m->arena, path);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return err_set(e, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return err_set(e, "%s: not a regular file", path);
  }
  uint64_t size = (uint64_t)st.st_size;
  if (size < 8) {
    close(fd);
    return err_set(e, "%s: file is %llu bytes, too short for a safetensors file (the header length alone is 8)",
                   path, (unsigned long long)size);
  }
  void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  close(fd);
  if (map == MAP_FAILED) return err_set(e, "%s: cannot map: %s", path, strerror(map_errno));
  f->map = map;
  f->size = (size_t)size;
  m->n_files++;

  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | f->map[i];
  if (hlen > ST_MAX_HEADER)
    return err_set(e, "%s: header length %llu is over the 100 MB limit; not a safetensors file?",
                   path, (unsigned long long)hlen);
  if (hlen > size - 8)
    return err_set(e, "%s: header length %llu runs past the end of the file (%llu bytes)",
                   path, (unsigned long long)hlen, (unsigned long long)size);
  f->data = f->map + 8 + hlen;
  f->data_len = size - 8 - hlen;

  cJSON *root = neox_json_parse((const char *)f->map + 8, (size_t)hlen, path, 8, e);
  if (!root) return -1;
  int rc = 0;
  if (!cJSON_IsObject(root)) {
    char got[96];
    rc = err_set(e, "%s: header: expected a JSON object, got %s", path,
                 neox_json_describe(root, got, sizeof got));
  }
  int fidx = m->n_files - 1;
  for (const cJSON *c = rc ? NULL : root->child; c && rc == 0; c = c->next) {
    if (strcmp(c->string, "__metadata__") == 0) continue;
    rc = parse_entry(m, fidx, c, ev, e);
  }
  cJSON_Delete(root);
  return rc;
}

/* ---------------------------------------------- checks across a model --- */

static int cmp_ent_name(const void *a, const void *b) {
  return strcmp(((const Ent *)a)->t.name, ((const Ent *)b)->t.name);
}

static int cmp_ent_span(const void *pa, const void *pb) {
  const Ent *a = *(const Ent *const *)pa, *b = *(const Ent *const *)pb;
  if (a->fidx != b->fidx) return a->fidx < b->fidx ? -1 : 1;
  if (a->begin != b->begin) return a->begin < b->begin ? -1 : 1;
  if (a->end != b->end) return a->end < b->end ? -1 : 1;
  return 0;
}

/* Sorts by name, refuses duplicate names and overlapping byte ranges, and
 * moves the tensors into the model's arena. */
static int finish(StModel *m, EntVec *ev, Err *e) {
  char n1[256], n2[256];
  if (ev->n > (size_t)INT32_MAX) return err_set(e, "%s: too many tensors", m->source);
  if (ev->n) qsort(ev->v, ev->n, sizeof *ev->v, cmp_ent_name);
  for (size_t i = 1; i < ev->n; i++) {
    const Ent *a = &ev->v[i - 1], *b = &ev->v[i];
    if (strcmp(a->t.name, b->t.name) != 0) continue;
    if (a->fidx == b->fidx)
      return err_set(e, "%s: tensor \"%s\" appears twice in the header", a->t.file,
                     neox_printable(a->t.name, n1, sizeof n1));
    return err_set(e, "%s: tensor \"%s\" is also in %s (duplicate tensor name across shards)",
                   b->t.file, neox_printable(a->t.name, n1, sizeof n1), a->t.file);
  }

  Ent **byspan = malloc((ev->n ? ev->n : 1) * sizeof *byspan);
  if (!byspan) return err_set(e, "%s: out of memory", m->source);
  size_t k = 0;
  for (size_t i = 0; i < ev->n; i++)
    if (ev->v[i].end > ev->v[i].begin) byspan[k++] = &ev->v[i];
  qsort(byspan, k, sizeof *byspan, cmp_ent_span);
  for (size_t i = 1; i < k; i++) {
    /* Sorted by begin: the latest-ending earlier span is enough to compare,
     * and with no overlap so far that is simply the previous one. */
    const Ent *a = byspan[i - 1], *b = byspan[i];
    if (a->fidx == b->fidx && b->begin < a->end) {
      int rc = err_set(e, "%s: tensors \"%s\" [%llu, %llu) and \"%s\" [%llu, %llu) overlap in the data section",
                       a->t.file, neox_printable(a->t.name, n1, sizeof n1), (unsigned long long)a->begin,
                       (unsigned long long)a->end, neox_printable(b->t.name, n2, sizeof n2),
                       (unsigned long long)b->begin, (unsigned long long)b->end);
      free(byspan);
      return rc;
    }
  }
  free(byspan);

  m->n_tensors = (int)ev->n;
  m->tensors = arena_alloc(&m->arena, (ev->n ? ev->n : 1) * sizeof *m->tensors);
  for (size_t i = 0; i < ev->n; i++) m->tensors[i] = ev->v[i].t;
  return 0;
}

static int open_one(const char *path, StModel *m, Err *e) {
  m->files = arena_alloc(&m->arena, sizeof *m->files);
  m->source = arena_strdup(&m->arena, path);
  EntVec ev = {0};
  int rc = load_file(m, path, &ev, e);
  if (rc == 0) rc = finish(m, &ev, e);
  free(ev.v);
  return rc;
}

int st_open_file(const char *path, StModel *m, Err *e) {
  memset(m, 0, sizeof *m);
  if (open_one(path, m, e) == 0) return 0;
  st_close(m);
  return -1;
}

/* ------------------------------------------------------------ sharded --- */

static char *read_small(const char *path, size_t limit, size_t *len, Err *e) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    err_set(e, "%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > limit) {
    close(fd);
    err_set(e, "%s: not a regular file of at most %zu bytes", path, limit);
    return NULL;
  }
  size_t n = (size_t)st.st_size, got = 0;
  char *buf = malloc(n + 1);
  while (buf && got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      err_set(e, "%s: cannot read: %s", path, r < 0 ? strerror(errno) : "file shrank while reading");
      free(buf);
      close(fd);
      return NULL;
    }
    got += (size_t)r;
  }
  close(fd);
  if (!buf) err_set(e, "%s: out of memory", path);
  *len = n;
  return buf;
}

/* A plain file name in the model folder: no path, no control characters
 * (they would reach messages), ending in .safetensors. */
static bool shard_name_ok(const char *s) {
  size_t n = strlen(s);
  if (n <= 12 || n > 255 || strcmp(s + n - 12, ".safetensors") != 0) return false;
  for (size_t i = 0; i < n; i++)
    if (s[i] == '/' || (unsigned char)s[i] < 0x20 || s[i] == 0x7f) return false;
  return true;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Reads the index, maps each distinct shard once, and checks that the index
 * and the shards agree tensor for tensor. */
static int open_sharded(const char *dir, const char *idx_path, StModel *m, Err *e) {
  char n1[256], n2[256], got[96];
  m->source = arena_strdup(&m->arena, idx_path);
  size_t len;
  char *text = read_small(idx_path, ST_MAX_INDEX, &len, e);
  if (!text) return -1;
  cJSON *root = neox_json_parse(text, len, idx_path, 0, e);
  free(text);
  if (!root) return -1;

  int rc = -1;
  const char **names = NULL, **shards = NULL;
  EntVec ev = {0};
  const cJSON *wm = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
  if (!cJSON_IsObject(root)) {
    err_set(e, "%s: expected a JSON object at the top level, got %s", idx_path,
            neox_json_describe(root, got, sizeof got));
    goto out;
  }
  if (!cJSON_IsObject(wm)) {
    err_set(e, "%s: key \"weight_map\": expected an object {tensor name: shard file}, got %s",
            idx_path, neox_json_describe(wm, got, sizeof got));
    goto out;
  }
  size_t n = 0;
  for (const cJSON *c = wm->child; c; c = c->next) n++;
  if (n == 0) {
    err_set(e, "%s: key \"weight_map\" is empty", idx_path);
    goto out;
  }
  names = malloc(n * sizeof *names);
  shards = malloc(n * sizeof *shards);
  if (!names || !shards) {
    err_set(e, "%s: out of memory", idx_path);
    goto out;
  }
  size_t i = 0;
  for (const cJSON *c = wm->child; c; c = c->next, i++) {
    const char *s = cJSON_IsString(c) ? c->valuestring : NULL;
    if (!s || !shard_name_ok(s)) {
      err_set(e, "%s: weight_map[\"%s\"]: expected a shard file name in the same folder (\"*.safetensors\"), got %s",
              idx_path, neox_printable(c->string, n1, sizeof n1), neox_json_describe(c, got, sizeof got));
      goto out;
    }
    names[i] = c->string;
    shards[i] = s;
  }
  qsort(names, n, sizeof *names, cmp_str);
  for (i = 1; i < n; i++)
    if (strcmp(names[i - 1], names[i]) == 0) {
      err_set(e, "%s: weight_map lists tensor \"%s\" twice", idx_path, neox_printable(names[i], n1, sizeof n1));
      goto out;
    }
  qsort(shards, n, sizeof *shards, cmp_str);
  size_t ns = 0;
  for (i = 0; i < n; i++)
    if (ns == 0 || strcmp(shards[ns - 1], shards[i]) != 0) shards[ns++] = shards[i];

  m->files = arena_alloc(&m->arena, ns * sizeof *m->files);
  for (i = 0; i < ns; i++) {
    char *p = arena_printf(&m->arena, "%s/%s", dir, shards[i]);
    if (load_file(m, p, &ev, e)) goto out;
  }
  if (finish(m, &ev, e)) goto out;

  /* Every listed tensor is in the shard the index names... */
  for (const cJSON *c = wm->child; c; c = c->next) {
    const StTensor *t = st_find(m, c->string);
    char *want = arena_printf(&m->arena, "%s/%s", dir, c->valuestring);
    if (!t) {
      err_set(e, "%s: index lists tensor \"%s\" in %s, but that shard does not contain it",
              idx_path, neox_printable(c->string, n1, sizeof n1), neox_printable(c->valuestring, n2, sizeof n2));
      goto out;
    }
    if (strcmp(t->file, want) != 0) {
      err_set(e, "%s: index lists tensor \"%s\" in %s, but it is in %s", idx_path,
              neox_printable(c->string, n1, sizeof n1), neox_printable(c->valuestring, n2, sizeof n2), t->file);
      goto out;
    }
  }
  /* ...and, the names being unique on both sides, equal counts mean no
   * shard holds a tensor the index does not list. */
  if ((size_t)m->n_tensors != n) {
    for (int k = 0; k < m->n_tensors; k++)
      if (!bsearch(&m->tensors[k].name, names, n, sizeof *names, cmp_str)) {
        err_set(e, "%s: tensor \"%s\" is not listed in %s", m->tensors[k].file,
                neox_printable(m->tensors[k].name, n1, sizeof n1), idx_path);
        goto out;
      }
  }
  rc = 0;
out:
  free(names);
  free(shards);
  free(ev.v);
  cJSON_Delete(root);
  return rc;
}

int st_open_dir(const char *dir, StModel *m, Err *e) {
  memset(m, 0, sizeof *m);
  struct stat st;
  if (stat(dir, &st) != 0)
    return err_set(e, "%s: cannot open model folder: %s", dir, strerror(errno));
  if (!S_ISDIR(st.st_mode)) return err_set(e, "%s: not a directory (expected a model folder)", dir);

  size_t dl = strlen(dir);
  while (dl > 1 && dir[dl - 1] == '/') dl--;
  char *d = arena_printf(&m->arena, "%.*s", (int)dl, dir);
  char *idx = arena_printf(&m->arena, "%s/model.safetensors.index.json", d);
  char *one = arena_printf(&m->arena, "%s/model.safetensors", d);
  int rc;
  if (stat(idx, &st) == 0 || errno != ENOENT) {
    rc = open_sharded(d, idx, m, e);
  } else if (stat(one, &st) == 0 || errno != ENOENT) {
    rc = open_one(one, m, e);
  } else {
    char *bin = arena_printf(&m->arena, "%s/pytorch_model.bin", d);
    char *binidx = arena_printf(&m->arena, "%s/pytorch_model.bin.index.json", d);
    bool has_bin = stat(bin, &st) == 0 || stat(binidx, &st) == 0;
    rc = err_set(e, "%s: no weights: looked for model.safetensors and model.safetensors.index.json%s",
                 d, has_bin ? " (found pytorch_model.bin; only safetensors weights are supported: convert them first)" : "");
  }
  if (rc) st_close(m);
  return rc;
}

/* ------------------------------------------------------------- lookup --- */

const StTensor *st_find(const StModel *m, const char *name) {
  int lo = 0, hi = m->n_tensors - 1;
  while (lo <= hi) {
    int mid = lo + (hi - lo) / 2;
    int c = strcmp(name, m->tensors[mid].name);
    if (c == 0) return &m->tensors[mid];
    if (c < 0) hi = mid - 1;
    else lo = mid + 1;
  }
  return NULL;
}

void st_close(StModel *m) {
  for (int i = 0; i < m->n_files; i++)
    if (m->files[i].map) munmap((void *)m->files[i].map, m->files[i].size);
  arena_free(&m->arena);
  memset(m, 0, sizeof *m);
}

/* ---------------------------------------------- GPT-NeoX tensor list --- */

typedef struct {
  const NeoxConfig *cfg;
  const StModel *m;
  Err *e;
  unsigned char *seen;
} Chk;

/* "gpt_neox.layers.<i>." -> i and the rest; -1 if the name is not a
 * canonical layer name. */
static long layer_of(const char *name, const char **rest) {
  static const char pre[] = "gpt_neox.layers.";
  if (strncmp(name, pre, sizeof pre - 1) != 0) return -1;
  const char *p = name + sizeof pre - 1;
  long i = 0;
  int nd = 0;
  while (*p >= '0' && *p <= '9' && nd < 9) i = i * 10 + (*p++ - '0'), nd++;
  if (nd == 0 || *p != '.' || (nd > 1 && p[-nd] == '0')) return -1;
  *rest = p + 1;
  return i;
}

static int expect(Chk *k, const char *name, int rank, int64_t d0, int64_t d1, const char *hint) {
  const StModel *m = k->m;
  int64_t want[4] = {d0, d1};
  char s1[64], s2[128], nm[256];
  const StTensor *t = st_find(m, name);
  if (!t)
    return err_set(k->e, "%s: missing tensor \"%s\" (expected shape %s)%s", m->source, name,
                   fmt_shape(s1, sizeof s1, rank, want), hint);
  k->seen[t - m->tensors] = 1;
  bool same = t->rank == rank;
  for (int i = 0; same && i < rank; i++) same = t->shape[i] == want[i];
  if (!same)
    return err_set(k->e, "%s: tensor \"%s\": expected shape %s, got %s", t->file, name,
                   fmt_shape(s1, sizeof s1, rank, want), fmt_shape(s2, sizeof s2, t->rank, t->shape));
  if (t->dtype == ST_OTHER)
    return err_set(k->e, "%s: tensor \"%s\" has dtype %s, supported: F32, F16, BF16", t->file, name,
                   neox_printable(t->dtype_str, nm, sizeof nm));
  return 0;
}

/* Buffers old checkpoints saved that carry no weights. */
static bool ignorable(const Chk *k, const char *name) {
  if (strcmp(name, "gpt_neox.rotary_emb.inv_freq") == 0) return true;
  if (k->cfg->tie_word_embeddings && strcmp(name, "embed_out.weight") == 0) return true;
  const char *rest;
  long l = layer_of(name, &rest);
  return l >= 0 && l < k->cfg->num_hidden_layers &&
         (strcmp(rest, "attention.bias") == 0 || strcmp(rest, "attention.masked_bias") == 0 ||
          strcmp(rest, "attention.rotary_emb.inv_freq") == 0);
}

int neox_check_tensors(const NeoxConfig *cfg, const StModel *m, Err *e) {
  const char *src = m->source ? m->source : "model";
  char nm[256];
  if (m->n_tensors == 0) return err_set(e, "%s: contains no tensors", src);
  bool neox = false;
  for (int i = 0; i < m->n_tensors && !neox; i++)
    neox = strncmp(m->tensors[i].name, "gpt_neox.", 9) == 0;
  if (!neox)
    return err_set(e, "%s: no tensor is named gpt_neox.* (first is \"%s\"); not a GPT-NeoX model",
                   src, neox_printable(m->tensors[0].name, nm, sizeof nm));

  Chk k = {cfg, m, e, calloc((size_t)m->n_tensors, 1)};
  if (!k.seen) return err_set(e, "%s: out of memory", src);
  int64_t D = cfg->hidden_size, F = cfg->intermediate_size, V = cfg->vocab_size;
  const char *bias_hint = " (config.json has attention_bias true)";
  int rc = expect(&k, "gpt_neox.embed_in.weight", 2, V, D, "");
  for (int l = 0; rc == 0 && l < cfg->num_hidden_layers; l++) {
    static const struct {
      const char *name;
      int rank;
      char d0, d1; /* D, F or 3 (3D) */
      bool bias;   /* present only with attention_bias */
    } per_layer[] = {
        {"input_layernorm.weight", 1, 'D', 0, 0},
        {"input_layernorm.bias", 1, 'D', 0, 0},
        {"post_attention_layernorm.weight", 1, 'D', 0, 0},
        {"post_attention_layernorm.bias", 1, 'D', 0, 0},
        {"attention.query_key_value.weight", 2, '3', 'D', 0},
        {"attention.query_key_value.bias", 1, '3', 0, 1},
        {"attention.dense.weight", 2, 'D', 'D', 0},
        {"attention.dense.bias", 1, 'D', 0, 1},
        {"mlp.dense_h_to_4h.weight", 2, 'F', 'D', 0},
        {"mlp.dense_h_to_4h.bias", 1, 'F', 0, 0},
        {"mlp.dense_4h_to_h.weight", 2, 'D', 'F', 0},
        {"mlp.dense_4h_to_h.bias", 1, 'D', 0, 0},
    };
    for (size_t j = 0; rc == 0 && j < sizeof per_layer / sizeof per_layer[0]; j++) {
      if (per_layer[j].bias && !cfg->attention_bias) continue;
      int64_t d[2];
      for (int a = 0; a < 2; a++) {
        char c = a ? per_layer[j].d1 : per_layer[j].d0;
        d[a] = c == 'D' ? D : c == 'F' ? F : c == '3' ? 3 * D : 0;
      }
      char name[128];
      snprintf(name, sizeof name, "gpt_neox.layers.%d.%s", l, per_layer[j].name);
      rc = expect(&k, name, per_layer[j].rank, d[0], d[1], per_layer[j].bias ? bias_hint : "");
    }
  }
  if (rc == 0) rc = expect(&k, "gpt_neox.final_layer_norm.weight", 1, D, 0, "");
  if (rc == 0) rc = expect(&k, "gpt_neox.final_layer_norm.bias", 1, D, 0, "");
  if (rc == 0 && !cfg->tie_word_embeddings)
    rc = expect(&k, "embed_out.weight", 2, V, D, " (config.json has tie_word_embeddings false)");

  for (int i = 0; rc == 0 && i < m->n_tensors; i++) {
    const char *name = m->tensors[i].name, *rest;
    if (k.seen[i] || ignorable(&k, name)) continue;
    char hint[96] = "";
    long l = layer_of(name, &rest);
    if (l >= cfg->num_hidden_layers)
      snprintf(hint, sizeof hint, " (config.json has num_hidden_layers %d)", cfg->num_hidden_layers);
    else if (l >= 0 && !cfg->attention_bias &&
             (strcmp(rest, "attention.query_key_value.bias") == 0 ||
              strcmp(rest, "attention.dense.bias") == 0))
      snprintf(hint, sizeof hint, " (config.json has attention_bias false)");
    rc = err_set(e, "%s: unexpected tensor \"%s\"%s", m->tensors[i].file, neox_printable(name, nm, sizeof nm), hint);
  }
  free(k.seen);
  return rc;
}
