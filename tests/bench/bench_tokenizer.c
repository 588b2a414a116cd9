/* bench_tokenizer.c — tokenizer speed: rt_tok_open on a mapped blob, and
 * single-thread encode MB/s on English prose and on C code.  Not part of the
 * test suite; build and run it as docs/tokenizer.md says:
 *
 *   gcc -O2 -std=gnu17 -I. -Iruntime tests/bench/bench_tokenizer.c \
 *       compiler/frontend/tokenizer_import.c compiler/frontend/config.c \
 *       ir/base.c runtime/tokenizer.c -lcjson \
 *       /usr/lib/x86_64-linux-gnu/libutf8proc.a \
 *       /usr/lib/x86_64-linux-gnu/libxxhash.a -lm -o /tmp/bench_tokenizer
 *   /tmp/bench_tokenizer [path/to/tokenizer.json]
 *
 * Texts: English = every file of /usr/share/common-licenses and every
 * /usr/share/doc/PKG/copyright; code = every /usr/include/NAME.h; each is
 * repeated to at least 4 MiB, and files that are not valid UTF-8 are left
 * out.  Each text is encoded whole and in
 * 4 KiB prompts (the per-call word cache starts cold for each), and decoded. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "compiler/frontend/tokenizer_import.h"
#include "runtime/tokenizer.h"

#define MIN_TEXT (4u << 20)

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct {
  char *p;
  size_t n, cap;
} Text;

static void append(Text *t, const char *s, size_t n) {
  if (t->n + n > t->cap) {
    while (t->cap < t->n + n) t->cap = t->cap ? t->cap * 2 : 1 << 20;
    t->p = realloc(t->p, t->cap);
  }
  memcpy(t->p + t->n, s, n);
  t->n += n;
}

static int valid_utf8(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned c = s[i];
    size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!k || i + k > n || (k > 1 && c < 0xC2)) return 0;
    for (size_t j = 1; j < k; j++)
      if ((s[i + j] & 0xC0) != 0x80) return 0;
    i += k;
  }
  return 1;
}

static void add_file(Text *t, const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return;
  struct stat st;
  if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode) || st.st_size > (8 << 20)) {
    fclose(f);
    return;
  }
  char *buf = malloc((size_t)st.st_size + 1);
  size_t n = fread(buf, 1, (size_t)st.st_size, f);
  fclose(f);
  if (valid_utf8((unsigned char *)buf, n)) append(t, buf, n);
  free(buf);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Adds dir/<entry><suffix> for every entry, in name order. */
static void add_dir(Text *t, const char *dir, const char *suffix, int want_dirs) {
  DIR *d = opendir(dir);
  if (!d) return;
  char **names = NULL;
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    size_t l = strlen(e->d_name), sl = strlen(suffix);
    if (!want_dirs && sl && (l < sl || strcmp(e->d_name + l - sl, suffix))) continue;
    names = realloc(names, (n + 1) * sizeof *names);
    names[n++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, n, sizeof *names, cmp_str);
  for (size_t i = 0; i < n; i++) {
    char path[4096];
    if (want_dirs) snprintf(path, sizeof path, "%s/%s/%s", dir, names[i], suffix);
    else snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    add_file(t, path);
    free(names[i]);
  }
  free(names);
}

static void repeat_to(Text *t, size_t min) {
  size_t base = t->n;
  if (!base) return;
  while (t->n < min) append(t, t->p, base < min - t->n ? base : min - t->n);
  /* never cut a character in two */
  while (t->n && ((unsigned char)t->p[t->n - 1] & 0xC0) == 0x80) t->n--;
  while (t->n && (unsigned char)t->p[t->n - 1] >= 0xC0) t->n--;
}

static void bench(const RtTokenizer *tok, const char *name, const Text *t) {
  char err[256];
  double best = 1e9, best_chunk = 1e9, best_dec = 1e9;
  size_t n_ids = 0;
  for (int r = 0; r < 3; r++) {
    int32_t *ids;
    size_t n;
    double t0 = now_s();
    if (rt_tok_encode(tok, t->p, t->n, &ids, &n, err, sizeof err)) {
      fprintf(stderr, "%s: %s\n", name, err);
      exit(1);
    }
    double t1 = now_s();
    char *out;
    size_t on;
    rt_tok_decode(tok, ids, n, &out, &on, err, sizeof err);
    double t2 = now_s();
    if (on != t->n) fprintf(stderr, "%s: decode gives %zu bytes, text has %zu (NFC changed it?)\n", name, on, t->n);
    free(out);
    free(ids);
    n_ids = n;
    if (t1 - t0 < best) best = t1 - t0;
    if (t2 - t1 < best_dec) best_dec = t2 - t1;
    /* 4 KiB prompts, cut at a character boundary */
    t0 = now_s();
    for (size_t off = 0; off < t->n;) {
      size_t len = t->n - off < 4096 ? t->n - off : 4096;
      while (off + len < t->n && ((unsigned char)t->p[off + len] & 0xC0) == 0x80) len--;
      if (rt_tok_encode(tok, t->p + off, len, &ids, &n, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", name, err);
        exit(1);
      }
      free(ids);
      off += len;
    }
    t1 = now_s();
    if (t1 - t0 < best_chunk) best_chunk = t1 - t0;
  }
  double mb = (double)t->n / 1e6;
  printf("%-8s %6.2f MB, %8zu tokens (%.2f bytes/token): encode %6.1f MB/s whole, %6.1f MB/s in 4 KiB prompts; "
         "decode %6.0f MB/s\n",
         name, mb, n_ids, (double)t->n / (double)n_ids, mb / best, mb / best_chunk, mb / best_dec);
}

int main(int argc, char **argv) {
  char def[1024];
  const char *shared = getenv("SHARED_DIR");
  snprintf(def, sizeof def, "%s/tokenizer/tokenizer.json", shared && *shared ? shared : "../shared");
  const char *path = argc > 1 ? argv[1] : def;

  uint8_t *blob;
  size_t size;
  Err e = {0};
  double t0 = now_s();
  if (tok_import_file(path, &blob, &size, &e)) {
    fprintf(stderr, "%s\n", e.msg);
    return 1;
  }
  double t1 = now_s();
  printf("import: %.0f ms, blob %.2f MB\n", (t1 - t0) * 1e3, (double)size / 1e6);

  /* Open from a mapped file, as the executable does with its own bytes. */
  char tmp[] = "/tmp/bench_tokenizer_XXXXXX";
  int fd = mkstemp(tmp);
  if (fd < 0 || write(fd, blob, size) != (ssize_t)size) {
    perror("temp file");
    return 1;
  }
  free(blob);
  unlink(tmp);
  char err[256];
  double first = 0, best = 1e9;
  const RtTokenizer *tok = NULL;
  for (int r = 0; r < 20; r++) {
    double a = now_s();
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    RtTokenizer *t = rt_tok_open(map, size, err, sizeof err);
    double b = now_s();
    if (!t) {
      fprintf(stderr, "open: %s\n", err);
      return 1;
    }
    if (r == 0) first = b - a;
    if (b - a < best) best = b - a;
    if (r < 19) {
      rt_tok_close(t);
      munmap(map, size);
    } else {
      tok = t;
    }
  }
  printf("mmap + rt_tok_open: first %.3f ms, best of 20 %.3f ms\n", first * 1e3, best * 1e3);

  Text en = {0}, code = {0};
  add_dir(&en, "/usr/share/common-licenses", "", 0);
  add_dir(&en, "/usr/share/doc", "copyright", 1);
  repeat_to(&en, MIN_TEXT);
  add_dir(&code, "/usr/include", ".h", 0);
  repeat_to(&code, MIN_TEXT);
  bench(tok, "english", &en);
  bench(tok, "code", &code);
  return 0;
}
