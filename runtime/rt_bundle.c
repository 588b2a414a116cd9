/* rt_bundle.c — finds the data a generated executable carries after its code
 * (runtime/bundle.h) and maps it read-only.  Nothing is copied: start-up
 * cost does not depend on the size of the model. */
#include "rt_bundle.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "pythia_abi.h"

/* The message for failure `why` of reading the bundle of `file` (NULL: this
 * executable's own, appended to its code). */
enum { NO_OPEN, NO_TRAILER, OTHER_CODE, CUT_SHORT, NO_MAP_WEIGHTS, NO_MAP_TOKENIZER };
static int fail(char *err, size_t n, const char *file, int why, const char *detail) {
  static const char *const own[] = {
      "cannot open own executable",
      "the weights appended to this executable are missing (was it stripped or truncated?)",
      "the appended weight bundle does not match this executable's code",
      "the weights appended to this executable are partly missing (was the file cut short?)",
      "cannot map the weights", "cannot map the tokenizer"};
  static const char *const other[] = {
      "cannot open",
      "no weight bundle trailer at its end (not a file pythiac --emit=weights wrote, or cut short)",
      "the weights were compiled for other code: another shape, weight dtype, target, tiling or "
      "pythiac version (compile them with this executable's pythiac options and --emit=weights)",
      "the weight bundle is cut short", "cannot map the weights", "cannot map the tokenizer"};
  snprintf(err, n, "%s%s%s%s%s", file ? file : "", file ? ": " : "", (file ? other : own)[why],
           *detail ? ": " : "", detail);
  return -1;
}

int rt_bundle_open(RtBundle *b, const char *file, char *err, size_t errlen) {
  memset(b, 0, sizeof *b);
  int fd = open(file ? file : "/proc/self/exe", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(err, errlen, file, NO_OPEN, strerror(errno));
  struct stat st;
  PyBundleTrailer *t = &b->trailer;
  uint64_t size = 0;
  if (!fstat(fd, &st)) size = (uint64_t)st.st_size;
  if (size < sizeof *t || pread(fd, t, sizeof *t, (off_t)(size - sizeof *t)) != (ssize_t)sizeof *t ||
      memcmp(t->magic, PY_BUNDLE_MAGIC, 8)) {
    close(fd);
    return fail(err, errlen, file, NO_TRAILER, "");
  }
  uint64_t data_end = size - sizeof *t;
  if (t->version != PY_ABI_VERSION || t->layout_hash != py_model.layout_hash ||
      t->weights_size != py_model.weights_bytes || t->weights_off % PY_BUNDLE_PAGE ||
      (t->tok_size && t->tok_off % PY_BUNDLE_PAGE)) {
    close(fd);
    return fail(err, errlen, file, OTHER_CODE, "");
  }
  if (t->weights_off > data_end || t->weights_size > data_end - t->weights_off ||
      (t->tok_size && (t->tok_off > data_end || t->tok_size > data_end - t->tok_off))) {
    close(fd);
    return fail(err, errlen, file, CUT_SHORT, "");
  }
  void *w = mmap(NULL, t->weights_size, PROT_READ, MAP_PRIVATE, fd, (off_t)t->weights_off);
  if (w == MAP_FAILED) {
    const int map_errno = errno; /* close may change errno */
    close(fd);
    return fail(err, errlen, file, NO_MAP_WEIGHTS, strerror(map_errno));
  }
  b->weights = w;
  /* Ask for 2 MiB mappings: weights faulted in from disk then arrive as 2 MiB
   * page-cache folios, mapped by one TLB entry each.  On a 13 GB model read
   * through 4 KiB pages the page walks cost a fifth to a quarter of decode
   * (docs/runtime.md).  Pages already cached keep their folio size; a kernel
   * without file THP ignores it, which changes speed only. */
  madvise(w, t->weights_size, MADV_HUGEPAGE);
  if (t->tok_size) {
    void *k = mmap(NULL, t->tok_size, PROT_READ, MAP_PRIVATE, fd, (off_t)t->tok_off);
    if (k == MAP_FAILED) {
      const int map_errno = errno;
      munmap(w, t->weights_size);
      close(fd);
      return fail(err, errlen, file, NO_MAP_TOKENIZER, strerror(map_errno));
    }
    b->tok = k;
  }
  close(fd);
  return 0;
}

uint64_t rt_bundle_hash(const RtBundle *b) {
  madvise((void *)b->weights, b->trailer.weights_size, MADV_SEQUENTIAL);
  return XXH3_64bits(b->weights, b->trailer.weights_size);
}

/* Bytes of the weight mapping the kernel maps with 2 MiB entries now (the
 * FilePmdMapped line of its /proc/self/smaps entry); -1 if unknown. */
int64_t rt_bundle_huge_bytes(const RtBundle *b) {
  FILE *f = fopen("/proc/self/smaps", "r");
  if (!f) return -1;
  char line[256];
  int in_weights = 0;
  int64_t kb = -1;
  const uintptr_t lo = (uintptr_t)b->weights;
  while (fgets(line, sizeof line, f)) {
    unsigned long start, end; /* a mapping's header line; field lines start "Name:" */
    if (sscanf(line, "%lx-%lx ", &start, &end) == 2) {
      in_weights = start == lo;
      continue;
    }
    long v;
    if (in_weights && sscanf(line, "FilePmdMapped: %ld kB", &v) == 1) {
      kb = v;
      break;
    }
  }
  fclose(f);
  return kb < 0 ? -1 : kb * 1024;
}

void rt_bundle_close(RtBundle *b) {
  if (b->weights) munmap((void *)b->weights, b->trailer.weights_size);
  if (b->tok) munmap((void *)b->tok, b->trailer.tok_size);
  memset(b, 0, sizeof *b);
}
