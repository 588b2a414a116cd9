#!/usr/bin/env python3
"""test_tokenizer_exe.py -- the tokenizer as users meet it: compiled into an
executable by pythiac from ../shared/tokenizer/tokenizer.json, then every
golden case through `pythia_gen --tokenize -f` and `--detokenize --ids`
(tests/tools/tok_conformance.py).  Skips (exit 77) when ../shared/tokenizer
is absent.  Env: PYTHIAC, SRC_DIR, SHARED_DIR, TEST_TMP."""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools"))
from testenv import GEN, PYTHIAC, SHARED, SRC, scratch  # noqa: E402

TMP = scratch("tokenizer_exe")
TOK = os.path.join(SHARED, "tokenizer", "tokenizer.json")


def main():
    if not os.path.exists(TOK):
        print("skipped: %s not found (the real GPT-NeoX tokenizer lives in ../shared)" % TOK)
        return 77
    shutil.rmtree(TMP, ignore_errors=True)
    os.makedirs(TMP)
    model = os.path.join(TMP, "model")
    # the vocabulary must hold every tokenizer id (50277): Pythia's padded 50304
    subprocess.run(["/usr/bin/python3", GEN, model, "--preset", "tiny",
                    "--vocab", "50304", "--seed", "3"], check=True)
    exe = os.path.join(TMP, "pythia_gen")
    subprocess.run([PYTHIAC, model, "-o", exe, "--tokenizer", TOK], check=True)
    return subprocess.run(["/usr/bin/python3", os.path.join(SRC, "tests", "tools", "tok_conformance.py"),
                           "--exe", exe, "--shared", SHARED]).returncode


if __name__ == "__main__":
    sys.exit(main())
