/* rt_main.c — main() of every generated executable, in the spirit of
 * llama2.c's run.c: options, model state, forward in blocks, generation,
 * and the tool modes (--info, --verify, --tokenize, --detokenize, --bench,
 * --perplexity, --dump-logits, --dump-hidden).  Flags mean what they mean in
 * llama.cpp.  The weights are the ones appended to this file, or those of
 * --weights-file (the same bundle format, checked against this code).
 *
 * Memory is allocated once at start-up: the activation arena, the logits
 * rows, and the KV cache (an anonymous mapping: pages that a short context
 * never touches cost nothing).  Nothing is allocated per token: before a
 * run, the cache rows it will write are touched once (kv_reserve), so no
 * page fault lands inside a forward pass. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "pythia_abi.h"
#include "rt_alloc.h"
#include "rt_bundle.h"
#include "rt_npy.h"
#include "rt_probe.h"
#include "rt_profile.h"
#include "sampler.h"
#include "threadpool.h"
#include "tokenizer.h"

/* The offsets docs/abi.md gives, which the generated code's struct types follow */
_Static_assert(offsetof(PyRun, hidden) == 88 && offsetof(PyRun, attn) == 96 && offsetof(PyRun, attn_n) == 104 &&
                   sizeof(PyRun) == 112,
               "PyRun layout of docs/abi.md");
_Static_assert(offsetof(PyModel, n_ops) == 120 && offsetof(PyModel, n_hidden) == 124 &&
                   offsetof(PyModel, attentions) == 128 && sizeof(PyModel) == 136,
               "PyModel layout of docs/abi.md");

/* ------------------------------------------------------------------ options */

enum { MODE_GENERATE, MODE_INFO, MODE_VERIFY, MODE_TOKENIZE, MODE_DETOKENIZE, MODE_BENCH, MODE_PERPLEXITY };
enum { MAX_STOPS = 16 };

typedef struct {
  int mode;
  const char *prompt, *prompt_file, *ids, *dump_logits, *dump_hidden, *dump_attn, *attn_layers, *weights_file;
  int n_predict, threads, ctx, pp, tg, reps, ignore_eos, display_prompt, batch, profile, probe;
  int ppl_stride; /* --ppl-stride; 0: the window */
  const char *stops[MAX_STOPS];
  int n_stops;
  RtSamplerParams sp;
} Opts;

static void usage(FILE *f) {
  fputs("usage: pythia_gen [options]\n"
        "  -p, --prompt TEXT        prompt text\n"
        "  -f, --file FILE          read the prompt from FILE\n"
        "  --ids 1,2,3              prompt as token ids (works without a tokenizer)\n"
        "  -n, --n-predict N        tokens to generate (default 128; -1 = until the context is full)\n"
        "  --temp T                 temperature (default 0.8; 0 = greedy)\n"
        "  --top-k N  --top-p P  --min-p P   sampling filters (40, 0.95, 0.05)\n"
        "  --repeat-penalty R  --repeat-last-n N  --presence-penalty P  --frequency-penalty P\n"
        "  --seed S                 sampling seed (default: from the clock)\n"
        "  --ignore-eos             do not stop at <|endoftext|>\n"
        "  --stop TEXT              stop when TEXT is generated (repeatable)\n"
        "  --no-display-prompt      print only the generated text\n"
        "  -t, --threads N          threads (default: all CPUs)\n"
        "  -c, --ctx-size N         context length (default and maximum: compiled-in)\n"
        "  -b, --batch-size N       prompt tokens per forward call (default and maximum: compiled-in)\n"
        "  --dump-logits F.npy      write float32 logits [n_prompt, vocab] of the prompt and exit\n"
        "  --dump-hidden F.npy      write float32 hidden states [n_layer + 1, n_prompt, d_model]\n"
        "                           of the prompt and exit (compiled with pythiac --hidden-states)\n"
        "  --dump-attentions F.npy  write float32 attention probabilities [n_layer, n_head,\n"
        "                           n_prompt, n_prompt] of the prompt and exit (compiled with\n"
        "                           pythiac --attentions)\n"
        "  --attn-layers L          with --dump-attentions: only these layers, in this order\n"
        "                           (e.g. 0,5,10-12; default: all)\n"
        "  --tokenize               print the prompt's ids as a JSON array\n"
        "  --detokenize             write the text of --ids to stdout\n"
        "  --bench [--pp N] [--tg N] prefill N and decode N tokens; print one JSON line\n"
        "  --repetitions N          with --bench: run it N times, report the medians (default 1)\n"
        "  --profile                with --bench: time per op on stderr\n"
        "  --probe-bandwidth        with --bench: after each decode token, read the weights once with a\n"
        "                           plain vector loop; report that read's GB/s beside the tokens'\n"
        "  --perplexity             score the prompt: each token's negative log-likelihood given\n"
        "                           the tokens before it, in windows of -c tokens; one JSON line\n"
        "  --ppl-stride S           with --perplexity: windows start S tokens apart (default: -c);\n"
        "                           each scores only tokens no earlier window scored\n"
        "  --weights-file FILE      use the weights of FILE (pythiac --emit=weights, compiled with\n"
        "                           this executable's options), not the appended ones\n"
        "  --info                   print the model, compile options, target and weight hash\n"
        "  --verify                 recompute the weights' hash and compare\n",
        f);
}

static int bad(const char *flag, const char *why, const char *got) {
  fprintf(stderr, "pythia_gen: error: %s: %s, got \"%s\"\n", flag, why, got);
  return -1;
}

static int int_arg(const char *flag, const char *s, long lo, long hi, int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (!*s || *end || errno || v < lo || v > hi) {
    char why[96];
    snprintf(why, sizeof why, "expected an integer in [%ld, %ld]", lo, hi);
    return bad(flag, why, s);
  }
  *out = (int)v;
  return 0;
}

static int float_arg(const char *flag, const char *s, double lo, double hi, float *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (!*s || *end || errno || !(v >= lo && v <= hi)) {
    char why[96];
    snprintf(why, sizeof why, "expected a number in [%g, %g]", lo, hi);
    return bad(flag, why, s);
  }
  *out = (float)v;
  return 0;
}

static int parse_opts(int argc, char **argv, Opts *o) {
  *o = (Opts){.mode = MODE_GENERATE, .n_predict = 128, .pp = 128, .tg = 64, .reps = 1, .display_prompt = 1};
  o->sp = rt_sampler_defaults();
  o->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  o->threads = ncpu > 0 ? (int)ncpu : 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
#define IS(s) (!strcmp(a, s))
#define VAL() (i + 1 < argc ? argv[++i] : (fprintf(stderr, "pythia_gen: error: %s: missing value\n", a), (char *)NULL))
    const char *v;
    if (IS("-h") || IS("--help")) { usage(stdout); exit(0); }
    else if (IS("--info")) o->mode = MODE_INFO;
    else if (IS("--verify")) o->mode = MODE_VERIFY;
    else if (IS("--tokenize")) o->mode = MODE_TOKENIZE;
    else if (IS("--detokenize")) o->mode = MODE_DETOKENIZE;
    else if (IS("--bench")) o->mode = MODE_BENCH;
    else if (IS("--perplexity")) o->mode = MODE_PERPLEXITY;
    else if (IS("--profile")) o->profile = 1;
    else if (IS("--probe-bandwidth")) o->probe = 1;
    else if (IS("--ignore-eos")) o->ignore_eos = 1;
    else if (IS("--no-display-prompt")) o->display_prompt = 0;
    else if (IS("-p") || IS("--prompt")) { if (!(o->prompt = VAL())) return -1; }
    else if (IS("-f") || IS("--file")) { if (!(o->prompt_file = VAL())) return -1; }
    else if (IS("--ids")) { if (!(o->ids = VAL())) return -1; }
    else if (IS("--dump-logits")) { if (!(o->dump_logits = VAL())) return -1; }
    else if (IS("--dump-hidden")) { if (!(o->dump_hidden = VAL())) return -1; }
    else if (IS("--dump-attentions")) { if (!(o->dump_attn = VAL())) return -1; }
    else if (IS("--attn-layers")) { if (!(o->attn_layers = VAL())) return -1; }
    else if (IS("--weights-file")) { if (!(o->weights_file = VAL())) return -1; }
    else if (IS("--stop")) {
      if (!(v = VAL())) return -1;
      if (!*v) return bad("--stop", "expected a non-empty string", v);
      if (o->n_stops == MAX_STOPS) return bad("--stop", "at most 16 stop strings", v);
      o->stops[o->n_stops++] = v;
    }
    else if (IS("-n") || IS("--n-predict")) { if (!(v = VAL()) || int_arg(a, v, -1, INT_MAX, &o->n_predict)) return -1; }
    else if (IS("-t") || IS("--threads")) { if (!(v = VAL()) || int_arg(a, v, 1, 1024, &o->threads)) return -1; }
    else if (IS("-c") || IS("--ctx-size")) { if (!(v = VAL()) || int_arg(a, v, 1, INT_MAX, &o->ctx)) return -1; }
    else if (IS("-b") || IS("--batch-size")) { if (!(v = VAL()) || int_arg(a, v, 1, INT_MAX, &o->batch)) return -1; }
    else if (IS("--pp")) { if (!(v = VAL()) || int_arg(a, v, 1, INT_MAX, &o->pp)) return -1; }
    else if (IS("--tg")) { if (!(v = VAL()) || int_arg(a, v, 1, INT_MAX, &o->tg)) return -1; }
    else if (IS("--ppl-stride")) { if (!(v = VAL()) || int_arg(a, v, 1, INT_MAX, &o->ppl_stride)) return -1; }
    else if (IS("--repetitions")) { if (!(v = VAL()) || int_arg(a, v, 1, 1000, &o->reps)) return -1; }
    else if (IS("--top-k")) { if (!(v = VAL()) || int_arg(a, v, 0, INT_MAX, &o->sp.top_k)) return -1; }
    else if (IS("--repeat-last-n")) { if (!(v = VAL()) || int_arg(a, v, 0, INT_MAX, &o->sp.repeat_last_n)) return -1; }
    else if (IS("--temp")) { if (!(v = VAL()) || float_arg(a, v, 0, 1e6, &o->sp.temp)) return -1; }
    else if (IS("--top-p")) { if (!(v = VAL()) || float_arg(a, v, 0, 1, &o->sp.top_p)) return -1; }
    else if (IS("--min-p")) { if (!(v = VAL()) || float_arg(a, v, 0, 1, &o->sp.min_p)) return -1; }
    else if (IS("--repeat-penalty")) { if (!(v = VAL()) || float_arg(a, v, 1e-6, 1e6, &o->sp.repeat_penalty)) return -1; }
    else if (IS("--presence-penalty")) { if (!(v = VAL()) || float_arg(a, v, -1e6, 1e6, &o->sp.presence_penalty)) return -1; }
    else if (IS("--frequency-penalty")) { if (!(v = VAL()) || float_arg(a, v, -1e6, 1e6, &o->sp.frequency_penalty)) return -1; }
    else if (IS("--seed")) {
      if (!(v = VAL())) return -1;
      char *end;
      errno = 0;
      unsigned long long s = strtoull(v, &end, 10);
      if (!*v || *end || errno || *v == '-') return bad("--seed", "expected a non-negative integer", v);
      o->sp.seed = s;
    }
    else if (a[0] != '-') return bad(a, "unexpected argument (a prompt goes after -p)", a);
    else return bad(a, "unknown option (see --help)", a);
#undef IS
#undef VAL
  }
  if (o->prompt && o->prompt_file) return bad("-f", "give either -p or -f, not both", o->prompt_file);
  if (o->ids && (o->prompt || o->prompt_file)) return bad("--ids", "give either --ids or a text prompt, not both", o->ids);
  if (o->profile && o->mode != MODE_BENCH) return bad("--profile", "only with --bench", "--profile");
  if (o->probe && o->mode != MODE_BENCH) return bad("--probe-bandwidth", "only with --bench", "--probe-bandwidth");
  if (o->reps != 1 && o->mode != MODE_BENCH) return bad("--repetitions", "only with --bench", "--repetitions");
  if (o->ppl_stride && o->mode != MODE_PERPLEXITY) return bad("--ppl-stride", "only with --perplexity", "--ppl-stride");
  if (o->attn_layers && !o->dump_attn) return bad("--attn-layers", "only with --dump-attentions", o->attn_layers);
  return 0;
}

/* -------------------------------------------------------------- model state */

typedef struct {
  RtBundle bundle;  /* the weights (and tokenizer): appended to this executable, or --weights-file */
  RtBundle own;     /* with --weights-file whose bundle has no tokenizer: this executable's, for its tokenizer */
  RtTokenizer *tok; /* NULL when no tokenizer was compiled in */
  RtPool *pool;
  RtProfile *prof; /* --profile: every parallel_for goes through it */
  float *arena, *logits;
  uint8_t *kcache, *vcache; /* py_model.kv_bytes per element */
  size_t cache_bytes;
  int ctx;
  int batch; /* tokens per py_forward call, <= max_block */
  float *hidden_block; /* --dump-hidden: one block's hidden states, PyRun.hidden */
  const char *weights_file; /* --weights-file, or NULL */
} Model;

static int model_open(Model *m, const Opts *o, int need_compute) {
  char err[512];
  memset(m, 0, sizeof *m);
  if (py_model.abi_version != PY_ABI_VERSION) {
    fprintf(stderr, "pythia_gen: error: model code has ABI %u, runtime %d\n", py_model.abi_version, PY_ABI_VERSION);
    return -1;
  }
  if (rt_bundle_open(&m->bundle, o->weights_file, err, sizeof err)) {
    fprintf(stderr, "pythia_gen: error: %s%s\n", o->weights_file ? "--weights-file " : "", err);
    return -1;
  }
  m->weights_file = o->weights_file;
  const RtBundle *tb = &m->bundle; /* where the tokenizer tables are */
  if (o->weights_file && !m->bundle.tok) {
    if (rt_bundle_open(&m->own, NULL, err, sizeof err)) {
      fprintf(stderr, "pythia_gen: error: %s\n", err);
      return -1;
    }
    tb = &m->own;
  }
  if (tb->tok && !(m->tok = rt_tok_open(tb->tok, tb->trailer.tok_size, err, sizeof err))) {
    fprintf(stderr, "pythia_gen: error: tokenizer tables: %s\n", err);
    return -1;
  }
  if (!need_compute) return 0;
  m->ctx = o->ctx ? o->ctx : py_model.max_ctx;
  if (m->ctx > py_model.max_ctx) {
    fprintf(stderr, "pythia_gen: error: -c/--ctx-size: at most %d (compiled in), got %d\n", py_model.max_ctx, m->ctx);
    return -1;
  }
  m->batch = o->batch && o->batch < py_model.max_block ? o->batch : py_model.max_block;

  if (py_model.kv_bytes != 4 && py_model.kv_bytes != 2) {
    fprintf(stderr, "pythia_gen: error: model code has a %d-byte K/V cache element (expected 4 or 2)\n",
            py_model.kv_bytes);
    return -1;
  }
  m->cache_bytes = (size_t)py_model.n_layer * (size_t)py_model.max_ctx * (size_t)py_model.d_model * (size_t)py_model.kv_bytes;
  m->kcache = mmap(NULL, m->cache_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  m->vcache = mmap(NULL, m->cache_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  m->arena = rt_aligned_alloc(64, (py_model.arena_bytes + 63) / 64 * 64 + 64);
  m->logits = rt_aligned_alloc(64, (size_t)py_model.vocab * sizeof(float) * (size_t)py_model.max_block);
  m->pool = rt_pool_new(o->threads);
  if (m->kcache == MAP_FAILED || m->vcache == MAP_FAILED || !m->arena || !m->logits || !m->pool) {
    fprintf(stderr, "pythia_gen: error: out of memory allocating the model state\n");
    return -1;
  }
  return 0;
}

/* Touches cache rows [0, n_pos) of every layer and head of both caches
 * (pythia_abi.h: a head's rows are contiguous), so their first write
 * inside py_forward does not take a page fault; 24 faults per 16 positions
 * per layer at pythia-160m, a few per cent of a decode step. */
static void kv_reserve(Model *m, int n_pos) {
  const size_t row = (size_t)py_model.head_dim * (size_t)py_model.kv_bytes, head = (size_t)py_model.max_ctx * row;
  const size_t heads = (size_t)py_model.n_layer * (size_t)py_model.n_head;
  if (n_pos > m->ctx) n_pos = m->ctx;
  for (size_t h = 0; h < heads; h++) {
    memset(m->kcache + h * head, 0, (size_t)n_pos * row);
    memset(m->vcache + h * head, 0, (size_t)n_pos * row);
  }
}

static void model_close(Model *m) {
  rt_profile_free(m->prof);
  if (m->pool) rt_pool_free(m->pool);
  if (m->kcache && m->kcache != MAP_FAILED) munmap(m->kcache, m->cache_bytes);
  if (m->vcache && m->vcache != MAP_FAILED) munmap(m->vcache, m->cache_bytes);
  rt_free(m->arena);
  rt_free(m->logits);
  rt_free(m->hidden_block);
  if (m->tok) rt_tok_close(m->tok);
  rt_bundle_close(&m->bundle);
  rt_bundle_close(&m->own);
}

/* Runs ids[0..n) at positions pos.. in blocks of m->batch tokens.  With all_rows
 * the logits of every position go to out ([n, vocab]); otherwise only the
 * last position's, to m->logits.  With hidden ([n_hidden, n, d_model]) the
 * hidden states of every position go there, each block's through
 * m->hidden_block.  With attn (n_layer pointers, NULL or [n_head, pos + n,
 * pos + n]) every position's attention probabilities of the layers given go
 * there, straight from py_forward. */
static void forward_dump(Model *m, const int32_t *ids, int n, int pos, float *out, bool all_rows,
                         float *hidden, float *const *attn) {
  const size_t D = (size_t)py_model.d_model;
  for (int done = 0; done < n;) {
    int b = n - done < m->batch ? n - done : m->batch;
    bool last_block = done + b == n;
    PyRun r = {.weights = m->bundle.weights, .arena = m->arena, .kcache = m->kcache,
               .vcache = m->vcache, .tokens = ids + done, .n_tokens = b, .pos = pos + done,
               .parallel_for = rt_pool_parallel_for, .pool = m->pool};
    if (m->prof) r.parallel_for = rt_profile_parallel_for, r.pool = m->prof;
    if (all_rows) r.logits = out + (size_t)done * (size_t)py_model.vocab, r.logits_from = 0;
    else r.logits = m->logits, r.logits_from = last_block ? b - 1 : b; /* b: no rows */
    if (hidden) r.hidden = m->hidden_block;
    if (attn) r.attn = attn, r.attn_n = pos + n;
    py_forward(&r);
    for (int s = 0; hidden && s < py_model.n_hidden; s++)
      memcpy(hidden + ((size_t)s * (size_t)n + (size_t)done) * D, m->hidden_block + (size_t)s * (size_t)b * D,
             (size_t)b * D * sizeof(float));
    done += b;
  }
}

static void forward(Model *m, const int32_t *ids, int n, int pos, float *out, bool all_rows) {
  forward_dump(m, ids, n, pos, out, all_rows, NULL, NULL);
}

/* ------------------------------------------------------------------- prompt */

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "pythia_gen: error: -f %s: %s\n", path, strerror(errno));
    return NULL;
  }
  size_t cap = 1 << 16, n = 0;
  char *s = malloc(cap);
  for (size_t got; s && (got = fread(s + n, 1, cap - n, f)) > 0;) {
    n += got;
    if (n == cap) s = realloc(s, cap *= 2);
  }
  if (!s || ferror(f)) { /* e.g. a directory: fopen succeeds, reading fails */
    fprintf(stderr, "pythia_gen: error: -f %s: %s\n", path, s ? strerror(errno) : "out of memory");
    free(s);
    s = NULL;
  }
  fclose(f);
  *len = n;
  return s;
}

static int parse_ids(const char *s, int32_t **ids, size_t *n) {
  size_t cap = 16;
  *n = 0;
  if (!(*ids = malloc(cap * sizeof **ids))) {
    fprintf(stderr, "pythia_gen: error: --ids: out of memory\n");
    return -1;
  }
  for (const char *p = s; *p;) {
    char *end;
    errno = 0;
    long v = strtol(p, &end, 10);
    if (end == p || errno || v < 0 || v >= py_model.vocab || (*end && *end != ',')) {
      char why[96];
      snprintf(why, sizeof why, "expected comma-separated token ids in [0, %d)", py_model.vocab);
      free(*ids);
      return bad("--ids", why, s);
    }
    if (*n == cap) {
      int32_t *grown = realloc(*ids, (cap *= 2) * sizeof **ids);
      if (!grown) {
        free(*ids);
        fprintf(stderr, "pythia_gen: error: --ids: out of memory\n");
        return -1;
      }
      *ids = grown;
    }
    (*ids)[(*n)++] = (int32_t)v;
    p = *end ? end + 1 : end;
  }
  return 0;
}

/* The prompt as ids, from --ids, -p or -f; for_model: ids the model can run. */
static int prompt_ids(const Model *m, const Opts *o, int32_t **ids, size_t *n, bool for_model) {
  if (o->ids) return parse_ids(o->ids, ids, n);
  if (!o->prompt && !o->prompt_file) {
    fprintf(stderr, "pythia_gen: error: no prompt: give -p TEXT, -f FILE or --ids 1,2,3\n");
    return -1;
  }
  size_t len = o->prompt ? strlen(o->prompt) : 0;
  char *text = o->prompt ? (char *)o->prompt : read_file(o->prompt_file, &len);
  if (!text) return -1;
  char err[256];
  int rc = -1;
  if (!m->tok)
    fprintf(stderr, "pythia_gen: error: this executable was compiled without a tokenizer: use --ids\n");
  else if ((rc = rt_tok_encode(m->tok, text, len, ids, n, err, sizeof err)))
    fprintf(stderr, "pythia_gen: error: %s: %s\n", o->prompt ? "-p" : o->prompt_file, err);
  /* a tokenizer larger than the model's vocabulary must not index past the embedding */
  for (size_t i = 0; rc == 0 && for_model && i < *n; i++)
    if ((*ids)[i] < 0 || (*ids)[i] >= py_model.vocab) {
      fprintf(stderr, "pythia_gen: error: %s: token %d is outside the model's vocabulary (%d ids)\n",
              o->prompt ? "-p" : o->prompt_file, (*ids)[i], py_model.vocab);
      free(*ids);
      *ids = NULL;
      rc = -1;
    }
  if (text != o->prompt) free(text);
  return rc;
}

static void print_ids_json(const int32_t *ids, size_t n) {
  putchar('[');
  for (size_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
  puts("]");
}

/* ---------------------------------------------------------------- generation */

/* Text output with --stop: tokens are held back while the generated text
 * ends in a prefix of a stop string; the text is cut where a stop begins. */
typedef struct {
  char *text;
  size_t len, cap, printed;
  RtDecodeStream ds;
} Out;

/* Appends n bytes to the held-back text; -1 when memory runs out. */
static int out_append(Out *w, const uint8_t *b, size_t n) {
  if (!n) return 0;
  if (w->len + n + 1 > w->cap) {
    size_t cap = (w->len + n + 1) * 2;
    char *t = realloc(w->text, cap);
    if (!t) return -1;
    w->text = t, w->cap = cap;
  }
  memcpy(w->text + w->len, b, n);
  w->len += n;
  w->text[w->len] = 0;
  return 0;
}

/* Prints text up to `upto`; returns 1 when a stop string was found. */
static int out_flush(const Model *m, Out *w, const Opts *o, bool final) {
  size_t upto = w->len;
  int stopped = 0;
  for (int s = 0; s < o->n_stops; s++) {
    size_t sl = strlen(o->stops[s]);
    for (size_t i = w->printed > sl ? w->printed - sl : 0; i + sl <= w->len; i++)
      if (!memcmp(w->text + i, o->stops[s], sl)) {
        if (i < upto) upto = i;
        stopped = 1;
        break;
      }
    if (!stopped && !final) /* hold back a tail that may begin a stop string */
      for (size_t k = sl - 1; k > 0; k--)
        if (k <= w->len && !memcmp(w->text + w->len - k, o->stops[s], k)) {
          if (w->len - k < upto) upto = w->len - k;
          break;
        }
  }
  if (upto > w->printed) rt_tok_stream_bytes(&w->ds, (const uint8_t *)w->text + w->printed, upto - w->printed, stdout);
  if (upto > w->printed) w->printed = upto;
  fflush(stdout);
  return stopped;
}

static int generate(Model *m, const Opts *o) {
  int32_t *ids = NULL;
  size_t n_prompt = 0;
  if (prompt_ids(m, o, &ids, &n_prompt, true)) return 1;
  if (n_prompt == 0) {
    fprintf(stderr, "pythia_gen: error: the prompt is empty (0 tokens)\n");
    return 1;
  }
  if (n_prompt >= (size_t)m->ctx) {
    fprintf(stderr, "pythia_gen: error: the prompt is %zu tokens, too long for the context of %d (leave room for at least one new token)\n",
            n_prompt, m->ctx);
    free(ids);
    return 1;
  }
  int n_predict = o->n_predict < 0 || (size_t)o->n_predict > (size_t)m->ctx - n_prompt
                      ? m->ctx - (int)n_prompt : o->n_predict;
  int32_t n_valid = m->tok ? rt_tok_n_vocab(m->tok) : py_model.vocab;
  if (n_valid > py_model.vocab) n_valid = py_model.vocab;
  int32_t eos = m->tok ? rt_tok_eos(m->tok) : 0;
  RtSampler *smp = rt_sampler_new(&o->sp, py_model.vocab, n_valid);
  if (!smp) {
    fprintf(stderr, "pythia_gen: error: out of memory\n");
    return 1;
  }
  for (size_t i = 0; i < n_prompt; i++) rt_sampler_accept(smp, ids[i]);
  kv_reserve(m, (int)n_prompt + n_predict);
  Out w = {0};
  if (o->display_prompt) {
    if (m->tok) {
      for (size_t i = 0; i < n_prompt; i++) rt_tok_stream_push(m->tok, &w.ds, ids[i], stdout);
      rt_tok_stream_flush(&w.ds, stdout);
    } else {
      for (size_t i = 0; i < n_prompt; i++) printf("%d ", ids[i]);
    }
    fflush(stdout);
  }
  forward(m, ids, (int)n_prompt, 0, NULL, false);
  int pos = (int)n_prompt, rc = 0;
  for (int i = 0; i < n_predict; i++) {
    int32_t next = rt_sampler_sample(smp, m->logits);
    rt_sampler_accept(smp, next);
    if (next == eos && !o->ignore_eos) break;
    if (m->tok) {
      /* an id with no token string (a hole in the tokenizer's ids) prints
       * nothing, as Hugging Face's decode skips ids it does not know */
      size_t bl = 0;
      const uint8_t *b = rt_tok_token_bytes(m->tok, next, &bl);
      if (b && out_append(&w, b, bl)) {
        fprintf(stderr, "pythia_gen: error: out of memory for the generated text\n");
        rc = 1;
        break;
      }
      if (out_flush(m, &w, o, false)) break;
    } else {
      printf("%d ", next);
      fflush(stdout);
    }
    if (i + 1 == n_predict) break;
    forward(m, &next, 1, pos++, NULL, false);
  }
  if (m->tok) {
    out_flush(m, &w, o, true);
    rt_tok_stream_flush(&w.ds, stdout);
  }
  putchar('\n');
  free(w.text);
  rt_sampler_free(smp);
  free(ids);
  return rc;
}

/* ---------------------------------------------------------------- the modes */

/* --attn-layers: "0,5,10-12" into layers[] (room for n_layer), each in
 * [0, n_layer) and none twice, in the order given; NULL: every layer.
 * Returns how many, or -1 after an error line. */
static int parse_layers(const char *s, int n_layer, int *layers) {
  if (!s) {
    for (int l = 0; l < n_layer; l++) layers[l] = l;
    return n_layer;
  }
  char why[128];
  snprintf(why, sizeof why, "expected layers in [0, %d] (e.g. 0,5,10-12), each once", n_layer - 1);
  int n = 0;
  for (const char *p = s;;) {
    char *end;
    errno = 0;
    long lo = strtol(p, &end, 10), hi = lo;
    if (end == p || !isdigit((unsigned char)*p) || errno) return bad("--attn-layers", why, s);
    p = end;
    if (*p == '-') {
      const char *q = p + 1;
      hi = strtol(q, &end, 10);
      if (end == q || !isdigit((unsigned char)*q) || errno) return bad("--attn-layers", why, s);
      p = end;
    }
    if (lo > hi || hi >= n_layer) return bad("--attn-layers", why, s);
    for (long l = lo; l <= hi; l++) {
      for (int i = 0; i < n; i++)
        if (layers[i] == l) return bad("--attn-layers", why, s);
      layers[n++] = (int)l; /* n < n_layer: every value differs and is below n_layer */
    }
    if (!*p) return n;
    if (*p++ != ',') return bad("--attn-layers", why, s);
  }
}

/* One dump's .npy file; 0, or 1 after an error line naming its flag. */
static int write_dump(const char *flag, const char *path, const float *data, int rank, const int64_t *dims) {
  char err[256];
  if (!rt_npy_write_f32(path, data, rank, dims, err, sizeof err)) return 0;
  fprintf(stderr, "pythia_gen: error: %s %s\n", flag, err);
  return 1;
}

/* --dump-logits, --dump-hidden and --dump-attentions: the prompt in one
 * pass, every position's logits, hidden states and/or attention
 * probabilities written as .npy. */
static int dump_prompt(Model *m, const Opts *o) {
  const char *flag = o->dump_logits ? "--dump-logits" : o->dump_hidden ? "--dump-hidden" : "--dump-attentions";
  if (o->dump_hidden && py_model.n_hidden == 0) {
    fprintf(stderr, "pythia_gen: error: --dump-hidden: this executable was compiled without hidden states "
                    "(compile it with pythiac --hidden-states)\n");
    return 1;
  }
  if (o->dump_attn && !py_model.attentions) {
    fprintf(stderr, "pythia_gen: error: --dump-attentions: this executable was compiled without attention "
                    "probabilities (compile it with pythiac --attentions)\n");
    return 1;
  }
  const int L = py_model.n_layer;
  int *layers = NULL, n_sel = 0; /* --attn-layers */
  if (o->dump_attn) {
    if (!(layers = rt_malloc((size_t)L * sizeof *layers))) {
      fprintf(stderr, "pythia_gen: error: out of memory\n");
      return 1;
    }
    if ((n_sel = parse_layers(o->attn_layers, L, layers)) < 0) {
      rt_free(layers);
      return 1;
    }
  }
  int32_t *ids = NULL;
  size_t n = 0;
  if (prompt_ids(m, o, &ids, &n, true)) {
    rt_free(layers);
    return 1;
  }
  if (n == 0 || n > (size_t)m->ctx) {
    fprintf(stderr, "pythia_gen: error: the prompt is %zu tokens; %s needs 1 to %d\n", n, flag, m->ctx);
    rt_free(layers);
    free(ids);
    return 1;
  }
  const size_t D = (size_t)py_model.d_model, S = (size_t)py_model.n_hidden;
  const size_t HNN = (size_t)py_model.n_head * n * n; /* one layer's attentions */
  float *all = NULL, *hidden = NULL, *attn = NULL, **attn_of = NULL;
  const char *what = NULL; /* the first buffer that could not be allocated */
  if (o->dump_logits && !(all = rt_malloc(n * (size_t)py_model.vocab * sizeof(float)))) what = "logits";
  if (!what && o->dump_hidden &&
      (!(hidden = rt_malloc(S * n * D * sizeof(float))) ||
       !(m->hidden_block = rt_malloc(S * (size_t)m->batch * D * sizeof(float)))))
    what = "hidden states";
  if (!what && o->dump_attn &&
      (!(attn = rt_malloc((size_t)n_sel * HNN * sizeof(float))) || !(attn_of = rt_calloc((size_t)L, sizeof *attn_of))))
    what = "attention probabilities";
  for (int i = 0; attn_of && i < n_sel; i++) attn_of[layers[i]] = attn + (size_t)i * HNN;
  int rc = 0;
  if (what) {
    fprintf(stderr, "pythia_gen: error: out of memory for the %zu positions' %s\n", n, what);
    rc = 1;
  } else {
    kv_reserve(m, (int)n);
    /* without --dump-logits the last position's logits go to m->logits, unused */
    forward_dump(m, ids, (int)n, 0, all, all != NULL, hidden, attn_of);
  }
  const int64_t ldims[2] = {(int64_t)n, py_model.vocab}, hdims[3] = {(int64_t)S, (int64_t)n, (int64_t)D};
  const int64_t adims[4] = {n_sel, py_model.n_head, (int64_t)n, (int64_t)n};
  if (!rc && all) rc = write_dump("--dump-logits", o->dump_logits, all, 2, ldims);
  if (!rc && hidden) rc = write_dump("--dump-hidden", o->dump_hidden, hidden, 3, hdims);
  if (!rc && attn) rc = write_dump("--dump-attentions", o->dump_attn, attn, 4, adims);
  rt_free(all);
  rt_free(hidden);
  rt_free(attn);
  rt_free(attn_of);
  rt_free(layers);
  free(ids);
  return rc;
}

/* -log softmax(row)[target] over all vocab logits, in double */
static double token_nll(const float *row, int vocab, int target) {
  double mx = row[0];
  for (int v = 1; v < vocab; v++) mx = row[v] > mx ? row[v] : mx;
  double sum = 0;
  for (int v = 0; v < vocab; v++) sum += exp((double)row[v] - mx);
  return mx + log(sum) - (double)row[target];
}

/* --perplexity: the prompt in windows of W = m->ctx tokens starting S =
 * --ppl-stride (default W) apart, each run from position 0 (no context
 * carried over).  A window [s, e) scores the tokens j in [max(s + 1, e'), e),
 * e' the previous window's end, against the logits of position j - 1: every
 * token but the first is scored once, with at least W - S tokens before it
 * once past the first window (S = W: none for a window's first token, which
 * is then not scored).  Prints one JSON line: counts, the mean NLL (nats),
 * its exp, and every scored token's NLL in order. */
static int perplexity(Model *m, const Opts *o) {
  int32_t *ids = NULL;
  size_t n = 0;
  if (prompt_ids(m, o, &ids, &n, true)) return 1;
  if (n < 2) {
    fprintf(stderr, "pythia_gen: error: the prompt is %zu tokens; --perplexity needs at least 2\n", n);
    free(ids);
    return 1;
  }
  const size_t V = (size_t)py_model.vocab, W = (size_t)m->ctx;
  if (o->ppl_stride > m->ctx) {
    fprintf(stderr, "pythia_gen: error: --ppl-stride: at most the window, %d tokens (-c), got %d\n", m->ctx,
            o->ppl_stride);
    free(ids);
    return 1;
  }
  const size_t S = o->ppl_stride ? (size_t)o->ppl_stride : W;
  double *nll = rt_malloc(n * sizeof(double));
  if (!nll) {
    fprintf(stderr, "pythia_gen: error: out of memory for --perplexity\n");
    free(ids);
    return 1;
  }
  float *rows = m->logits; /* [max_block, vocab]: every row of a block of at most m->batch */
  kv_reserve(m, (int)(n < W ? n : W));
  size_t scored = 0, windows = 0, prev_end = 0;
  double total = 0;
  for (size_t start = 0; prev_end < n; start += S) {
    const size_t end = n - start < W ? n : start + W, from = start + 1 > prev_end ? start + 1 : prev_end;
    prev_end = end;
    if (from >= end) continue; /* a last window of one token: nothing before it to score with */
    windows++;
    for (size_t done = 0; start + done < end;) {
      const size_t b = end - start - done < (size_t)m->batch ? end - start - done : (size_t)m->batch;
      forward(m, ids + start + done, (int)b, (int)done, rows, true);
      for (size_t t = 0; t < b; t++) { /* row t predicts token start + done + t + 1 */
        const size_t j = start + done + t + 1;
        if (j >= from && j < end) {
          nll[scored] = token_nll(rows + t * V, (int)V, ids[j]);
          total += nll[scored++];
        }
      }
      done += b;
    }
  }
  const double mean = total / (double)scored;
  printf("{\"tokens\": %zu, \"window\": %zu, \"stride\": %zu, \"windows\": %zu, \"scored\": %zu, "
         "\"nll\": %.9g, \"perplexity\": %.9g, \"nll_all\": [", n, W, S, windows, scored, mean, exp(mean));
  for (size_t i = 0; i < scored; i++) printf(i ? ", %.7g" : "%.7g", nll[i]);
  printf("]}\n");
  rt_free(nll);
  free(ids);
  return 0;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The median of n values (sorts v). */
static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Prints "key": [n rates] where rate i = tokens / sec[i]. */
static void print_rates(const char *key, int tokens, const double *sec, int n) {
  printf("\"%s\": [", key);
  for (int i = 0; i < n; i++) printf("%s%.3f", i ? ", " : "", tokens / sec[i]);
  printf("]");
}

/* --bench: one warm-up token, then reps x (prefill of pp pseudo-random
 * tokens from position 0, decode of tg tokens after it).  The reported
 * times are the medians over the repetitions; the per-repetition rates
 * are listed too.  A decode time is the sum of its tokens' forward calls.
 *
 * --probe-bandwidth: after each decode token the weight blob is read once
 * (rt_probe_read), outside the token's time; a repetition's probe rate is
 * its bytes read over its reading time.  Tokens and reads alternate every
 * few ms (160m) to ~0.4 s (6.9B), so both see the same second of a machine
 * whose bandwidth moves by the second. */
static int bench(Model *m, const Opts *o) {
  if (o->pp + o->tg > m->ctx) {
    fprintf(stderr, "pythia_gen: error: --pp %d + --tg %d exceed the context (%d)\n", o->pp, o->tg, m->ctx);
    return 1;
  }
  if (o->probe && m->bundle.trailer.weights_size < RT_PROBE_BLOCK) {
    fprintf(stderr, "pythia_gen: error: --probe-bandwidth: the weights (%llu bytes) are less than one %d-byte block\n",
            (unsigned long long)m->bundle.trailer.weights_size, RT_PROBE_BLOCK);
    return 1;
  }
  int32_t *ids = rt_malloc(sizeof(int32_t) * (size_t)o->pp);
  double *sec = rt_malloc(sizeof(double) * 6 * (size_t)o->reps); /* prefill, decode, probe, and sorted copies */
  if (!ids || !sec) {
    fprintf(stderr, "pythia_gen: error: out of memory for --bench\n");
    rt_free(ids);
    rt_free(sec);
    return 1;
  }
  double *pre = sec, *dec = sec + o->reps, *gbs = sec + 2 * o->reps;
  uint64_t s = 88172645463325252ull;
  for (int i = 0; i < o->pp; i++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    ids[i] = (int32_t)(s % (uint64_t)(py_model.vocab < 50000 ? py_model.vocab : 50000));
  }
  kv_reserve(m, o->pp + o->tg);
  forward(m, ids, 1, 0, NULL, false); /* warm-up: fault in code and weights */
  if (o->profile && !(m->prof = rt_profile_new(rt_pool_parallel_for, m->pool))) {
    fprintf(stderr, "pythia_gen: error: out of memory for --profile\n");
    rt_free(ids);
    rt_free(sec);
    return 1;
  }
  const size_t blob = (size_t)m->bundle.trailer.weights_size;
  size_t probe_pass = 0;
  for (int r = 0; r < o->reps; r++) {
    if (m->prof) rt_profile_phase(m->prof, 0, o->pp);
    double t0 = now();
    forward(m, ids, o->pp, 0, NULL, false);
    pre[r] = now() - t0;
    int32_t tok = ids[o->pp - 1];
    if (m->prof) rt_profile_phase(m->prof, 1, o->tg);
    double dec_s = 0, probe_s = 0, probe_bytes = 0;
    for (int i = 0; i < o->tg; i++) {
      double a = now();
      forward(m, &tok, 1, o->pp + i, NULL, false);
      double b = now();
      dec_s += b - a;
      if (o->probe) {
        probe_pass = rt_probe_read(m->pool, m->bundle.weights, blob, NULL);
        probe_bytes += (double)probe_pass;
        probe_s += now() - b;
      }
    }
    dec[r] = dec_s;
    gbs[r] = probe_s > 0 ? probe_bytes / probe_s / 1e9 : 0;
  }
  if (m->prof) rt_profile_print(m->prof, stderr);
  memcpy(sec + 3 * o->reps, sec, sizeof(double) * 3 * (size_t)o->reps);
  const double pre_s = median(sec + 3 * o->reps, o->reps), dec_s = median(sec + 4 * o->reps, o->reps);
  printf("{\"n_layer\": %d, \"d_model\": %d, \"weights\": \"%.*s\", \"weights_bytes\": %llu, \"threads\": %d, "
         "\"pp\": %d, \"tg\": %d, \"repetitions\": %d, \"prefill_s\": %.6f, \"decode_s\": %.6f, "
         "\"prefill_tok_s\": %.3f, \"decode_tok_s\": %.3f, ",
         py_model.n_layer, py_model.d_model, (int)strcspn(py_model.weights_dtype, ";"), py_model.weights_dtype,
         (unsigned long long)py_model.weights_bytes, rt_pool_threads(m->pool), o->pp, o->tg, o->reps, pre_s, dec_s,
         o->pp / pre_s, o->tg / dec_s);
  print_rates("prefill_tok_s_all", o->pp, pre, o->reps);
  printf(", ");
  print_rates("decode_tok_s_all", o->tg, dec, o->reps);
  if (o->probe) {
    printf(", \"probe_read_bytes\": %zu, \"probe_read_gb_s\": %.2f, \"probe_read_gb_s_all\": [", probe_pass,
           median(sec + 5 * o->reps, o->reps));
    for (int r = 0; r < o->reps; r++) printf("%s%.2f", r ? ", " : "", gbs[r]);
    printf("]");
  }
  const int64_t huge = rt_bundle_huge_bytes(&m->bundle);
  if (huge >= 0) printf(", \"weights_huge_frac\": %.3f", (double)huge / (double)m->bundle.trailer.weights_size);
  printf("}\n");
  rt_free(ids);
  rt_free(sec);
  return 0;
}

static int info(const Model *m) {
  printf("model:        GPT-NeoX, %d layers, d_model %d, %d heads x %d, d_ff %d, vocab %d, rotary %d dims\n",
         py_model.n_layer, py_model.d_model, py_model.n_head, py_model.head_dim, py_model.d_ff,
         py_model.vocab, py_model.rotary_ndims);
  printf("context:      %d tokens, %d per forward block\n", py_model.max_ctx, py_model.max_block);
  printf("kv-cache:     %s, %llu bytes per position\n", py_model.kv_bytes == 2 ? "f16" : "f32",
         2ull * (unsigned long long)py_model.n_layer * (unsigned long long)py_model.d_model *
             (unsigned long long)py_model.kv_bytes);
  printf("source:       %s\n", py_model.source);
  printf("options:      %s\n", py_model.options);
  printf("target:       %s\n", py_model.target);
  /* weights_dtype: "q8_0; kept wider: embed_in.w f16 (why), ..." when quantized */
  const char *wider = strchr(py_model.weights_dtype, ';');
  printf("weights:      %.*s, %llu bytes, xxh3 %016llx\n", (int)strcspn(py_model.weights_dtype, ";"),
         py_model.weights_dtype, (unsigned long long)py_model.weights_bytes,
         (unsigned long long)m->bundle.trailer.weights_hash);
  if (wider) printf("kept wider:   %s\n", wider + strlen("; kept wider: "));
  if (m->weights_file) printf("weights-file: %s\n", m->weights_file);
  printf("tokenizer:    %s\n", m->tok ? "compiled in" : "none (use --ids)");
  printf("arena:        %llu bytes\n", (unsigned long long)py_model.arena_bytes);
  if (py_model.n_hidden) printf("hidden:       %d states of %d floats a position (--dump-hidden)\n", py_model.n_hidden, py_model.d_model);
  else printf("hidden:       none (pythiac --hidden-states adds them)\n");
  if (py_model.attentions) printf("attentions:   %d layers x %d heads (--dump-attentions)\n", py_model.n_layer, py_model.n_head);
  else printf("attentions:   none (pythiac --attentions adds them)\n");
  printf("abi:          %u\n", py_model.abi_version);
  printf("config:       %s\n", py_model.config_json);
  return 0;
}

static int verify(const Model *m) {
  uint64_t h = rt_bundle_hash(&m->bundle);
  if (h != m->bundle.trailer.weights_hash) {
    fprintf(stderr, "pythia_gen: error: weights are corrupt: xxh3 %016llx, expected %016llx\n",
            (unsigned long long)h, (unsigned long long)m->bundle.trailer.weights_hash);
    return 1;
  }
  printf("weights OK: %llu bytes, xxh3 %016llx\n", (unsigned long long)m->bundle.trailer.weights_size,
         (unsigned long long)h);
  return 0;
}

static int tokenize(const Model *m, const Opts *o) {
  int32_t *ids = NULL;
  size_t n = 0;
  if (!o->ids && !m->tok) {
    fprintf(stderr, "pythia_gen: error: --tokenize: this executable was compiled without a tokenizer\n");
    return 1;
  }
  if (prompt_ids(m, o, &ids, &n, false)) return 1;
  print_ids_json(ids, n);
  free(ids);
  return 0;
}

static int detokenize(const Model *m, const Opts *o) {
  if (!m->tok) {
    fprintf(stderr, "pythia_gen: error: --detokenize: this executable was compiled without a tokenizer\n");
    return 1;
  }
  if (!o->ids) {
    fprintf(stderr, "pythia_gen: error: --detokenize needs --ids 1,2,3\n");
    return 1;
  }
  int32_t *ids = NULL;
  size_t n = 0;
  if (*o->ids && parse_ids(o->ids, &ids, &n)) return 1;
  char *text = NULL, err[256];
  size_t len = 0;
  if (rt_tok_decode(m->tok, ids, n, &text, &len, err, sizeof err)) {
    fprintf(stderr, "pythia_gen: error: --ids: %s\n", err);
    free(ids);
    return 1;
  }
  fwrite(text, 1, len, stdout);
  free(text);
  free(ids);
  return 0;
}

typedef struct {
  Model *m;
  const Opts *o;
  int rc;
} Job;

static void *run_job(void *arg) {
  Job *j = arg;
  switch (j->o->mode) {
  case MODE_INFO: j->rc = info(j->m); break;
  case MODE_VERIFY: j->rc = verify(j->m); break;
  case MODE_TOKENIZE: j->rc = tokenize(j->m, j->o); break;
  case MODE_DETOKENIZE: j->rc = detokenize(j->m, j->o); break;
  case MODE_BENCH: j->rc = bench(j->m, j->o); break;
  case MODE_PERPLEXITY: j->rc = perplexity(j->m, j->o); break;
  default: j->rc = j->o->dump_logits || j->o->dump_hidden || j->o->dump_attn ? dump_prompt(j->m, j->o) : generate(j->m, j->o); break;
  }
  return NULL;
}

int main(int argc, char **argv) {
  Opts o;
  if (parse_opts(argc, argv, &o)) return 2;
  bool compute = o.mode == MODE_GENERATE || o.mode == MODE_BENCH || o.mode == MODE_PERPLEXITY;
  Model m;
  if (model_open(&m, &o, compute)) return 1;
  Job job = {&m, &o, 1};
  if (compute) {
    /* the calling thread runs kernels too, whose stack buffers need more
     * than a low `ulimit -s` allows the main thread: compute on a thread
     * with its own stack, as the pool's workers do */
    pthread_t th;
    if (rt_thread_start(&th, run_job, &job)) {
      fprintf(stderr, "pythia_gen: error: cannot start the compute thread\n");
      model_close(&m);
      return 1;
    }
    pthread_join(th, NULL);
  } else {
    run_job(&job);
  }
  model_close(&m);
  return job.rc;
}
