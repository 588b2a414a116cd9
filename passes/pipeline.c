/* pipeline.c — the one place that lists every pass, in order.  Like QBE's
 * main loop: a straight line of passes, the IR checked after each. */
#include "pass.h"

#include <string.h>

const Pass pass_pipeline[] = {
    {"fold_layernorm", pass_fold_layernorm, 1, "fold LayerNorm gamma/beta into the next matmul's weights"},
    {"fuse_parallel_residual", pass_fuse_parallel_residual, 1, "add both parallel branches in the MLP's epilogue"},
    {"fuse_epilogue", pass_fuse_epilogue, 1, "fuse GELU and residual adds into the producing matmul"},
    {"fuse_qkv_rotary", pass_fuse_qkv_rotary, 1, "split QKV, rotate q and k, write the KV cache in one op"},
    {"tile_matmul", pass_tile_matmul, 0, "choose cache and register blocking for every matmul"},
    {"plan_weights", pass_plan_weights, 0, "give every weight its storage offset in the blob"},
    {"plan_memory", pass_plan_memory, 0, "place every intermediate in one reused arena"},
};
const int pass_count = sizeof pass_pipeline / sizeof pass_pipeline[0];

static int in_list(const char *list, const char *name) {
  if (!list) return 0;
  size_t n = strlen(name);
  for (const char *p = list; *p;) {
    const char *c = strchr(p, ',');
    size_t len = c ? (size_t)(c - p) : strlen(p);
    if (len == n && !strncmp(p, name, n)) return 1;
    if (!c) break;
    p = c + 1;
  }
  return 0;
}

int pass_is_disabled(const PassOptions *o, const char *name) {
  return o && in_list(o->disabled, name);
}

int pass_check_names(const char *list, int optional_only, Err *e) {
  if (!list) return 0;
  char buf[256];
  for (const char *p = list; *p;) {
    const char *c = strchr(p, ',');
    size_t len = c ? (size_t)(c - p) : strlen(p);
    if (len >= sizeof buf) len = sizeof buf - 1;
    memcpy(buf, p, len);
    buf[len] = 0;
    int found = 0;
    for (int i = 0; i < pass_count; i++)
      if (!strcmp(pass_pipeline[i].name, buf) && (!optional_only || pass_pipeline[i].optional))
        found = 1;
    if (!found) {
      char names[512] = "";
      for (int i = 0; i < pass_count; i++)
        if (!optional_only || pass_pipeline[i].optional) {
          if (*names) strcat(names, ", ");
          strcat(names, pass_pipeline[i].name);
        }
      return err_set(e, "unknown pass \"%s\" (%s: %s)", buf,
                     optional_only ? "passes that can be switched off" : "passes", names);
    }
    if (!c) break;
    p = c + 1;
  }
  return 0;
}

int pass_run_pipeline(Graph *g, const PassOptions *o, Err *e) {
  for (int i = 0; i < pass_count; i++) {
    const Pass *p = &pass_pipeline[i];
    if (p->optional && pass_is_disabled(o, p->name)) continue;
    if (p->run(g, o, e)) {
      Err inner = *e;
      e->set = 0;
      return err_set(e, "pass %s: %s", p->name, inner.msg);
    }
    if (o->verify_each && ir_verify(g, e)) {
      Err inner = *e;
      e->set = 0;
      return err_set(e, "IR invalid after pass %s: %s", p->name, inner.msg);
    }
    if (o->print_after && (!strcmp(o->print_after, "all") || !strcmp(o->print_after, p->name))) {
      fprintf(o->print_to ? o->print_to : stdout, "; after %s\n", p->name);
      ir_print(g, o->print_to ? o->print_to : stdout);
    }
  }
  return 0;
}
