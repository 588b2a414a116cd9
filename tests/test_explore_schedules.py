#!/usr/bin/env python3
"""test_explore_schedules.py -- examples/explore_schedules.py run as a user
would, on a small generated model: its table and JSON, its logits check
(a quantised variant must be caught as DIFFERS and make the exit status 1,
--no-fuse must agree), its op counts and profile, its refusals of bad
command lines, and the decode-at-equal-bandwidth columns of
--probe-bandwidth."""
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools"))
from testenv import GEN, PYTHIAC, SRC, Tally, pythiac_ready, scratch  # noqa: E402

TMP = scratch("explore_schedules")
SCRIPT = os.path.join(SRC, "examples", "explore_schedules.py")


def explore(args):
    return subprocess.run([sys.executable, SCRIPT, "--pythiac", PYTHIAC] + args, capture_output=True, text=True)


def table_rows(stdout, width=14):
    """The first table's rows (of width cells) -> {variant: [cells]}."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("| ") and not line.startswith("| variant") and not line.startswith("| op kind"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == width:
                rows[cells[0]] = cells
    return rows


def main():
    t = Tally()
    if not pythiac_ready(TMP):
        return 1
    model = os.path.join(TMP, "model")
    shutil.rmtree(model, ignore_errors=True)
    subprocess.run([sys.executable, GEN, model, "--seed", "3", "--layers", "2", "--hidden", "128", "--heads", "4",
                    "--ff", "512", "--vocab", "1024", "--ctx", "64", "--dtype", "f16"], check=True, capture_output=True)
    out = os.path.join(TMP, "out")
    js = os.path.join(TMP, "runs.json")
    r = explore([model, "--out", out, "--json", js, "--rounds", "3", "--pp", "8", "--tg", "4", "-t", "1",
                 "--repetitions", "1", "--check-tokens", "6", "--profile",
                 "--variant", "base=", "--variant", "nofuse=--no-fuse",
                 "--variant", "tile=--tile=64,32,4", "--variant", "q4=--weights=q4_0",
                 "--variant", "nofold=--no-fuse=fold_layernorm"])
    rows = table_rows(r.stdout)

    def comparison():
        p = []
        if r.returncode != 1:
            p.append("exit %d with a q4_0 variant, expected 1: %s" % (r.returncode, r.stderr[-300:]))
        if sorted(rows) != ["base", "nofold", "nofuse", "q4", "tile"]:
            return p + ["table rows %s in %r" % (sorted(rows), r.stdout[:500])]
        for name in ("base", "nofuse", "tile", "nofold"):
            if rows[name][5] != "ok" or float(rows[name][6]) > 1e-3 or rows[name][7] != "6/6":
                p.append("%s should agree with the baseline: %s" % (name, rows[name][5:8]))
        if rows["q4"][5] != "DIFFERS" or float(rows["q4"][6]) <= 1e-3:
            p.append("q4_0 weights not caught: %s" % rows["q4"][5:8])
        if float(rows["base"][6]) != 0.0 or rows["base"][9] != "1.000" or rows["base"][12] != "1.000":
            p.append("baseline against itself: %s" % rows["base"])
        if not int(rows["nofuse"][3]) > int(rows["base"][3]):
            p.append("--no-fuse should have more ops: %s vs %s" % (rows["nofuse"][3], rows["base"][3]))
        # fold_layernorm folds only f32 weights: on this f16 model its IR is the baseline's
        want_ir = {"base": "new", "nofuse": "new", "tile": "new", "q4": "new", "nofold": "same as base"}
        for name, want in want_ir.items():
            if rows[name][4] != want:
                p.append("%s: IR column %r, expected %r" % (name, rows[name][4], want))
        for name in rows:
            if name != "base" and not re.match(r"^[0-3]/3$", rows[name][10]):
                p.append("%s: faster rounds %r" % (name, rows[name][10]))
        return p

    def ops_and_profile():
        p = []
        ops = {m.group(1): m.group(2).split(" | ") for m in re.finditer(r"^\| (\w+) \| ([\d |]+) \|$", r.stdout, re.M)}
        # columns base, nofuse, tile, q4: --no-fuse keeps gelu, add and head_slice as ops of their own
        for kind in ("gelu", "add", "head_slice"):
            if kind not in ops or ops[kind][0] != "0" or ops[kind][1] == "0":
                p.append("op kind %s: %s" % (kind, ops.get(kind)))
        if "qkv_rotary" not in ops or ops["qkv_rotary"][0] != "2" or ops["qkv_rotary"][1] != "0":
            p.append("qkv_rotary counts %s (2 layers fused, none unfused)" % ops.get("qkv_rotary"))
        dec = re.search(r"^\| decode µs/token \(share\) \|.*?(?=^\s*$|\Z)", r.stdout, re.M | re.S)
        if not dec:
            return p + ["no decode profile table"]
        prof = {line.split("|")[1].strip(): line for line in dec.group(0).splitlines()[2:]}
        if "matmul" not in prof or "gelu" not in prof or "total" not in prof:
            p.append("profile kinds %s" % sorted(prof))
        elif not prof["total"].split("|")[2].strip().endswith("(100.0 %)"):
            p.append("total row %r" % prof["total"])
        elif not prof["gelu"].split("|")[2].strip() == "-":
            p.append("fused baseline should have no gelu op: %r" % prof["gelu"])
        return p

    def json_record():
        with open(js) as f:
            d = json.load(f)
        p = []
        for name in ("base", "nofuse", "tile", "q4"):
            v = d["variants"][name]
            if len(v["prefill"]) != 3 or len(v["decode"]) != 3 or min(v["prefill"] + v["decode"]) <= 0:
                p.append("%s: rounds %s %s" % (name, v["prefill"], v["decode"]))
            if not os.path.exists(v["exe"]):
                p.append("%s: no executable %s" % (name, v["exe"]))
        names = ["base", "nofuse", "tile", "q4", "nofold"]
        if d["round_orders"] != [names, names[1:] + names[:1], names[2:] + names[:2]]:
            p.append("rounds not rotated: %s" % d["round_orders"])
        if d["variants"]["q4"]["check"]["ok"] or not d["variants"]["nofuse"]["check"]["ok"]:
            p.append("checks %s" % {n: d["variants"][n]["check"]["ok"] for n in d["variants"]})
        return p

    t.add("table and logits check", comparison)
    t.add("op counts and profile", ops_and_profile)
    t.add("JSON record", json_record)

    def refusals():
        p = []
        for args, want in ((["--variant", "nameonly"], "expected NAME=FLAGS"),
                           (["--variant", "a=", "--variant", "a=--no-fuse"], "names must differ"),
                           (["--variant", "a=-o x"], "not allowed"),
                           (["--rounds", "-1"], "--rounds"),
                           (["--atol", "-1"], "must not be negative")):
            q = explore([model, "--out", out] + args)
            if q.returncode != 2 or want not in q.stderr:
                p.append("%s: exit %d, %r" % (args, q.returncode, q.stderr[-200:]))
        q = explore([os.path.join(TMP, "missing"), "--out", out])
        if q.returncode != 1 or "config.json" not in q.stderr:
            p.append("missing model: exit %d, %r" % (q.returncode, q.stderr[-200:]))
        q = explore([model, "--out", out, "--rounds", "0", "--variant", "a=", "--variant", "bad=--tile=0"])
        if q.returncode != 1 or "compiling bad" not in q.stderr or "--tile" not in q.stderr:
            p.append("bad pythiac flag: exit %d, %r" % (q.returncode, q.stderr[-300:]))
        return p

    t.add("bad command lines", refusals)

    def probe_bandwidth():
        """--probe-bandwidth: three more columns, decode tok/s per GB/s read
        between the tokens, its ratio to the baseline and its sign count;
        the JSON keeps one value per round."""
        js2 = os.path.join(TMP, "probe.json")
        q = explore([model, "--out", out, "--json", js2, "--rounds", "2", "--pp", "8", "--tg", "4", "-t", "2",
                     "--repetitions", "2", "--check-tokens", "4", "--probe-bandwidth",
                     "--variant", "base=", "--variant", "nofuse=--no-fuse"])
        if q.returncode != 0:
            return ["exit %d: %s" % (q.returncode, q.stderr[-300:])]
        rows2 = table_rows(q.stdout, 17)
        p = []
        if sorted(rows2) != ["base", "nofuse"] or "decode tok/s per GB/s" not in q.stdout:
            return ["table rows %s in %r" % (sorted(rows2), q.stdout[:600])]
        if rows2["base"][15] != "1.000" or rows2["base"][16] != "-" or not float(rows2["base"][14]) > 0:
            p.append("baseline cells %s" % rows2["base"][14:])
        if not float(rows2["nofuse"][14]) > 0 or not re.match(r"^[0-2]/2$", rows2["nofuse"][16]):
            p.append("nofuse cells %s" % rows2["nofuse"][14:])
        with open(js2) as f:
            d = json.load(f)
        for name in ("base", "nofuse"):
            v = d["variants"][name]["decode_per_gb_s"]
            if len(v) != 2 or min(v) <= 0:
                p.append("%s: decode_per_gb_s %s" % (name, v))
        return p

    t.add("--probe-bandwidth", probe_bandwidth)
    return t.exit_code()


if __name__ == "__main__":
    sys.exit(main())
