/* tokenizer_import.h — reads a Hugging Face tokenizer.json, checks that it is
 * a byte-level BPE of the kind the runtime supports, and writes the ready-made
 * tables the runtime tokenizer reads (format: docs/tokenizer.md). */
#ifndef TOKENIZER_IMPORT_H
#define TOKENIZER_IMPORT_H

#include <stddef.h>
#include <stdint.h>

#include "../../ir/base.h"

/* On success *blob is malloc'd (caller frees) and 0 is returned; otherwise -1
 * with an error naming the file and what was wrong. */
int tok_import_file(const char *path, uint8_t **blob, size_t *size, Err *e);

#endif
