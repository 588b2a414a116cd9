#!/usr/bin/env python3
"""explore_schedules.py -- compile one model under several fusion and tiling
choices, check that each computes what the first one does, and time them
against each other.

    python3 examples/explore_schedules.py MODEL_DIR
        [--variant NAME=FLAGS ...] [--rounds 5] [--pp 128] [--tg 64] [-t N]
        [--repetitions 3] [--check-tokens 16] [--atol 1e-3] [--rtol 1e-3]
        [--profile] [--probe-bandwidth] [--out DIR] [--json FILE] [--pythiac PATH]

A variant is a name and the pythiac flags it adds, e.g.
`--variant 'no-epilogue=--no-fuse=fuse_epilogue'` or
`--variant 'tn256=--tile=256,32,12'`. The first variant is the baseline
that the others are compared with. Without --variant: the default pipeline,
--no-fuse, and each optional pass switched off on its own.

For every variant the script
1. compiles MODEL_DIR (`pythiac FLAGS -o OUT/NAME.gen`), timing it, counts
   the ops of its IR (`--emit=ir`), and says when that IR is the same text
   as an earlier variant's (the flags changed nothing the IR records: a
   pass with nothing to do on this model, say; LLVM's -O level and
   --target's instruction choices below the vector width do not show in
   the IR);
2. runs --check-tokens fixed pseudo-random ids through it (`--dump-logits`)
   and compares every position's logits with the baseline's: the largest
   |difference|, and how many positions' argmax agree. A variant is "ok"
   when every |a - b| <= atol + rtol * |b|, otherwise "DIFFERS";
3. benchmarks it (`--bench --pp --tg -t --repetitions`) once per round. The
   rounds interleave the variants and rotate their order, so a minute when
   the machine is slow or fast lands on all of them; the table gives each
   variant's medians, the median over rounds of its ratio to the baseline
   in the same round, and the rounds in which it was faster than the
   baseline (a sign count: on a noisy machine, believe a ratio only when
   the count is lopsided);
   With --probe-bandwidth the runs also read the weights once after each
   decoded token (`pythia_gen --bench --probe-bandwidth`) and the table adds
   decode at equal bandwidth: tokens/s per GB/s the machine gave in the same
   seconds (the median over a run's repetitions), its ratio to the baseline
   and its sign count. The machine's bandwidth moves by the second (bursts
   of 2-12 s at ~1.7x), which swings tokens/s by as much as most schedule
   choices do; this ratio takes that out, so fewer rounds settle a
   comparison of decode schedules (prefill is not affected);
4. with --profile, runs each once with `--bench --profile` and sums the
   per-op times by op kind (microseconds per token, and each kind's share of
   the variant's total), so one sees where a choice moved the time. Each
   profile is one run: compare the shares, the totals carry that minute's
   speed.

Prints a Markdown table on stdout. Exit status: 0; 1 if a compile or run
failed or a variant DIFFERS from the baseline; 2 for a bad command line.
Needs only Python's standard library (and pythiac, built).
"""
import argparse
import json
import os
import re
import shlex
import statistics
import struct
import subprocess
import sys
import time
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PYTHIAC = os.environ.get("PYTHIAC", os.path.join(HERE, "..", "build", "pythiac"))
# The passes --no-fuse=P can switch off (docs/passes.md).
OPTIONAL_PASSES = ["fold_layernorm", "fuse_parallel_residual", "fuse_epilogue", "fuse_qkv_rotary"]
NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")


class Failure(Exception):
    """A compile or run that failed; the message says which and why."""


def parse_variant(spec):
    """'NAME=FLAGS' -> (name, [flags]); raises ValueError on a bad spec."""
    name, sep, flags = spec.partition("=")
    if not sep or not NAME_RE.match(name):
        raise ValueError("--variant %r: expected NAME=FLAGS, NAME of letters, digits, '_', '.', '+' or '-'" % spec)
    try:
        words = shlex.split(flags)
    except ValueError as e:
        raise ValueError("--variant %r: %s" % (spec, e)) from None
    for w in words:
        if w == "-o" or w.startswith("--emit") or not w.startswith("-"):
            raise ValueError("--variant %r: %r is not allowed (the script sets -o, --emit and the model folder)" % (spec, w))
    return name, words


def default_variants():
    return [("default", []), ("no-fuse", ["--no-fuse"])] + [
        ("no-" + p, ["--no-fuse=" + p]) for p in OPTIONAL_PASSES]


def run(cmd, what):
    """Runs cmd; returns the CompletedProcess, or raises Failure naming what
    failed with the last line of its stderr."""
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise Failure("%s: exit %d: %s" % (what, r.returncode, last))
    return r


def count_ops(ir_text):
    """Op kinds of an IR dump and how many of each, leaving out the inputs,
    weights and caches (docs/ir.md: `  %name: type = kind operands ...`)."""
    kinds = {}
    for line in ir_text.splitlines():
        m = re.match(r"^\s+%\S+: \S+ = (\w+)", line)
        if m and m.group(1) not in ("input", "weight", "cache"):
            kinds[m.group(1)] = kinds.get(m.group(1), 0) + 1
    return kinds


def read_npy_f32(path):
    """A float32 C-order .npy as written by --dump-logits -> (shape, array('f'))."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x93NUMPY":
        raise Failure("%s: not a .npy file" % path)
    major = data[6]
    if major == 1:
        hlen, start = struct.unpack("<H", data[8:10])[0], 10
    else:
        hlen, start = struct.unpack("<I", data[8:12])[0], 12
    header = data[start:start + hlen].decode("latin1")
    if "'<f4'" not in header or "'fortran_order': False" not in header:
        raise Failure("%s: expected little-endian float32 in C order, got %s" % (path, header.strip()))
    shape = tuple(int(x) for x in re.search(r"'shape': \(([^)]*)\)", header).group(1).split(",") if x.strip())
    values = array("f")
    values.frombytes(data[start + hlen:])
    n = 1
    for s in shape:
        n *= s
    if len(values) != n:
        raise Failure("%s: %d values for shape %s" % (path, len(values), shape))
    return shape, values


def compare_logits(a, b, atol, rtol):
    """a against the baseline b (each (shape, values)): the largest |a - b|,
    positions whose argmax agrees, and whether every |a - b| <= atol + rtol|b|."""
    (sa, va), (sb, vb) = a, b
    if sa != sb:
        return {"ok": False, "max_abs_diff": None, "argmax_agree": 0, "positions": sb[0] if sb else 0,
                "note": "shape %s, baseline %s" % (sa, sb)}
    rows, cols = sb
    worst, ok, agree = 0.0, True, 0
    for t in range(rows):
        ra, rb = va[t * cols:(t + 1) * cols], vb[t * cols:(t + 1) * cols]
        for x, y in zip(ra, rb):
            d = abs(x - y)
            if not d <= atol + rtol * abs(y):  # also catches NaN
                ok = False
            if d > worst or d != d:
                worst = d
        agree += max(range(cols), key=ra.__getitem__) == max(range(cols), key=rb.__getitem__)
    return {"ok": ok, "max_abs_diff": worst, "argmax_agree": agree, "positions": rows, "note": ""}


def check_ids(n, vocab):
    """n fixed pseudo-random ids in [2, vocab) (an LCG: the same on every run)."""
    ids, x = [], 12345
    for _ in range(n):
        x = (x * 1103515245 + 12345) % (1 << 31)
        ids.append(2 + x % max(1, vocab - 2))
    return ids


def profile_by_kind(stderr):
    """Sums the --profile table (`idx kind %name pf_us pf% dec_us dec%`) by op
    kind -> {kind: [prefill µs/token, decode µs/token]}."""
    kinds = {}
    for line in stderr.splitlines():
        m = re.match(r"^\s*\d+\s+(\w+)\s+%\S+\s+([\d.]+)\s+[\d.]+%\s+([\d.]+)\s+[\d.]+%", line)
        if m:
            k = kinds.setdefault(m.group(1), [0.0, 0.0])
            k[0] += float(m.group(2))
            k[1] += float(m.group(3))
    if not kinds:
        raise Failure("--profile printed no op table")
    return kinds


def median_ratio(xs, bs):
    return statistics.median(x / b for x, b in zip(xs, bs))


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                    help="a pythiac flag set to compare (repeatable; the first is the baseline)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pp", type=int, default=128)
    ap.add_argument("--tg", type=int, default=64)
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repetitions", type=int, default=3, help="pythia_gen --repetitions of each run")
    ap.add_argument("--check-tokens", type=int, default=16, help="prompt length of the logits check")
    ap.add_argument("--atol", type=float, default=1e-3)
    ap.add_argument("--rtol", type=float, default=1e-3)
    ap.add_argument("--profile", action="store_true", help="also time each op kind")
    ap.add_argument("--probe-bandwidth", action="store_true",
                    help="also compare decode at equal bandwidth (the weights read between decode tokens)")
    ap.add_argument("--out", default=None, help="folder for the executables (default: build/explore)")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write every measurement as JSON")
    ap.add_argument("--pythiac", default=DEFAULT_PYTHIAC)
    a = ap.parse_args(argv)
    for flag, v, lo in (("--rounds", a.rounds, 0), ("--pp", a.pp, 1), ("--tg", a.tg, 1), ("-t", a.threads, 1),
                        ("--repetitions", a.repetitions, 1), ("--check-tokens", a.check_tokens, 1)):
        if v < lo:
            ap.error("%s: expected an integer >= %d, got %d" % (flag, lo, v))
    if a.atol < 0 or a.rtol < 0:
        ap.error("--atol and --rtol must not be negative")
    try:
        variants = [parse_variant(s) for s in a.variant] or default_variants()
    except ValueError as e:
        ap.error(str(e))
    names = [n for n, _ in variants]
    if len(set(names)) != len(names):
        ap.error("variant names must differ: %s" % ", ".join(names))
    if not os.access(a.pythiac, os.X_OK):
        print("explore_schedules: error: pythiac not found at %s (build it, or give --pythiac)" % a.pythiac, file=sys.stderr)
        return 1
    try:
        with open(os.path.join(a.model_dir, "config.json")) as f:
            vocab = int(json.load(f)["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        print("explore_schedules: error: %s: cannot read vocab_size from config.json: %s" % (a.model_dir, e), file=sys.stderr)
        return 1
    out = a.out or os.path.join(HERE, "..", "build", "explore")
    os.makedirs(out, exist_ok=True)
    try:
        return explore(a, variants, vocab, out)
    except Failure as e:
        print("explore_schedules: error: %s" % e, file=sys.stderr)
        return 1


def explore(a, variants, vocab, out):
    rec = {}
    ids = ",".join(str(i) for i in check_ids(a.check_tokens, vocab))
    for name, flags in variants:
        exe = os.path.join(out, name + ".gen")
        t0 = time.monotonic()
        run([a.pythiac] + flags + ["-o", exe, a.model_dir], "compiling %s" % name)
        secs = time.monotonic() - t0
        ir = run([a.pythiac] + flags + ["--emit=ir", "-o", "-", a.model_dir], "IR of %s" % name).stdout
        npy = os.path.join(out, name + ".logits.npy")
        run([exe, "--ids", ids, "--dump-logits", npy], "logits of %s" % name)
        same = next((n for n in rec if rec[n]["ir"] == ir), None)
        rec[name] = {"flags": flags, "exe": exe, "compile_s": secs, "ops": count_ops(ir), "ir": ir,
                     "ir_same_as": same,
                     "logits": read_npy_f32(npy), "prefill": [], "decode": [], "decode_per_gb_s": []}
        print("compiled %-24s %6.1f s" % (name, secs), file=sys.stderr)
    base = variants[0][0]
    for name, _ in variants:
        rec[name]["check"] = compare_logits(rec[name]["logits"], rec[base]["logits"], a.atol, a.rtol)
    order = [n for n, _ in variants]
    round_orders = []
    for r in range(a.rounds):
        k = r % len(order)
        round_orders.append(order[k:] + order[:k])
        for name in round_orders[-1]:
            res = run([rec[name]["exe"], "--bench", "--pp", str(a.pp), "--tg", str(a.tg), "-t", str(a.threads),
                       "--repetitions", str(a.repetitions)] + (["--probe-bandwidth"] if a.probe_bandwidth else []),
                      "benchmarking %s" % name)
            b = json.loads(res.stdout)
            rec[name]["prefill"].append(b["prefill_tok_s"])
            rec[name]["decode"].append(b["decode_tok_s"])
            if a.probe_bandwidth:
                rec[name]["decode_per_gb_s"].append(statistics.median(
                    t / g for t, g in zip(b["decode_tok_s_all"], b["probe_read_gb_s_all"])))
        print("round %d/%d done" % (r + 1, a.rounds), file=sys.stderr)
    if a.profile:
        for name in order:
            res = run([rec[name]["exe"], "--bench", "--pp", str(a.pp), "--tg", str(a.tg), "-t", str(a.threads),
                       "--repetitions", str(a.repetitions), "--profile"], "profiling %s" % name)
            rec[name]["profile"] = profile_by_kind(res.stderr)
    print_table(a, variants, rec, base)
    if a.profile:
        print_profile(variants, rec)
    if a.json:
        dump = {n: {k: v for k, v in rec[n].items() if k not in ("logits", "ir")} for n in order}
        with open(a.json, "w") as f:
            json.dump({"model_dir": os.path.abspath(a.model_dir), "baseline": base, "rounds": a.rounds,
                       "pp": a.pp, "tg": a.tg, "threads": a.threads, "round_orders": round_orders,
                       "variants": dump}, f, indent=1)
    return 0 if all(rec[n]["check"]["ok"] for n in order) else 1


def print_table(a, variants, rec, base):
    print("model %s, -t %d, pp %d / tg %d, %d rounds of --repetitions %d; baseline %s; logits of %d ids, "
          "atol %g + rtol %g" % (a.model_dir, a.threads, a.pp, a.tg, a.rounds, a.repetitions, base,
                                 a.check_tokens, a.atol, a.rtol))
    print()
    phases = ("prefill", "decode") + (("decode_per_gb_s",) if a.probe_bandwidth else ())
    extra = (" decode tok/s per GB/s | x %s | faster rounds |" % base) if a.probe_bandwidth else ""
    print("| variant | flags | compile s | ops | IR | logits vs %s | max abs diff | argmax agree "
          "| prefill tok/s | x %s | faster rounds | decode tok/s | x %s | faster rounds |%s" % (base, base, base, extra))
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|---|---|" * (len(phases) - 2))
    for name, flags in variants:
        v, b, c = rec[name], rec[base], rec[name]["check"]
        row = [name, " ".join(flags) or "(none)", "%.1f" % v["compile_s"], str(sum(v["ops"].values())),
               "same as " + v["ir_same_as"] if v["ir_same_as"] else "new",
               ("ok" if c["ok"] else "DIFFERS") + (" (%s)" % c["note"] if c["note"] else ""),
               fmt(c["max_abs_diff"], ".2e"), "%d/%d" % (c["argmax_agree"], c["positions"])]
        for phase in phases:
            if not v[phase]:
                row += ["-", "-", "-"]
                continue
            wins = sum(x > y for x, y in zip(v[phase], b[phase]))
            row += [("%.4g" if phase == "decode_per_gb_s" else "%.1f") % statistics.median(v[phase]),
                    "%.3f" % median_ratio(v[phase], b[phase]),
                    "%d/%d" % (wins, len(v[phase])) if name != base else "-"]
        print("| " + " | ".join(row) + " |")
    print()
    kinds = sorted({k for n, _ in variants for k in rec[n]["ops"]})
    print("| op kind | " + " | ".join(n for n, _ in variants) + " |")
    print("|---|" + "---|" * len(variants))
    for k in kinds:
        print("| %s | %s |" % (k, " | ".join(str(rec[n]["ops"].get(k, 0)) for n, _ in variants)))


def print_profile(variants, rec):
    """One table per phase: µs per token of each op kind and its share of the
    variant's total. Each variant is profiled in one run of its own, so its
    total carries that minute's speed; the shares compare across variants."""
    kinds = sorted({k for n, _ in variants for k in rec[n]["profile"]})
    for i, phase in enumerate(("prefill", "decode")):
        print()
        print("| %s µs/token (share) | " % phase + " | ".join(n for n, _ in variants) + " |")
        print("|---|" + "---|" * len(variants))
        for k in kinds + ["total"]:
            cells = []
            for n, _ in variants:
                p = rec[n]["profile"]
                total = sum(v[i] for v in p.values())
                x = total if k == "total" else (p[k][i] if k in p else None)
                cells.append("-" if x is None else "%.1f (%.1f %%)" % (x, 100.0 * x / total if total else 0.0))
            print("| %s | %s |" % (k, " | ".join(cells)))

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
