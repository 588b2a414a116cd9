#!/usr/bin/python3
"""tok_conformance.py — checks a generated executable's tokenizer CLI against
the Hugging Face goldens, the way a user would call it.

    /usr/bin/python3 tests/tools/tok_conformance.py --exe ./pythia_gen --shared ../shared

For every line of golden.jsonl ({"text", "ids", "decoded", ...}):
  - `EXE --tokenize -f FILE` (FILE holds the text's UTF-8 bytes) must print
    the ids as one JSON array on stdout;
  - `EXE --detokenize --ids 1,2,3` must write `decoded` to stdout byte for
    byte (an empty id list is passed as --ids "").
For every line of decode_cases.jsonl ({"ids", "decoded", ...}) the
--detokenize check.  unicode_version_cases.jsonl and any --extra FILE are
checked like golden.jsonl when present.  Prints `N passed, N failed` and
exits 1 on any failure (2 on a usage problem).  Standard library only; the
cases run on a small thread pool.
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile


def load_jsonl(path):
    cases = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                cases.append((n, json.loads(line)))
    return cases


def short(b, n=120):
    s = repr(b)
    return s if len(s) <= n else s[:n] + "..."


class Checker:
    def __init__(self, exe, tmp, timeout, verbose):
        self.exe, self.tmp, self.timeout, self.verbose = exe, tmp, timeout, verbose

    def run(self, args):
        try:
            r = subprocess.run([self.exe] + args, capture_output=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return None, b"", b"timed out after %ds" % self.timeout
        return r.returncode, r.stdout, r.stderr

    def tokenize(self, name, text, want):
        fd, path = tempfile.mkstemp(prefix="tokconf_", suffix=".txt", dir=self.tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(text.encode("utf-8"))
            rc, out, err = self.run(["--tokenize", "-f", path])
        finally:
            os.unlink(path)
        if rc != 0:
            return "%s: --tokenize exit %s: %s" % (name, rc, short(err.strip()))
        try:
            got = json.loads(out.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return "%s: --tokenize printed no JSON array: %s" % (name, short(out))
        if got != want:
            return "%s: ids differ for %s\n    want %s\n    got  %s" % (name, short(text), want, got)
        return None

    def detokenize(self, name, ids, want):
        rc, out, err = self.run(["--detokenize", "--ids", ",".join(str(i) for i in ids)])
        if rc != 0:
            return "%s: --detokenize exit %s: %s" % (name, rc, short(err.strip()))
        want_b = want.encode("utf-8")
        if out != want_b:
            return "%s: decoded text differs for ids %s\n    want %s\n    got  %s" % (
                name, short(ids, 80), short(want_b), short(out))
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--exe", required=True, help="a pythia_gen compiled with the tokenizer")
    ap.add_argument("--shared", required=True, help="folder holding tokenizer/golden.jsonl")
    ap.add_argument("--extra", action="append", default=[], help="another JSONL file of golden cases")
    ap.add_argument("--jobs", type=int, default=max(2, 2 * (os.cpu_count() or 1)))
    ap.add_argument("--timeout", type=int, default=120, help="seconds per call")
    ap.add_argument("--verbose", action="store_true", help="print every failure (default: the first 20)")
    a = ap.parse_args()

    if not (os.path.isfile(a.exe) and os.access(a.exe, os.X_OK)):
        print("tok_conformance: error: --exe %s: not an executable file" % a.exe, file=sys.stderr)
        return 2
    tokdir = os.path.join(a.shared, "tokenizer")
    golden = os.path.join(tokdir, "golden.jsonl")
    decode = os.path.join(tokdir, "decode_cases.jsonl")
    for p in (golden, decode):
        if not os.path.isfile(p):
            print("tok_conformance: error: %s not found" % p, file=sys.stderr)
            return 2
    sets = [("golden", golden, True)]
    uv = os.path.join(tokdir, "unicode_version_cases.jsonl")
    if os.path.isfile(uv):
        sets.append(("unicode_version", uv, True))
    sets.append(("decode_cases", decode, False))
    for p in a.extra:
        sets.append((os.path.basename(p), p, True))

    with tempfile.TemporaryDirectory(prefix="tokconf_") as tmp:
        chk = Checker(os.path.abspath(a.exe), tmp, a.timeout, a.verbose)
        jobs = []  # (set, kind, future)
        with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as pool:
            for set_name, path, has_text in sets:
                for line, c in load_jsonl(path):
                    name = "%s:%d" % (set_name, line)
                    if has_text and "text" in c and "ids" in c:
                        jobs.append((set_name, "ids", pool.submit(chk.tokenize, name, c["text"], c["ids"])))
                    if "ids" in c and "decoded" in c:
                        jobs.append((set_name, "decoded", pool.submit(chk.detokenize, name, c["ids"], c["decoded"])))
            counts = {}
            shown = 0
            for set_name, kind, fut in jobs:
                problem = fut.result()
                k = counts.setdefault((set_name, kind), [0, 0])
                k[1 if problem else 0] += 1
                if problem and (a.verbose or shown < 20):
                    print("FAIL " + problem)
                    shown += 1

    total_pass = total_fail = 0
    for set_name, path, has_text in sets:
        for kind in ("ids", "decoded"):
            if (set_name, kind) in counts:
                p, f = counts[(set_name, kind)]
                print("%-16s %-8s %d passed, %d failed" % (set_name, kind, p, f))
                total_pass += p
                total_fail += f
    print("%d passed, %d failed" % (total_pass, total_fail))
    return 1 if total_fail else 0


if __name__ == "__main__":
    sys.exit(main())
