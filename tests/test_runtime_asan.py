#!/usr/bin/env python3
"""test_runtime_asan.py -- the runtime under AddressSanitizer and UBSan.

A generated executable is linked statically, which the sanitizers do not
support, so this test links the generated code (pythiac --emit=obj) with the
runtime's sources built by gcc with -fsanitize=address,undefined, and gives
the result its weights with --weights-file (a bundle from pythiac
--emit=weights, with a small tokenizer's tables in it). Then every mode runs:
generation with sampling, --perplexity with and without --ppl-stride,
--dump-logits with --dump-hidden in blocks, --bench --profile, --tokenize,
--detokenize, --info, --verify, and refused inputs. Each must end as it
should (exit 0, or 1 with one error line) with no sanitizer report, and
its results must equal the normal static executable's, bit for bit.

Env: PYTHIAC, SRC_DIR, TEST_TMP (set by ctest). Exit 77 (skip) when gcc
cannot build with the sanitizers here.
"""
import glob
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools"))
from testenv import GEN, PYTHIAC, SRC, Tally, pythiac_ready, run, scratch  # noqa: E402

TMP = scratch("runtime_asan")
# a byte-level BPE tokenizer small enough for a 256-id model (ids < 11)
MINI_TOKENIZER = ('{"added_tokens":[{"id":0,"content":"<|endoftext|>","special":true}],"normalizer":null,'
                  '"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":true},"decoder":{"type":"ByteLevel"},'
                  '"model":{"type":"BPE","vocab":{"<|endoftext|>":0,"a":1,"b":2,"ab":3,"\\u0120":4,'
                  '"\\u0120ab":5,"\\u0120a":6,"\\u010a":8,"\\u0109":9,"x":10},'
                  '"merges":["a b","\\u0120 a","\\u0120a b"]}}')
REPORTS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer")


def sh(cmd):
    return subprocess.run(cmd, capture_output=True, timeout=600)


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
    common = ["--hidden-states", "--max-block=16", "--tokenizer", tok]
    obj, bundle, ref = (os.path.join(TMP, n) for n in ("model.o", "model.weights", "ref.gen"))
    run([PYTHIAC] + common + ["--emit=obj", "-o", obj, model])
    run([PYTHIAC] + common + ["--emit=weights", "-o", bundle, model])
    run([PYTHIAC] + common + ["-o", ref, model])
    asan = os.path.join(TMP, "asan.gen")
    r = sh(["gcc", "-std=gnu17", "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer", "-I" + os.path.join(SRC, "runtime")]
           + sorted(glob.glob(os.path.join(SRC, "runtime", "*.c"))) + [obj, "-lutf8proc", "-lxxhash", "-lm",
                                                                        "-lpthread", "-o", asan])
    if r.returncode != 0:
        print("skip: gcc cannot build the runtime with -fsanitize=address,undefined here: %s"
              % r.stderr.decode(errors="replace")[-300:])
        return 77
    t = Tally()
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1")

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
        ("--dump-logits with --dump-hidden in blocks of 7",
         ["--ids", ",".join(str(i % 200 + 7) for i in range(30)), "-b", "7", "--dump-logits", "%OUT%l.npy",
          "--dump-hidden", "%OUT%h.npy"], 0, ["l.npy", "h.npy"]),
        ("--bench --profile", ["--bench", "--pp", "20", "--tg", "6", "-t", "2", "--repetitions", "2",
                               "--profile"], 0, []),
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
                r = subprocess.run([exe] + extra + a, capture_output=True, timeout=600, env=env)
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
    return t.exit_code()


if __name__ == "__main__":
    sys.exit(main())
