#!/usr/bin/env python3
"""test_fuzz_harnesses.py -- the libFuzzer harnesses in tests/fuzz/, built
with tests/fuzz/replay.c as build/fuzz_*_replay, run on seeds this test writes
and on seeded mutations of them.

Seeds: a config.json and model.safetensors from examples/gen_model.py (tiny),
the safetensors harness's two input kinds (a whole file after a 0x00 byte, an
index naming its scratch shards after a 0x01 byte), two small byte-level BPE
tokenizer.json files that the importer accepts, and two weight bundles for
the bundle harness's pretend code (4 KiB of weights, then a trailer; one
with the tokenizer tables pythiac --emit=weights wrote for a mini tokenizer).  A harness
aborts when the code under it breaks an invariant (an accepted input whose
data does not hold up, an error that is not one clean line), so a non-zero
exit is a failure.  The seeds are checked to be accepted first: mutants of
inputs that are all refused would exercise only the refusals.

Env: BUILD_DIR, SRC_DIR, TEST_TMP (set by ctest).
"""
import os
import re
import shutil
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools"))
from testenv import MINI_TOKENIZERS  # noqa: E402

SRC = os.environ.get("SRC_DIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("BUILD_DIR", os.path.join(SRC, "build"))
TMP = os.path.join(os.environ.get("TEST_TMP", "/tmp/pythiac-test"), "fuzz_harnesses")
MUTANTS = "3000"


# names the two 2x2 F32 shards the harness writes into its scratch folder
INDEX = ('{"metadata":{"total_size":32},"weight_map":{"gpt_neox.embed_in.weight":"a.safetensors",'
         '"embed_out.weight":"b.safetensors"}}')

failed = 0


def check(ok, what):
    global failed
    print("%s: %s" % ("ok" if ok else "FAIL", what), flush=True)
    if not ok:
        failed += 1


def replay(harness, files, mutants=MUTANTS):
    exe = os.path.join(BUILD, "fuzz_%s_replay" % harness)
    p = subprocess.run([exe, "--mutants", mutants, "--seed", "7"] + files, capture_output=True, text=True,
                       timeout=600)
    detail = (p.stdout + p.stderr).strip().splitlines()
    check(p.returncode == 0 and "no broken invariant" in p.stdout,
          "%s: %d seed(s) and %s mutants each (%s)" % (harness, len(files), mutants,
                                                       detail[-1] if detail else "exit %d" % p.returncode))


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def bundle_seeds(model, tokenizer):
    """Two weight bundles for fuzz_bundle.c's py_model: 4096 bytes of weights
    and its layout hash, without and with tokenizer tables (taken from the
    bundle pythiac --emit=weights writes for the tiny model)."""
    abi = int(re.search(r"#define PY_ABI_VERSION (\d+)", open(os.path.join(SRC, "runtime", "pythia_abi.h")).read()).group(1))
    real = os.path.join(TMP, "tiny.weights")
    subprocess.run([os.path.join(BUILD, "pythiac"), "--emit=weights", "--tokenizer", tokenizer, "-o", real, model],
                   check=True, capture_output=True)
    data = open(real, "rb").read()
    fields = struct.unpack("<8s7Q", data[-64:])
    tok = data[fields[6]:fields[6] + fields[7]]
    weights = bytes((i * 37) & 255 for i in range(4096))

    def bundle(tok_bytes):
        tok_off = 4096 if tok_bytes else 0
        trailer = struct.pack("<8s7Q", b"PYTHIAB1", abi, 0, 4096, 0, 0x5059544849414655, tok_off, len(tok_bytes))
        return weights + tok_bytes + trailer
    return [write(os.path.join(TMP, "bundle_plain.bin"), bundle(b"")),
            write(os.path.join(TMP, "bundle_tok.bin"), bundle(tok))]


def main():
    shutil.rmtree(TMP, ignore_errors=True)
    os.makedirs(TMP)
    model = os.path.join(TMP, "tiny")
    subprocess.run(["/usr/bin/python3", os.path.join(SRC, "examples", "gen_model.py"), model, "--preset", "tiny",
                    "--layers", "1", "--hidden", "32", "--heads", "2", "--ff", "64", "--vocab", "64"],
                   check=True, capture_output=True)
    st = open(os.path.join(model, "model.safetensors"), "rb").read()
    st_seeds = [write(os.path.join(TMP, "whole.bin"), b"\x00" + st),
                write(os.path.join(TMP, "index.bin"), b"\x01" + INDEX.encode())]
    tok_seeds = [write(os.path.join(TMP, n), j.encode()) for n, j in MINI_TOKENIZERS.items()]

    # the seeds must be accepted: pythiac imports the tokenizers (--emit=obj
    # imports them; --emit=ir does not) and compiles the model
    for t in tok_seeds:
        p = subprocess.run([os.path.join(BUILD, "pythiac"), "--emit=obj", "--tokenizer", t, "-o",
                            os.path.join(TMP, "tok.o"), model],
                           capture_output=True, text=True)
        check(p.returncode == 0, "seed %s is a tokenizer pythiac accepts (%s)" % (os.path.basename(t),
                                                                                  p.stderr.strip() or "ok"))

    replay("config", [os.path.join(model, "config.json")])
    replay("safetensors", st_seeds, "1000")
    replay("tokenizer_import", tok_seeds)

    b_seeds = bundle_seeds(model, tok_seeds[0])
    p = subprocess.run([os.path.join(BUILD, "fuzz_bundle_replay")] + b_seeds, capture_output=True, text=True,
                       env=dict(os.environ, FUZZ_EXPECT_ACCEPT="1"))
    check(p.returncode == 0, "the bundle seeds open, tokenizer tables and all (%s)" % (p.stderr.strip() or "ok"))
    replay("bundle", b_seeds)

    # the driver itself refuses what it cannot read, so a missing seed is not a pass
    p = subprocess.run([os.path.join(BUILD, "fuzz_config_replay"), os.path.join(TMP, "missing.json")],
                       capture_output=True, text=True)
    check(p.returncode == 2 and "cannot read" in p.stderr, "replay refuses a missing seed")

    print("%s" % ("all passed" if not failed else "%d failed" % failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
