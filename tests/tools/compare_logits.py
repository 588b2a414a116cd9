#!/usr/bin/env python3
"""compare_logits.py -- compare two logits files, pass/fail on a tolerance.

    compare_logits.py A.npy B.npy [--atol X] [--rtol R] [--last]

A and B are .npy float32/float64 arrays [T, vocab] (or [vocab]), read
strictly with npy.read_npy.  Passes when every |a - b| <= atol + rtol*|b|
(rtol 0 by default).  --last compares only the last row of each (e.g. a
decode step against a full reference).  Prints the max abs diff, where it
is, and how many positions agree on the argmax; exits 1 on failure (shape
mismatch, NaN/Inf, or a diff above tolerance), 2 on a usage or read error.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from npy import NpyError, read_npy  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description="Compare two logits .npy files.")
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--rtol", type=float, default=0.0)
    ap.add_argument("--last", action="store_true", help="compare only the last row")
    o = ap.parse_args(argv)
    try:
        a, b = read_npy(o.a), read_npy(o.b)
    except (OSError, NpyError) as e:
        print("compare_logits: %s" % e, file=sys.stderr)
        return 2
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    if o.last:
        a, b = a[-1:], b[-1:]
    if a.shape != b.shape:
        print("FAIL shape mismatch: %s %s vs %s %s" % (o.a, list(a.shape), o.b, list(b.shape)))
        return 1
    if a.size == 0:
        print("FAIL empty arrays")
        return 1
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        print("FAIL non-finite values: %s has %d, %s has %d" % (
            o.a, int((~np.isfinite(a)).sum()), o.b, int((~np.isfinite(b)).sum())))
        return 1
    d = np.abs(a - b)
    t, v = np.unravel_index(int(np.argmax(d)), d.shape)
    worst = float(d[t, v])
    excess = d - (o.atol + o.rtol * np.abs(b))
    argmax_same = int((a.argmax(axis=-1) == b.argmax(axis=-1)).sum())
    ok = bool((excess <= 0).all())
    print("%s max_abs_diff=%.3g at [%d, %d] (%.6g vs %.6g)  atol=%g rtol=%g  argmax agrees %d/%d" % (
        "PASS" if ok else "FAIL", worst, t, v, a[t, v], b[t, v], o.atol, o.rtol, argmax_same, a.shape[0]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
