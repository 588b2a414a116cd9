/* link.c — the system C compiler driver links the generated object with the
 * runtime archive into a static executable; then the weight blob, tokenizer
 * tables and trailer are appended (layout: runtime/bundle.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../runtime/bundle.h"
#include "../../runtime/pythia_abi.h"
#include "link.h"

extern char **environ;

/* The runtime archive sits beside the pythiac executable (build tree) or in
 * the build directory configured at build time. */
static int find_runtime(char *out, size_t n, Err *e) {
  char self[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len > 0) {
    self[len] = 0;
    char *slash = strrchr(self, '/');
    if (slash) {
      *slash = 0;
      if ((size_t)snprintf(out, n, "%.*s/libpythia_rt.a", (int)(n - 16), self) >= n) return err_set(e, "pythiac path too long");
      if (access(out, R_OK) == 0) return 0;
    }
  }
  snprintf(out, n, "%s/libpythia_rt.a", PYTHIAC_BUILD_DIR);
  if (access(out, R_OK) == 0) return 0;
  return err_set(e, "cannot find the runtime library libpythia_rt.a (looked beside pythiac and in %s)",
                 PYTHIAC_BUILD_DIR);
}

int link_objects(const char *obj_path, const char *exe_path, Err *e) {
  char rt[PATH_MAX];
  if (find_runtime(rt, sizeof rt, e)) return -1;
  const char *cc = getenv("CC");
  if (!cc || !*cc) cc = "cc";
  char *argv[] = {(char *)cc, "-static", "-o", (char *)exe_path, (char *)obj_path, rt,
                  PYTHIAC_UTF8PROC_A, PYTHIAC_XXHASH_A, "-lm", "-lpthread", NULL};
  pid_t pid;
  int rc = posix_spawnp(&pid, cc, NULL, NULL, argv, environ);
  if (rc) return err_set(e, "cannot run the linker \"%s\": %s", cc, strerror(rc));
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return err_set(e, "waiting for the linker: %s", strerror(errno));
  if (!WIFEXITED(status) || WEXITSTATUS(status))
    return err_set(e, "linking %s failed (%s exited with status %d)", exe_path, cc,
                   WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  return 0;
}

static int write_all(int fd, const void *p, size_t n, const char *what, Err *e) {
  const uint8_t *b = p;
  while (n) {
    ssize_t w = write(fd, b, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return err_set(e, "%s: write failed: %s", what, strerror(errno));
    }
    b += w, n -= (size_t)w;
  }
  return 0;
}

static int pad_to_page(int fd, uint64_t *pos, const char *path, Err *e) {
  static const uint8_t zero[PY_BUNDLE_PAGE];
  uint64_t pad = (PY_BUNDLE_PAGE - *pos % PY_BUNDLE_PAGE) % PY_BUNDLE_PAGE;
  if (pad && write_all(fd, zero, pad, path, e)) return -1;
  *pos += pad;
  return 0;
}

int bundle_append(const char *exe_path, const Graph *g, const StModel *m,
                  const uint8_t *tok, size_t tok_size, uint64_t layout_hash, Err *e) {
  int fd = open(exe_path, O_WRONLY | O_APPEND);
  if (fd < 0) return err_set(e, "%s: cannot open for writing: %s", exe_path, strerror(errno));
  struct stat st;
  fstat(fd, &st);
  uint64_t pos = (uint64_t)st.st_size;
  PyBundleTrailer tr = {.version = PY_ABI_VERSION, .layout_hash = layout_hash};
  memcpy(tr.magic, PY_BUNDLE_MAGIC, 8);
  int rc = pad_to_page(fd, &pos, exe_path, e);
  if (!rc) {
    tr.weights_off = pos;
    tr.weights_size = (uint64_t)g->weights_bytes;
    rc = weights_write(g, m, fd, pos, &tr.weights_hash, e);
    pos += tr.weights_size;
  }
  if (!rc && tok_size) {
    rc = pad_to_page(fd, &pos, exe_path, e);
    tr.tok_off = pos;
    tr.tok_size = tok_size;
    if (!rc) rc = write_all(fd, tok, tok_size, exe_path, e);
    pos += tok_size;
  }
  if (!rc) rc = write_all(fd, &tr, sizeof tr, exe_path, e);
  if (close(fd) && !rc) rc = err_set(e, "%s: %s", exe_path, strerror(errno));
  return rc;
}
