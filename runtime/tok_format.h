/* tok_format.h — layout of the tokenizer blob that
 * compiler/frontend/tokenizer_import.c writes and runtime/tokenizer.c reads
 * in place (docs/tokenizer.md has the full description).
 *
 * Invariants: little-endian; position independent (every offset counts from
 * the blob start); the blob starts 8-byte aligned and every section starts on
 * a TOK_ALIGN boundary, so the tables are used where they lie (mapped
 * read-only from the executable).  All tables are ready-made: the runtime
 * validates them and never rebuilds them. */
#ifndef RT_TOK_FORMAT_H
#define RT_TOK_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#define TOK_MAGIC "PYTOKBPE"
#define TOK_VERSION 1u
#define TOK_ENDIAN 0x01020304u
#define TOK_ALIGN 64u
#define TOK_NO_TOKEN 0xFFFFFFFFu        /* TokEnt.len of an id without a token */
#define TOK_MERGE_EMPTY 0xFFFFFFFFFFFFFFFFull
#define TOK_MERGE_MUL 0x9E3779B97F4A7C15ull /* merge slot = (key * MUL) >> (64 - merge_bits) */
#define TOK_MAX_VOCAB (1u << 24)

enum {
  TOK_F_NFC = 1u << 0,           /* normalizer: NFC (Unicode 9.0 data, as HF) */
  TOK_F_SPLIT = 1u << 1,         /* ByteLevel use_regex: GPT-2 split pattern */
  TOK_F_PREFIX_SPACE = 1u << 2,  /* ByteLevel add_prefix_space */
  TOK_F_IGNORE_MERGES = 1u << 3, /* BPE ignore_merges: whole word in vocab wins */
  TOK_F_FUSE_UNK = 1u << 4,      /* BPE fuse_unk */
};

enum {
  TOK_S_TOKENS,    /* TokEnt[n_vocab]: decoded bytes of every id */
  TOK_S_BYTES,     /* uint8_t[]: the pool TokEnt and TokAdded point into */
  TOK_S_VOCAB,     /* TokVSlot[vocab_cap]: model token bytes -> id */
  TOK_S_MERGES,    /* TokMSlot[1 << merge_bits]: (left, right) -> (rank, id) */
  TOK_S_ADDED,     /* TokAdded[n_added], sorted (group, first byte, len desc) */
  TOK_S_ADDED_IDX, /* uint32_t[2][257]: bucket bounds per group and first byte */
  TOK_S_N
};

enum { TOK_A_NORMALIZED = 1u << 0, TOK_A_SPECIAL = 1u << 1 };

typedef struct {
  uint64_t off, size;
} TokSection;

typedef struct {
  char magic[8];
  uint32_t version, endian;
  uint64_t checksum;     /* XXH3_64bits of blob bytes [24, blob_size) */
  uint64_t blob_size;
  uint32_t header_size;  /* sizeof(TokHeader) */
  uint32_t flags;        /* TOK_F_* */
  uint32_t n_vocab;      /* ids 0..n_vocab-1; holes have len TOK_NO_TOKEN */
  uint32_t n_model;      /* entries of the model vocab */
  uint32_t n_merges;
  uint32_t n_added;
  int32_t eos_id;        /* <|endoftext|>, or -1 */
  int32_t unk_id;        /* model.unk_token, or -1 */
  uint32_t vocab_cap;    /* power of two */
  uint32_t merge_bits;   /* merge table has 1 << merge_bits slots */
  uint32_t vocab_probe;  /* longest probe sequence of a present key: a */
  uint32_t merge_probe;  /* lookup may stop after that many slots */
  int32_t byte_id[256];  /* id of the one-byte token for each byte, or -1 */
  TokSection sec[TOK_S_N];
} TokHeader;

typedef struct {
  uint32_t off, len;     /* into TOK_S_BYTES */
} TokEnt;

typedef struct {
  uint32_t tag;          /* XXH3_64bits(bytes) >> 32 */
  uint32_t id1;          /* id + 1; 0 = empty.  Slot = hash & (vocab_cap - 1) */
} TokVSlot;

typedef struct {
  uint64_t key;          /* (uint64_t)left << 32 | right; TOK_MERGE_EMPTY = empty */
  uint32_t rank, id;     /* merge rank (its line in merges) and merged id */
} TokMSlot;

typedef struct {
  uint32_t id;
  uint32_t off, len;     /* the pattern matched in text (NFC'd if normalized) */
  uint32_t flags;        /* TOK_A_* */
} TokAdded;

/* Runtime extras beyond tokenizer.h (runtime/tokenizer.c). */
struct RtTokenizer;
/* Id of the model token whose raw bytes are s[0..n), or -1. */
int32_t rt_tok_lookup(const struct RtTokenizer *t, const void *s, size_t n);
/* Tests only: words of at most n symbols are merged by a linear scan,
 * longer ones with a heap (default 48).  Not thread-safe. */
void rt_tok_set_bpe_linear_max(int n);

#endif
