/* replay.c — runs a libFuzzer harness without libFuzzer, so the test suite
 * (gcc, no clang) keeps every harness in tests/fuzz/ compiling and its
 * invariants checked.
 *
 *   fuzz_X_replay [--mutants N] [--seed S] FILE...
 *
 * gives each FILE to LLVMFuzzerTestOneInput as it is, then N times mutated
 * (1 to 4 seeded edits each: bit flips, bytes set to JSON punctuation,
 * digits or extremes, ranges deleted or repeated, truncation).  A harness
 * that finds a broken invariant aborts, so the exit status is the verdict.
 * The same seed gives the same inputs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static uint64_t rng_state;

static uint64_t rng(void) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint8_t *read_input(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, len = 0;
  uint8_t *b = malloc(cap);
  size_t got;
  while (b && (got = fread(b + len, 1, cap - len, f)) > 0)
    if ((len += got) == cap) b = realloc(b, cap *= 2);
  fclose(f);
  *n = len;
  return b;
}

/* One edit of buf[0..*n) in place; cap bytes are available. */
static void mutate_once(uint8_t *buf, size_t *n, size_t cap) {
  static const uint8_t special[] = {'"', '{', '}', '[', ']', ',', ':', '\\', '-', '.', 'e', '0', '9', 0, 0xff, 0x80, ' '};
  if (*n == 0) return;
  size_t at = rng() % *n, len = 1 + rng() % (*n - at < 64 ? *n - at : 64);
  switch (rng() % 6) {
  case 0: buf[at] ^= (uint8_t)(1u << (rng() % 8)); break;
  case 1: buf[at] = special[rng() % sizeof special]; break;
  case 2: buf[at] = (uint8_t)rng(); break;
  case 3: /* delete [at, at+len) */
    memmove(buf + at, buf + at + len, *n - at - len);
    *n -= len;
    break;
  case 4: /* repeat [at, at+len) right after itself */
    if (*n + len <= cap) {
      memmove(buf + at + len, buf + at, *n - at);
      *n += len;
    }
    break;
  default: *n = at; break; /* truncate */
  }
}

int main(int argc, char **argv) {
  long mutants = 0;
  unsigned long long seed = 1;
  int first = 1;
  for (; first < argc && argv[first][0] == '-' && argv[first][1] == '-'; first += 2) {
    if (first + 1 >= argc) break;
    if (!strcmp(argv[first], "--mutants")) mutants = strtol(argv[first + 1], NULL, 10);
    else if (!strcmp(argv[first], "--seed")) seed = strtoull(argv[first + 1], NULL, 10);
    else {
      fprintf(stderr, "replay: unknown option %s\n", argv[first]);
      return 2;
    }
  }
  if (first >= argc || mutants < 0) {
    fprintf(stderr, "usage: %s [--mutants N] [--seed S] FILE...\n", argv[0]);
    return 2;
  }
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  rng_state = seed;
  long runs = 0;
  for (int i = first; i < argc; i++) {
    size_t n = 0;
    uint8_t *orig = read_input(argv[i], &n);
    if (!orig) {
      fprintf(stderr, "replay: cannot read %s\n", argv[i]);
      return 2;
    }
    LLVMFuzzerTestOneInput(orig, n);
    runs++;
    size_t cap = 2 * n + 64;
    uint8_t *buf = malloc(cap);
    for (long m = 0; m < mutants; m++) {
      size_t len = n;
      memcpy(buf, orig, n);
      for (int k = 1 + (int)(rng() % 4); k > 0; k--) mutate_once(buf, &len, cap);
      LLVMFuzzerTestOneInput(buf, len);
      runs++;
    }
    free(buf);
    free(orig);
  }
  printf("replay: %ld inputs, no broken invariant\n", runs);
  return 0;
}
