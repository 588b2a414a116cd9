/* main.c — the pythiac driver: command line, then the pipeline
 *   config + safetensors -> IR -> passes -> LLVM object -> link -> bundle.
 * Only this file decides to exit; every stage returns errors up. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../codegen/codegen.h"
#include "../frontend/config.h"
#include "../frontend/safetensors.h"
#include "../frontend/tokenizer_import.h"
#include "../link/link.h"
#include "../link/quantize.h"
#include "../../ir/neox.h"
#include "../../passes/pass.h"

typedef struct {
  const char *model_dir, *out, *target, *emit, *weights, *kv_cache, *print_after, *tokenizer;
  DType kv_dtype; /* --kv-cache, parsed */
  char disabled[512];
  int max_block, max_ctx, opt_level, verbose, tile_n, tile_rn, tile_rt, tile_k, tile_streams, prefetch, no_stage,
      no_share_kernels, hidden_states, attentions;
  char options[2048];
} Cli;

static void usage(FILE *f) {
  fputs("usage: pythiac [options] [MODEL_DIR]\n"
        "Compiles a GPT-NeoX (Pythia) Hugging Face model folder (default: .) into one\n"
        "standalone executable.\n\n"
        "  -o FILE               output file (default: pythia_gen)\n"
        "  --target=NAME         x86-64 | x86-64-v2 | x86-64-v3 | x86-64-v4 | x86-64-v4-vnni |\n"
        "                        native (default)\n"
        "  --emit=KIND           exe (default) | obj | llvm | asm | ir | weights (the weight\n"
        "                        bundle alone, for pythia_gen --weights-file)\n"
        "  --weights=DTYPE       f32 | f16 | bf16 | q8_0 | q4_0 (default: the checkpoint's own\n"
        "                        dtype; q8_0/q4_0: docs/quantization.md)\n"
        "  --kv-cache=DTYPE      f32 (default) | f16: the K/V cache's element type (f16 halves\n"
        "                        its memory and the bytes attention reads; rounds K and V)\n"
        "  --tokenizer FILE      tokenizer.json (default: MODEL_DIR/tokenizer.json if present)\n"
        "  --print-after=PASS    print the IR after PASS (or 'all') to stdout\n"
        "  --max-block=N         most tokens one forward call takes (default 256)\n"
        "  --ctx=N               context length compiled in (default max_position_embeddings)\n"
        "  --no-fuse             switch off every fusion pass\n"
        "  --no-fuse=P,Q         switch off these fusion passes\n"
        "  --fuse=P,Q            only these fusion passes (fold_layernorm, fuse_parallel_residual,\n"
        "                        fuse_epilogue, fuse_qkv_rotary)\n"
        "  --tile=TN[,RN[,RT[,KC[,S]]]]  matmul blocking: W rows per cache block, panel rows\n"
        "                        (a multiple of the vector width), tokens per register tile,\n"
        "                        k chunk, panels a decode GEMV streams at once\n"
        "                        (default: chosen from the target; RN: 64 on AMD CPUs with AVX-512,\n"
        "                        else 2 vectors; S: 1 on AMD CPUs, else by registers)\n"
        "  --prefetch=BYTES      decode matmuls prefetch W this far ahead (default: 2048 on Intel CPUs,\n"
        "                        0 on AMD and the generic x86-64 levels: hardware prefetch only)\n"
        "  --no-stage            prefill widens 16-bit W per register tile, not once per k chunk\n"
        "  --no-share-kernels    every op gets its own kernel code with its addresses as\n"
        "                        constants (default: ops whose code is the same, as in every\n"
        "                        layer, share one function; same results, ~10x faster codegen)\n"
        "  --hidden-states       the executable can also write every layer's hidden state\n"
        "                        (pythia_gen --dump-hidden), as Hugging Face's output_hidden_states\n"
        "  --attentions          the executable can also write every layer's attention\n"
        "                        probabilities (pythia_gen --dump-attentions), as Hugging Face's\n"
        "                        output_attentions\n"
        "  -O0 .. -O3            LLVM optimisation level (default -O3)\n"
        "  -v                    report each stage's time on stderr\n"
        "  -h, --help            this text\n",
        f);
}

static int parse_int(const char *flag, const char *s, int lo, int hi, int *out, Err *e) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (!*s || *end || errno || v < lo || v > hi)
    return err_set(e, "%s: expected an integer in [%d, %d], got \"%s\"", flag, lo, hi, s);
  *out = (int)v;
  return 0;
}

/* --flag=VALUE or --flag VALUE */
static const char *flag_value(const char *flag, int argc, char **argv, int *i) {
  size_t n = strlen(flag);
  if (!strncmp(argv[*i], flag, n) && argv[*i][n] == '=') return argv[*i] + n + 1;
  if (!strcmp(argv[*i], flag) && *i + 1 < argc) return argv[++*i];
  return NULL;
}

/* --tile=TN[,RN[,RT[,KC[,S]]]] */
#define TILE_USAGE "expected TN[,RN[,RT[,KC[,S]]]] (TN 1..65536, RN 1..128, RT 1..16, KC 1..1048576, S 1..8)"
static int parse_tile(const char *v, Cli *c, Err *e) {
  char buf[64];
  snprintf(buf, sizeof buf, "%s", v);
  int *dst[5] = {&c->tile_n, &c->tile_rn, &c->tile_rt, &c->tile_k, &c->tile_streams};
  const int hi[5] = {65536, 128, 16, 1 << 20, 8};
  int n = 0;
  size_t len = strlen(v);
  if (!len || v[0] == ',' || v[len - 1] == ',' || strstr(v, ",,")) /* strtok would skip empty fields */
    return err_set(e, "--tile=%s: " TILE_USAGE, v);
  for (char *save = NULL, *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save), n++)
    if (n == 5 || parse_int("--tile", p, 1, hi[n], dst[n], e)) {
      Err inner = *e;
      e->set = 0;
      return err_set(e, "--tile=%s: " TILE_USAGE "%s%s", v, inner.set ? ": " : "", inner.set ? inner.msg : "");
    }
  return 0;
}

/* Fusion passes off: all (list NULL), those in list, or all but those (only). */
static void set_fusion(Cli *c, const char *list, int only) {
  if (!list || only) {
    c->disabled[0] = 0;
    for (int i = 0; i < pass_count; i++) {
      const Pass *p = &pass_pipeline[i];
      if (!p->optional) continue;
      if (list) {
        char padded[256], name[80];
        snprintf(padded, sizeof padded, ",%s,", list);
        snprintf(name, sizeof name, ",%s,", p->name);
        if (strstr(padded, name)) continue;
      }
      size_t n = strlen(c->disabled);
      snprintf(c->disabled + n, sizeof c->disabled - n, "%s%s", n ? "," : "", p->name);
    }
  } else {
    size_t n = strlen(c->disabled);
    snprintf(c->disabled + n, sizeof c->disabled - n, "%s%s", n ? "," : "", list);
  }
}

static int parse_cli(int argc, char **argv, Cli *c, Err *e) {
  *c = (Cli){.model_dir = ".", .out = "pythia_gen", .target = "native", .emit = "exe",
             .max_block = 256, .opt_level = 3, .prefetch = -1};
  for (int i = 1; i < argc; i++) {
    size_t used = strlen(c->options);
    snprintf(c->options + used, sizeof c->options - used, "%s%s", used ? " " : "", argv[i]);
  }
  bool have_dir = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      exit(0);
    } else if (!strcmp(a, "-o")) {
      if (i + 1 >= argc || !*argv[i + 1]) return err_set(e, "-o: missing file name");
      c->out = argv[++i];
    } else if ((v = flag_value("--target", argc, argv, &i))) c->target = v;
    else if ((v = flag_value("--emit", argc, argv, &i))) c->emit = v;
    else if ((v = flag_value("--weights", argc, argv, &i))) c->weights = v;
    else if ((v = flag_value("--kv-cache", argc, argv, &i))) c->kv_cache = v;
    else if ((v = flag_value("--tokenizer", argc, argv, &i))) c->tokenizer = v;
    else if ((v = flag_value("--print-after", argc, argv, &i))) c->print_after = v;
    else if ((v = flag_value("--max-block", argc, argv, &i))) {
      if (parse_int("--max-block", v, 1, 1 << 16, &c->max_block, e)) return -1;
    } else if ((v = flag_value("--ctx", argc, argv, &i))) {
      if (parse_int("--ctx", v, 1, 1 << 20, &c->max_ctx, e)) return -1;
    } else if ((v = flag_value("--tile", argc, argv, &i))) {
      if (parse_tile(v, c, e)) return -1;
    } else if ((v = flag_value("--prefetch", argc, argv, &i))) {
      if (parse_int("--prefetch", v, 0, 1 << 20, &c->prefetch, e)) return -1;
    } else if (!strcmp(a, "--no-share-kernels")) {
      c->no_share_kernels = 1;
    } else if (!strcmp(a, "--no-stage")) {
      c->no_stage = 1;
    } else if (!strcmp(a, "--hidden-states")) {
      c->hidden_states = 1;
    } else if (!strcmp(a, "--attentions")) {
      c->attentions = 1;
    } else if (!strcmp(a, "--no-fuse")) {
      set_fusion(c, NULL, 0);
    } else if (!strncmp(a, "--no-fuse=", 10) || !strncmp(a, "--fuse=", 7)) {
      int only = a[2] == 'f';
      const char *list = strchr(a, '=') + 1;
      if (!*list) return err_set(e, "%.*s: expected a comma-separated list of fusion passes", (int)(strchr(a, '=') - a), a);
      if (pass_check_names(list, 1, e)) {
        Err inner = *e;
        e->set = 0;
        return err_set(e, "%s: %s", a, inner.msg);
      }
      set_fusion(c, list, only);
    } else if (!strncmp(a, "-O", 2) && a[2] >= '0' && a[2] <= '3' && !a[3]) c->opt_level = a[2] - '0';
    else if (!strcmp(a, "-v")) c->verbose = 1;
    else if (a[0] == '-') {
      static const char *takes_value[] = {"--target", "--emit", "--weights", "--kv-cache", "--tokenizer",
                                          "--print-after", "--max-block", "--ctx", "--tile", "--prefetch"};
      for (size_t k = 0; k < sizeof takes_value / sizeof *takes_value; k++)
        if (!strcmp(a, takes_value[k])) return err_set(e, "%s: missing value", a);
      return err_set(e, "unknown option \"%s\" (see pythiac --help)", a);
    }
    else if (have_dir) return err_set(e, "more than one model folder given (\"%s\" and \"%s\")", c->model_dir, a);
    else c->model_dir = a, have_dir = true;
  }
  const char *emits[] = {"exe", "obj", "llvm", "asm", "ir", "weights"};
  bool ok = false;
  for (int i = 0; i < 6; i++) ok |= !strcmp(c->emit, emits[i]);
  if (!ok) return err_set(e, "--emit=%s: expected exe, obj, llvm, asm, ir or weights", c->emit);
  DType dt;
  if (c->weights && (dtype_parse(c->weights, &dt) || dt == DT_I32))
    return err_set(e, "--weights=%s: expected f32, f16, bf16, q8_0 or q4_0", c->weights);
  c->kv_dtype = DT_F32;
  if (c->kv_cache && (dtype_parse(c->kv_cache, &c->kv_dtype) || (c->kv_dtype != DT_F32 && c->kv_dtype != DT_F16)))
    return err_set(e, "--kv-cache=%s: expected f32 or f16", c->kv_cache);
  if (c->tokenizer && !*c->tokenizer) return err_set(e, "--tokenizer: missing file name");
  /* the pipeline matches one name: a list would pass the check below and print nothing */
  if (c->print_after && (!*c->print_after || strchr(c->print_after, ',')))
    return err_set(e, "--print-after=%s: expected one pass name or 'all'", c->print_after);
  if (c->print_after && strcmp(c->print_after, "all") && pass_check_names(c->print_after, 0, e)) {
    Err inner = *e;
    e->set = 0;
    return err_set(e, "--print-after=%s: %s", c->print_after, inner.msg);
  }
  return 0;
}

static DType checkpoint_dtype(const StModel *m) {
  const StTensor *t = st_find(m, "gpt_neox.embed_in.weight");
  if (t && t->dtype == ST_F16) return DT_F16;
  if (t && t->dtype == ST_BF16) return DT_BF16;
  return DT_F32;
}

static char *read_text(const char *path, Err *e) {
  FILE *f = fopen(path, "rb");
  if (!f) return err_set(e, "%s: cannot open: %s", path, strerror(errno)), NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  size_t got = fread(s, 1, (size_t)n, f);
  s[got] = 0;
  fclose(f);
  return s;
}

/* Fails early, before minutes of work, when the output cannot be written.
 * `path` may be a temporary beside `out`; messages name `out`, the user's. */
static int check_writable(const char *path, const char *out, Err *e) {
  struct stat st;
  if (stat(out, &st) == 0 && S_ISDIR(st.st_mode)) return err_set(e, "-o %s: is a directory", out);
  int fd = open(path, O_WRONLY | O_CREAT, 0755);
  if (fd < 0) return err_set(e, "-o %s: cannot write: %s", out, strerror(errno));
  close(fd);
  return 0;
}

/* -v: one line per finished stage on stderr, with its wall time. */
static void stage_done(const Cli *c, const char *stage, double *t) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  double now = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
  if (c->verbose && *t) fprintf(stderr, "pythiac: %-9s %8.3f s\n", stage, now - *t);
  *t = now;
}

static int compile(const Cli *c, Err *e) {
  double t = 0;
  stage_done(c, "", &t);
  NeoxConfig cfg;
  if (neox_config_load(c->model_dir, &cfg, e)) return -1;
  StModel m = {0};
  if (st_open_dir(c->model_dir, &m, e)) return -1;
  int rc = -1;
  Arena arena = {0};
  uint8_t *tok = NULL;
  size_t tok_size = 0;
  char *config_text = NULL;
  char tmp_obj[PATH_MAX] = "", tmp_exe[PATH_MAX] = "";
  CgTarget *target = NULL;
  if (neox_check_tensors(&cfg, &m, e)) goto done;
  stage_done(c, "read", &t);
  DType wdt = checkpoint_dtype(&m);
  if (c->weights) dtype_parse(c->weights, &wdt);
  DType qdt = wdt; /* q8_0/q4_0: matrices that cannot be quantized keep the checkpoint's 16 bits */
  if (dtype_is_quant(qdt)) wdt = checkpoint_dtype(&m) == DT_BF16 ? DT_BF16 : DT_F16;
  GraphDims d = {
      .n_layer = cfg.num_hidden_layers, .d_model = cfg.hidden_size,
      .n_head = cfg.num_attention_heads, .head_dim = cfg.head_dim,
      .d_ff = cfg.intermediate_size, .vocab = cfg.vocab_size,
      .max_ctx = c->max_ctx ? c->max_ctx : cfg.max_position_embeddings,
      .rotary_ndims = cfg.rotary_ndims, .max_block = c->max_block,
      .rotary_base = cfg.rotary_emb_base, .eps = cfg.layer_norm_eps,
      .parallel_residual = cfg.use_parallel_residual, .tied = cfg.tie_word_embeddings,
      .attention_bias = cfg.attention_bias};
  if (d.max_block > d.max_ctx) d.max_block = d.max_ctx;
  if (!(target = cg_target_new(c->target, e))) goto done;

  Graph *g = ir_build_neox(&arena, &d, wdt, c->kv_dtype,
                           (c->hidden_states ? NEOX_HIDDEN_STATES : 0u) | (c->attentions ? NEOX_ATTENTIONS : 0u));
  char kept[400] = "", wdesc[480];
  if (dtype_is_quant(qdt)) quant_select(g, qdt, kept, sizeof kept);
  snprintf(wdesc, sizeof wdesc, "%s%s%s", dtype_name(qdt), *kept ? "; kept wider: " : "", kept);
  if (ir_verify(g, e)) goto done;
  /* decode streams and prefetch not given: the target's choice */
  PassOptions po = {.disabled = c->disabled, .print_after = c->print_after, .print_to = stdout,
                    .verify_each = 1, .tile_n = c->tile_n,
                    .tile_rn = c->tile_rn > 0 ? c->tile_rn : cg_target_panel_rows(target),
                    .tile_rt = c->tile_rt, .tile_k = c->tile_k,
                    .tile_streams = c->tile_streams > 0 ? c->tile_streams : cg_target_decode_streams(target),
                    .prefetch = c->prefetch >= 0 ? c->prefetch : cg_target_decode_prefetch(target),
                    .no_stage = c->no_stage, .vector_width = cg_target_vector_width(target)};
  if (pass_run_pipeline(g, &po, e)) goto done;
  stage_done(c, "passes", &t);
  if (!strcmp(c->emit, "ir")) {
    FILE *f = strcmp(c->out, "-") ? fopen(c->out, "w") : stdout;
    if (!f) {
      err_set(e, "-o %s: cannot write: %s", c->out, strerror(errno));
      goto done;
    }
    ir_print(g, f);
    if (f != stdout) fclose(f);
    rc = 0;
    goto done;
  }
  /* the tokenizer: compiled in when there is one; without it only --ids works */
  char tok_path[PATH_MAX];
  if (c->tokenizer) snprintf(tok_path, sizeof tok_path, "%s", c->tokenizer);
  else snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", c->model_dir);
  if (c->tokenizer || access(tok_path, F_OK) == 0) {
    if (tok_import_file(tok_path, &tok, &tok_size, e)) goto done;
    stage_done(c, "tokenizer", &t);
  }
  char config_path[PATH_MAX];
  snprintf(config_path, sizeof config_path, "%s/config.json", c->model_dir);
  if (!(config_text = read_text(config_path, e))) goto done;
  char source[PATH_MAX];
  if (!realpath(c->model_dir, source)) snprintf(source, sizeof source, "%s", c->model_dir);
  uint64_t layout_hash = weights_layout_hash(g);
  CgMeta meta = {.config_json = config_text, .source = source, .options = c->options,
                 .weights_dtype = wdesc, .layout_hash = layout_hash,
                 .opt_level = c->opt_level, .share_kernels = !c->no_share_kernels};
  CgEmitKind kind = !strcmp(c->emit, "llvm") ? CG_EMIT_LLVM : !strcmp(c->emit, "asm") ? CG_EMIT_ASM : CG_EMIT_OBJ;
  /* --emit=weights: the bundle with no code before it (pythia_gen --weights-file) */
  const bool weights_only = !strcmp(c->emit, "weights");
  if (!weights_only && strcmp(c->emit, "exe")) {
    if (check_writable(c->out, c->out, e)) goto done;
    rc = cg_emit(g, target, &meta, kind, c->out, e);
    if (rc && strcmp(c->out, "-")) unlink(c->out); /* no half-written output */
    stage_done(c, "codegen", &t);
    goto done;
  }
  snprintf(tmp_exe, sizeof tmp_exe, "%s.tmp%d", c->out, (int)getpid());
  if (check_writable(tmp_exe, c->out, e)) goto done;
  if (!weights_only) {
    snprintf(tmp_obj, sizeof tmp_obj, "%s.o", tmp_exe);
    if (cg_emit(g, target, &meta, CG_EMIT_OBJ, tmp_obj, e)) goto done;
    stage_done(c, "codegen", &t);
    if (link_objects(tmp_obj, tmp_exe, e)) goto done;
    stage_done(c, "link", &t);
  }
  if (bundle_append(tmp_exe, g, &m, tok, tok_size, layout_hash, e)) goto done;
  stage_done(c, "weights", &t);
  chmod(tmp_exe, weights_only ? 0644 : 0755);
  if (rename(tmp_exe, c->out)) {
    err_set(e, "-o %s: cannot write: %s", c->out, strerror(errno));
    goto done;
  }
  tmp_exe[0] = 0;
  if (!tok && !weights_only) /* after success only, so that an error stays the one line on stderr */
    fprintf(stderr, "pythiac: note: %s not found; the executable takes only --ids and prints ids\n",
            tok_path);
  rc = 0;
done:
  if (tmp_obj[0]) unlink(tmp_obj);
  if (tmp_exe[0]) unlink(tmp_exe);
  cg_target_free(target);
  free(tok);
  free(config_text);
  arena_free(&arena);
  st_close(&m);
  return rc;
}

int main(int argc, char **argv) {
  Err e = {0};
  Cli c;
  if (parse_cli(argc, argv, &c, &e) || compile(&c, &e)) {
    fprintf(stderr, "pythiac: error: %s\n", e.msg);
    return 1;
  }
  return 0;
}
