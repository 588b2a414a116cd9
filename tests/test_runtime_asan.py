#!/usr/bin/env python3
"""test_runtime_asan.py -- the runtime under AddressSanitizer and UBSan.

A generated executable is linked statically, which the sanitizers do not
support, so this test links the generated code (pythiac --emit=obj) with the
runtime's sources built by gcc with -fsanitize=address,undefined, and gives
the result its weights with --weights-file (a bundle from pythiac
--emit=weights, with a small tokenizer's tables in it). Then every mode runs:
generation with sampling, --perplexity with and without --ppl-stride,
--dump-logits with --dump-hidden and --dump-attentions in blocks, --bench
--profile, --tokenize,
--detokenize, --info, --verify, and refused inputs. Each must end as it
should (exit 0, or 1 with one error line) with no sanitizer report, and
its results must equal the normal static executable's, bit for bit.
With ../shared present, a second build carries the real GPT-NeoX tokenizer:
every 4th golden encoding and every decode case run through the sanitized
--tokenize and --detokenize, and sampled generation streams UTF-8 text.

Env: PYTHIAC, SRC_DIR, TEST_TMP (set by ctest). Exit 77 (skip) when gcc
cannot build with the sanitizers here.
"""
import glob
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools"))
from testenv import GEN, MINI_TOKENIZERS, PYTHIAC, SHARED, SRC, Tally, pythiac_ready, run, scratch  # noqa: E402

TMP = scratch("runtime_asan")
# a byte-level BPE tokenizer small enough for a 256-id model (ids < 11, no id 7)
MINI_TOKENIZER = MINI_TOKENIZERS["prefix.json"]
REPORTS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer")


def sh(cmd):
    return subprocess.run(cmd, capture_output=True, timeout=600)


ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1")


def build(name, model, tokenizer):
    """(sanitized executable, weight bundle, static executable) of model with
    tokenizer; None (after saying why) when gcc cannot build with the sanitizers."""
    common = ["--hidden-states", "--attentions", "--max-block=16", "--tokenizer", tokenizer]
    obj, bundle, ref, asan = (os.path.join(TMP, name + n) for n in (".o", ".weights", ".ref.gen", ".asan.gen"))
    run([PYTHIAC] + common + ["--emit=obj", "-o", obj, model])
    run([PYTHIAC] + common + ["--emit=weights", "-o", bundle, model])
    run([PYTHIAC] + common + ["-o", ref, model])
    r = sh(["gcc", "-std=gnu17", "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer", "-I" + os.path.join(SRC, "runtime")]
           + sorted(glob.glob(os.path.join(SRC, "runtime", "*.c"))) + [obj, "-lutf8proc", "-lxxhash", "-lm",
                                                                        "-lpthread", "-o", asan])
    if r.returncode != 0:
        print("skip: gcc cannot build the runtime with -fsanitize=address,undefined here: %s"
              % r.stderr.decode(errors="replace")[-300:])
        return None
    return asan, bundle, ref


def sanitized(asan, bundle, args):
    """Runs the sanitized executable; (CompletedProcess, problems)."""
    r = subprocess.run([asan, "--weights-file", bundle] + args, capture_output=True, timeout=600, env=ENV)
    err = r.stderr.decode(errors="replace")
    return r, ["sanitizer report: %s" % err[:1500]] if any(x in err for x in REPORTS) else []


def real_tokenizer_cases(t):
    """The real GPT-NeoX tokenizer through the sanitized runtime."""
    tok = os.path.join(SHARED, "tokenizer", "tokenizer.json")
    if not os.path.exists(tok):
        print("skip: real-tokenizer cases (%s not found)" % tok)
        return
    model = os.path.join(TMP, "neox")
    run([sys.executable, GEN, model, "--seed", "6", "--layers", "1", "--hidden", "32", "--heads", "2", "--ff", "64",
         "--vocab", "50304", "--ctx", "64", "--dtype", "f16"])
    built = build("neox", model, tok)
    if not built:
        return
    asan, bundle, ref = built

    def encodings():
        p = []
        golden = [json.loads(ln) for ln in open(os.path.join(SHARED, "tokenizer", "golden.jsonl"))]
        for case in golden[::4]:
            path = os.path.join(TMP, "golden.txt")
            open(path, "wb").write(case["text"].encode())
            r, q = sanitized(asan, bundle, ["-f", path, "--tokenize"])
            p += q
            if r.returncode != 0 or json.loads(r.stdout or b"null") != case["ids"]:
                p.append("%r: exit %d, %r, expected %s" % (case["text"][:40], r.returncode, r.stdout[:100], case["ids"]))
        for case in (json.loads(ln) for ln in open(os.path.join(SHARED, "tokenizer", "decode_cases.jsonl"))):
            r, q = sanitized(asan, bundle, ["--ids", ",".join(map(str, case["ids"])), "--detokenize"])
            p += q
            if r.returncode != 0 or r.stdout.decode("utf-8", errors="replace") != case["decoded"]:
                p.append("decode %s: exit %d, %r, expected %r" % (case["ids"], r.returncode, r.stdout, case["decoded"]))
        return p[:10]
    t.add("real tokenizer: every 4th golden encoding and every decode case", encodings)

    def generation():
        args = ["-p", "Ünïcödé 日本語 text: ", "-n", "24", "--temp", "1.2", "--top-k", "0", "--top-p", "1",
                "--min-p", "0", "--seed", "11", "--ignore-eos"]
        r, p = sanitized(asan, bundle, args)
        s = subprocess.run([ref] + args, capture_output=True, timeout=600)
        if r.returncode != 0 or r.stdout != s.stdout:
            p.append("exit %d, %r, static %r" % (r.returncode, r.stdout[:200], s.stdout[:200]))
        return p
    t.add("real tokenizer: sampled generation streams the same bytes", generation)


def main():
    if not pythiac_ready(TMP):
        return 1
    shutil.rmtree(TMP, ignore_errors=True)
    os.makedirs(TMP)
    model = os.path.join(TMP, "model")
    run([sys.executable, GEN, model, "--seed", "5", "--layers", "2", "--hidden", "64", "--heads", "4", "--ff", "256",
         "--vocab", "256", "--ctx", "64", "--dtype", "f16"])
    tok = os.path.join(TMP, "mini_tokenizer.json")
    open(tok, "w").write(MINI_TOKENIZER)
    built = build("mini", model, tok)
    if not built:
        return 77
    t = Tally()
    asan, bundle, ref = built

    def out(name):
        return os.path.join(TMP, name)

    # (label, arguments, expected exit, files whose bytes must equal the static executable's)
    cases = [
        ("generation with sampling", ["-p", "ab ab a b", "-n", "12", "--temp", "0.9", "--seed", "3",
                                      "--ignore-eos", "--repeat-penalty", "1.1"], 0, []),
        ("greedy --ids", ["--ids", "1,2,3,4,5", "-n", "8", "--temp", "0"], 0, []),
        ("--perplexity", ["--ids", ",".join(str(i % 250 + 1) for i in range(40)), "--perplexity"], 0, []),
        ("--perplexity -c 12 --ppl-stride 5", ["--ids", ",".join(str(i % 97 + 3) for i in range(40)),
                                               "--perplexity", "-c", "12", "--ppl-stride", "5"], 0, []),
        ("--dump-logits with --dump-hidden and --dump-attentions in blocks of 7",
         ["--ids", ",".join(str(i % 200 + 7) for i in range(30)), "-b", "7", "--dump-logits", "%OUT%l.npy",
          "--dump-hidden", "%OUT%h.npy", "--dump-attentions", "%OUT%a.npy"], 0, ["l.npy", "h.npy", "a.npy"]),
        ("--dump-attentions --attn-layers 1,0", ["--ids", ",".join(str(i % 150 + 2) for i in range(21)),
                                                 "--dump-attentions", "%OUT%a2.npy", "--attn-layers", "1,0"],
         0, ["a2.npy"]),
        ("--attn-layers out of range", ["--ids", "1,2", "--dump-attentions", "%OUT%a3.npy", "--attn-layers", "0,9"],
         1, []),
        ("--bench --profile", ["--bench", "--pp", "20", "--tg", "6", "-t", "2", "--repetitions", "2",
                               "--profile"], 0, []),
        ("--bench --probe-bandwidth", ["--bench", "--pp", "8", "--tg", "4", "-t", "2", "--repetitions", "2",
                                       "--probe-bandwidth"], 0, []),
        ("--tokenize", ["-p", "ab ab\n\tx", "--tokenize"], 0, []),
        ("--detokenize", ["--ids", "3,5,6,8,10", "--detokenize"], 0, []),
        ("--info", ["--info"], 0, []),
        ("--verify", ["--verify"], 0, []),
        ("a one-token --perplexity", ["--ids", "5", "--perplexity"], 1, []),
        ("a prompt longer than the context", ["--ids", ",".join(["5"] * 80), "-n", "1"], 1, []),
        ("ids beyond the vocabulary", ["--ids", "1,256", "-n", "1"], 1, []),
    ]
    for label, args, want_rc, files in cases:
        def check(args=args, want_rc=want_rc, files=files):
            p = []
            results = []
            for exe, prefix in ((asan, "asan_"), (ref, "ref_")):
                a = [x.replace("%OUT%", out(prefix)) for x in args]
                extra = ["--weights-file", bundle] if exe == asan else []
                r = subprocess.run([exe] + extra + a, capture_output=True, timeout=600, env=ENV)
                err = r.stderr.decode(errors="replace")
                if exe == asan and any(s in err for s in REPORTS):
                    p.append("sanitizer report: %s" % err[:1500])
                if r.returncode != want_rc:
                    p.append("%s: exit %d, expected %d: %s" % (os.path.basename(exe), r.returncode, want_rc, err[-300:]))
                results.append(r)
            a, b = results
            # --info names the weights file and --bench/--profile print timings: the rest must match
            if args[0] not in ("--info", "--bench") and a.stdout != b.stdout:
                p.append("stdout differs from the static executable's: %r vs %r" % (a.stdout[:200], b.stdout[:200]))
            for f in files:
                if open(out("asan_" + f), "rb").read() != open(out("ref_" + f), "rb").read():
                    p.append("%s differs from the static executable's" % f)
            return p
        t.add(label, check)
    real_tokenizer_cases(t)
    return t.exit_code()


if __name__ == "__main__":
    sys.exit(main())
