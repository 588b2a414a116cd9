/* tokenizer.h — the GPT-NeoX byte-level BPE tokenizer, run from the
 * ready-made tables that pythiac compiles into the executable (format in
 * docs/tokenizer.md; written by compiler/frontend/tokenizer_import.c).
 * No JSON is parsed at run time. */
#ifndef RT_TOKENIZER_H
#define RT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct RtTokenizer RtTokenizer;

/* Opens tables at blob[0..size) (they stay owned by the caller, e.g. mapped
 * from the executable).  Returns NULL and fills err on a malformed blob. */
RtTokenizer *rt_tok_open(const void *blob, size_t size, char *err, size_t errlen);
void rt_tok_close(RtTokenizer *t);

/* Number of ids that have a token string (50277 for GPT-NeoX-20B): ids at or
 * above it are padding rows of the embedding. */
int32_t rt_tok_n_vocab(const RtTokenizer *t);
int32_t rt_tok_eos(const RtTokenizer *t); /* <|endoftext|> */

/* Encodes text[0..len) (may contain NUL) exactly as HF tokenizers does,
 * without BOS.  *ids is malloc'd.  Returns 0, or -1 with err filled, e.g.
 * "prompt is not valid UTF-8 at byte 17". */
int rt_tok_encode(const RtTokenizer *t, const char *text, size_t len,
                  int32_t **ids, size_t *n_ids, char *err, size_t errlen);

/* Raw bytes of one token (byte-level map undone); NULL for an unknown id. */
const uint8_t *rt_tok_token_bytes(const RtTokenizer *t, int32_t id, size_t *len);

/* Decodes ids: bytes joined, then lossy UTF-8 (one U+FFFD per maximal invalid
 * subpart).  *out is malloc'd and NUL-terminated; *out_len excludes the NUL.
 * Returns 0, or -1 with err filled for an id outside the vocabulary. */
int rt_tok_decode(const RtTokenizer *t, const int32_t *ids, size_t n,
                  char **out, size_t *out_len, char *err, size_t errlen);

/* Streaming decode for generation: bytes are written to `out` as soon as they
 * form complete characters; an incomplete tail waits for the next token. */
typedef struct {
  uint8_t pend[8];
  int npend;
} RtDecodeStream;
void rt_tok_stream_push(const RtTokenizer *t, RtDecodeStream *s, int32_t id, FILE *out);
void rt_tok_stream_flush(RtDecodeStream *s, FILE *out); /* pending bytes as U+FFFD */
/* Same as pushing a token, for raw bytes (the runtime cuts text at --stop
 * strings, which may end inside a token). */
void rt_tok_stream_bytes(RtDecodeStream *s, const uint8_t *b, size_t n, FILE *out);

#endif
