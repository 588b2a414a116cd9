/* safetensors.h — a model's tensors, mapped from one model.safetensors or
 * from the shards listed in model.safetensors.index.json.  Nothing is read
 * whole into RAM: tensor data pointers point into read-only mappings.
 *
 * Invariants after st_open_dir succeeds: every tensor's bytes lie inside its
 * file's data section, no two tensors overlap, and nbytes equals
 * dtype size x product(shape). */
#ifndef SAFETENSORS_H
#define SAFETENSORS_H

#include <stdint.h>

#include "../../ir/base.h"
#include "config.h"

/* ST_OTHER: any dtype pythiac does not read (I64, BOOL, U8, ...).  Such
 * tensors may be present only if they are ignored (neox_check_tensors). */
typedef enum { ST_F32, ST_F16, ST_BF16, ST_OTHER } StDtype;

typedef struct {
  const char *name;
  StDtype dtype;
  int rank;
  int64_t shape[4];
  const uint8_t *data;
  uint64_t nbytes;
  const char *file; /* which file holds it (for messages) */
  const char *dtype_str; /* dtype as the header writes it ("F32", "I64", ...) */
} StTensor;

typedef struct {
  Arena arena;
  int n_files;
  struct StFile *files;
  int n_tensors;
  StTensor *tensors;   /* sorted by name (st_find is a binary search) */
  const char *source;  /* model.safetensors or the index file (messages) */
} StModel;

/* On failure *m is left closed (st_close is harmless on it).  Tensor data
 * pointers are not aligned to their element size in general. */
int st_open_dir(const char *dir, StModel *m, Err *e);
/* One file, for tests and fuzzing. */
int st_open_file(const char *path, StModel *m, Err *e);
const StTensor *st_find(const StModel *m, const char *name);
void st_close(StModel *m);
const char *st_dtype_name(StDtype d);

/* Checks that every tensor the config implies is present with its expected
 * shape and a supported dtype; buffers of old checkpoints
 * (attention.bias, attention.masked_bias, rotary_emb.inv_freq) are ignored. */
int neox_check_tensors(const NeoxConfig *cfg, const StModel *m, Err *e);

#endif
