"""testenv.py -- what the script tests share: where the source tree, the
compiler, the model generator and ../shared are (from ctest's environment,
with defaults for a run by hand), a scratch folder per test, two small
tokenizer.json texts, running a command that must succeed, and tallying the
cases' failures."""
import os
import subprocess

SRC = os.environ.get("SRC_DIR", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PYTHIAC = os.environ.get("PYTHIAC", os.path.join(SRC, "build", "pythiac"))
GEN = os.path.join(SRC, "examples", "gen_model.py")
SHARED = os.environ.get("SHARED_DIR", os.path.join(SRC, "..", "shared"))

# Two small byte-level BPE tokenizer.json files pythiac accepts: one with NFC
# and a normalized added token, one with a prefix space; "prefix.json" has no
# id 7, a hole in its ids (what test_runtime_asan.py samples into).
MINI_TOKENIZERS = {
    "nfc.json": '{"version":"1.0","added_tokens":[{"id":0,"content":"<|endoftext|>","normalized":false,'
                '"special":true},{"id":7,"content":"cafe\\u0301","normalized":true,"special":false}],'
                '"normalizer":{"type":"NFC"},"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,'
                '"trim_offsets":true},"post_processor":null,"decoder":{"type":"ByteLevel"},'
                '"model":{"type":"BPE","vocab":{"<|endoftext|>":0,"a":1,"b":2,"ab":3,"\\u0120":4,'
                '"\\u0120ab":5,"\\u0120a":6},"merges":["a b","\\u0120 a","\\u0120 ab","\\u0120a b"]}}',
    "prefix.json": '{"added_tokens":[{"id":0,"content":"<|endoftext|>","special":true}],"normalizer":null,'
                   '"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":true},"decoder":{"type":"ByteLevel"},'
                   '"model":{"type":"BPE","vocab":{"<|endoftext|>":0,"a":1,"b":2,"ab":3,"\\u0120":4,'
                   '"\\u0120ab":5,"\\u0120a":6,"\\u010a":8,"\\u0109":9,"x":10},'
                   '"merges":["a b","\\u0120 a","\\u0120a b"]}}',
}


def scratch(name):
    """This test's folder under $TEST_TMP (not created)."""
    return os.path.join(os.environ.get("TEST_TMP", "/tmp/pythiac-test"), name)


def run(cmd, env=None):
    """Runs cmd (with env, if given, added to the environment); returns its
    stdout (bytes), or raises with its stderr."""
    r = subprocess.run(cmd, capture_output=True, env=dict(os.environ, **env) if env else None)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), r.returncode, r.stderr.decode(errors="replace")))
    return r.stdout


def case_passes(label, check):
    """Runs check() (a list of failure messages); prints each as "FAIL label:
    message", a raised exception (a crash or a non-zero exit) counting as one;
    returns whether there were none."""
    try:
        fails = check()
    except Exception as e:  # noqa: BLE001 -- a crash is a failure of this case
        fails = [str(e)]
    for f in fails:
        print("  FAIL %s: %s" % (label, f))
    return not fails


def pythiac_ready(tmp):
    """Whether pythiac is built (says so when not); makes the scratch folder tmp."""
    if not os.access(PYTHIAC, os.X_OK):
        print("pythiac not built at %s" % PYTHIAC)
        return False
    os.makedirs(tmp, exist_ok=True)
    return True


class Tally:
    """Counts cases: add(label, check) runs one through case_passes; failed(n)
    counts n that could not run; exit_code() prints the tally."""

    def __init__(self):
        self.passed = self.failures = 0

    def add(self, label, check):
        if case_passes(label, check):
            self.passed += 1
        else:
            self.failures += 1

    def failed(self, n):
        self.failures += n

    def exit_code(self):
        print("%d passed, %d failed" % (self.passed, self.failures))
        return 1 if self.failures else 0
