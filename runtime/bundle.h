/* bundle.h — how data rides inside a generated executable.
 *
 * The compiler links the executable, pads it to a page boundary and appends
 * sections (weights, tokenizer tables), then a fixed-size trailer as the very
 * last bytes of the file.  At start-up the runtime reads the trailer from
 * /proc/self/exe and maps the sections read-only: nothing is copied, so
 * start-up time does not grow with the model.  (`strip` would cut the
 * appended data; the runtime then says so.)
 *
 * All offsets are absolute file offsets; every section starts page aligned. */
#ifndef PYTHIA_BUNDLE_H
#define PYTHIA_BUNDLE_H

#include <stdint.h>

#define PY_BUNDLE_MAGIC "PYTHIAB1"
#define PY_BUNDLE_PAGE 4096u

typedef struct {
  char magic[8];
  uint64_t version;       /* PY_ABI_VERSION */
  uint64_t weights_off, weights_size;
  uint64_t weights_hash;  /* XXH3_64bits of the weight section */
  uint64_t layout_hash;   /* must equal py_model.layout_hash */
  uint64_t tok_off, tok_size; /* tok_size 0: no tokenizer was compiled in */
} PyBundleTrailer;

#endif
