#!/usr/bin/env python3
"""test_cli.py -- both command lines as a user meets them: bad input gets one
clear error line and a non-zero exit, never a crash.

pythiac is run on small synthetic models (examples/gen_model.py) that are then
broken one way each (missing/corrupt config.json, unsupported configs, cut or
inconsistent safetensors files, a sharded index naming a missing shard) and
with bad flags.  A generated executable (one without a tokenizer, and one with
the real tokenizer from $SHARED_DIR/tokenizer/tokenizer.json when that file
exists) is run with bad numbers, bad ids, prompts longer than the context, bad
files, and as a damaged copy (a flipped weight byte; the appended data cut).

For every error case: the exit code is > 0 and not a signal's, stderr is
exactly one line "<prog>: error: ..." that contains the flag or file
involved, and no misleading output file is left behind.

Positive checks that break if the CLI is wrong: --info, --verify, every
--emit kind, --print-after=all, a statically linked executable, and one that
still runs after its model folder is deleted.

Env: PYTHIAC, SRC_DIR, SHARED_DIR, TEST_TMP (set by ctest).  Prints
"N passed, N failed"; exits 1 on any failure.
"""
import glob
import json
import os
import re
import shutil
import struct
import subprocess
import sys

SRC = os.environ.get("SRC_DIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHIAC = os.environ.get("PYTHIAC", os.path.join(SRC, "build", "pythiac"))
SHARED = os.environ.get("SHARED_DIR", os.path.join(SRC, "..", "shared"))
TMP = os.path.join(os.environ.get("TEST_TMP", "/tmp/pythiac-test"), "cli")
GEN = os.path.join(SRC, "examples", "gen_model.py")
TOKENIZER = os.path.join(SHARED, "tokenizer", "tokenizer.json")

VERBOSE = os.environ.get("CLI_VERBOSE") == "1"  # also print each error message
def _cpuinfo():
    try:
        return open("/proc/cpuinfo").read()
    except OSError:
        return ""


def _cpu_has_avx2():
    return " avx2" in _cpuinfo()


# a named target (so --info can be checked against it) that this CPU runs
TARGET = "--target=x86-64-v3" if _cpu_has_avx2() else "--target=x86-64"
CTX = 64          # context of the base model
VOCAB = 300       # vocabulary of the base model (no tokenizer)

passed = 0
failed = 0


def report(name, problems):
    global passed, failed
    if problems:
        failed += 1
        print("FAIL %s: %s" % (name, "; ".join(problems)))
    else:
        passed += 1
        print("ok   %s" % name)


def run(cmd, **kw):
    kw.setdefault("timeout", 300)
    return subprocess.run(cmd, capture_output=True, **kw)


def must(cmd, **kw):
    """Runs a setup step that has to succeed."""
    r = run(cmd, **kw)
    if r.returncode != 0:
        raise RuntimeError("setup step failed (%d): %s\n%s" % (r.returncode, " ".join(map(str, cmd)),
                                                               r.stderr.decode(errors="replace")))
    return r


def error_problems(r, prog, needles, absent=()):
    """What is wrong with an error run: exit code, stderr shape, leftovers."""
    p = []
    rc = r.returncode
    if rc < 0:
        p.append("killed by signal %d" % -rc)
    elif rc == 0:
        p.append("exit code 0 (expected an error)")
    elif rc >= 126:
        p.append("exit code %d looks like a crash or abort" % rc)
    err = r.stderr.decode(errors="replace")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if not lines:
        p.append("nothing on stderr")
    else:
        if len(lines) != 1:
            p.append("stderr has %d lines, expected one: %r" % (len(lines), err[:400]))
        first = lines[0]
        if not first.startswith(prog + ": error: "):
            p.append("stderr does not start with %r: %r" % (prog + ": error: ", first[:200]))
        for n in needles:
            if n not in first:
                p.append("message lacks %r: %r" % (n, first[:300]))
    for path in absent:
        if os.path.lexists(path):
            p.append("left behind %s" % path)
        left = glob.glob(glob.escape(path) + ".tmp*")
        if left:
            p.append("left behind %s" % ", ".join(left))
    return p


def expect_error(name, cmd, needles, absent=(), prog=None, **kw):
    prog = prog or ("pythiac" if cmd[0] == PYTHIAC else "pythia_gen")
    if isinstance(needles, str):
        needles = [needles]
    try:
        r = run(cmd, **kw)
    except subprocess.TimeoutExpired:
        report(name, ["timed out"])
        return
    report(name, error_problems(r, prog, needles, absent))
    for path in absent:  # one failure must not spoil the next cases
        if os.path.isfile(path):
            os.unlink(path)
    if VERBOSE:
        print("       [%d] %s" % (r.returncode, r.stderr.decode(errors="replace").strip()[:300]))


# ------------------------------------------------------------ safetensors

def st_read(path):
    """(header dict, data bytes) of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    hlen = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + hlen]), raw[8 + hlen:]


def st_write(path, header, data):
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def st_tensors(path):
    """{name: [dtype, shape, bytes]} in file order."""
    header, data = st_read(path)
    out = {}
    for name, t in sorted(((k, v) for k, v in header.items() if k != "__metadata__"),
                          key=lambda kv: kv[1]["data_offsets"][0]):
        b, e = t["data_offsets"]
        out[name] = [t["dtype"], list(t["shape"]), data[b:e]]
    return out


def st_pack(path, tensors):
    header, parts, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        parts.append(raw)
        off += len(raw)
    st_write(path, header, b"".join(parts))


# ----------------------------------------------------------------- models

def gen(name, flags):
    d = os.path.join(TMP, name)
    shutil.rmtree(d, ignore_errors=True)
    must([sys.executable, GEN, d, "--seed", "7"] + flags.split())
    return d


def variant(base, name):
    d = os.path.join(TMP, "v", name)
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(base, d)
    return d


def set_config(d, **changes):
    p = os.path.join(d, "config.json")
    cfg = json.load(open(p))
    cfg.update(changes)
    with open(p, "w") as f:
        json.dump(cfg, f, indent=2)


def trailer(path):
    """The bundle trailer (runtime/bundle.h): magic, then 7 little-endian u64."""
    with open(path, "rb") as f:
        f.seek(-64, 2)
        t = f.read(64)
    keys = ("version", "weights_off", "weights_size", "weights_hash", "layout_hash", "tok_off", "tok_size")
    out = dict(zip(keys, struct.unpack("<7Q", t[8:])))
    out["magic"] = t[:8]
    return out


def elf_has_interp(path):
    """True if the ELF file has a PT_INTERP program header (dynamic linking)."""
    with open(path, "rb") as f:
        raw = f.read(1 << 16)
    if raw[:4] != b"\x7fELF" or raw[4] != 2:
        return None
    phoff = struct.unpack_from("<Q", raw, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", raw, 0x36)
    return any(struct.unpack_from("<I", raw, phoff + i * phentsize)[0] == 3 for i in range(phnum))


# ------------------------------------------------------------- pythiac

def pythiac_cases(base, sharded):
    out = os.path.join(TMP, "out", "pythia_gen")  # must never appear
    os.makedirs(os.path.dirname(out), exist_ok=True)
    if os.path.lexists(out):
        os.unlink(out)

    def bad(name, model, needles, extra=()):
        expect_error("pythiac " + name, [PYTHIAC, TARGET, "-o", out] + list(extra) + [model], needles, [out])

    # the folder and config.json
    bad("missing model folder", os.path.join(TMP, "no-such-model"), "no-such-model")
    d = variant(base, "no_config")
    os.unlink(os.path.join(d, "config.json"))
    bad("folder without config.json", d, "config.json")
    d = variant(base, "config_syntax")
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write('{"model_type": "gpt_neox", "hidden_size": 64,,}')
    bad("config.json invalid JSON", d, ["config.json", "JSON"])
    d = variant(base, "config_truncated")
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write('{"model_type": "gpt_neox", "hidden_size": ')
    bad("config.json cut short", d, ["config.json", "JSON"])
    d = variant(base, "config_array")
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write("[1, 2]")
    bad("config.json not an object", d, "config.json")
    for key, val in [("hidden_size", "abc"), ("num_hidden_layers", 0), ("vocab_size", -5),
                     ("num_attention_heads", 1.5), ("rotary_pct", "x"), ("layer_norm_eps", None),
                     ("use_parallel_residual", "yes")]:
        d = variant(base, "config_" + key)
        set_config(d, **{key: val})
        bad("config.json %s=%s" % (key, json.dumps(val)), d, ["config.json", key])
    d = variant(base, "config_heads")
    set_config(d, num_attention_heads=5)
    bad("config.json hidden_size not a multiple of heads", d, ["config.json", "num_attention_heads"])
    d = variant(base, "llama")
    set_config(d, model_type="llama")
    bad("model_type llama", d, ["config.json", "model_type", "llama"])
    d = variant(base, "rope_scaling")
    set_config(d, rope_scaling={"type": "linear", "factor": 2.0})
    bad("rope_scaling set", d, ["config.json", "rope_scaling"])
    d = variant(base, "gelu_new")
    set_config(d, hidden_act="gelu_new")
    bad("hidden_act gelu_new", d, ["config.json", "hidden_act", "gelu_new"])

    # safetensors
    st = os.path.join(base, "model.safetensors")
    header, data = st_read(st)
    raw = open(st, "rb").read()
    hlen = struct.unpack("<Q", raw[:8])[0]
    for name, cut in [("in the header", 8 + hlen // 2), ("in the data", 8 + hlen + len(data) // 2),
                      ("to 4 bytes", 4), ("to 0 bytes", 0)]:
        d = variant(base, "cut_%d" % cut)
        with open(os.path.join(d, "model.safetensors"), "wb") as f:
            f.write(raw[:cut])
        bad("safetensors cut " + name, d, "model.safetensors")
    d = variant(base, "header_garbage")
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", 16) + b"{not json at all" + data)
    bad("safetensors header not JSON", d, ["model.safetensors", "JSON"])
    d = variant(base, "header_huge")
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", 1 << 62) + raw[8:])
    bad("safetensors header length huge", d, "model.safetensors")

    tensors = st_tensors(st)
    names = list(tensors)
    ln_w, ln_b = "gpt_neox.layers.0.input_layernorm.weight", "gpt_neox.layers.0.input_layernorm.bias"
    qkv = "gpt_neox.layers.0.attention.query_key_value.weight"

    def st_variant(vname, label, edit, needles):
        d = variant(base, vname)
        h, dat = st_read(st)
        dat = edit(h, dat) or dat
        st_write(os.path.join(d, "model.safetensors"), h, dat)
        bad(label, d, needles)

    def past_end(h, dat):
        h[names[-1]]["data_offsets"] = [len(dat) - 4, len(dat) + 60]
    st_variant("offsets_past_end", "safetensors offsets out of range", past_end, ["model.safetensors", names[-1]])

    def begin_after_end(h, dat):
        b, e = h[ln_w]["data_offsets"]
        h[ln_w]["data_offsets"] = [e, b]
    st_variant("offsets_reversed", "safetensors offsets begin > end", begin_after_end, ["model.safetensors", ln_w])

    def huge_offsets(h, dat):
        h[ln_w]["data_offsets"] = [2 ** 63, 2 ** 64 + 5]
    st_variant("offsets_huge", "safetensors offsets beyond 2^53", huge_offsets, ["model.safetensors", ln_w])

    def overlap(h, dat):
        h[ln_b]["data_offsets"] = list(h[ln_w]["data_offsets"])
    st_variant("overlap", "safetensors overlapping tensors", overlap, ["model.safetensors", "overlap"])

    def bytes_mismatch(h, dat):
        h[ln_w]["shape"] = [h[ln_w]["shape"][0] * 2]
    st_variant("bytes_mismatch", "safetensors shape disagrees with offsets", bytes_mismatch,
               ["model.safetensors", ln_w])

    def repack(vname, label, edit, needles):
        d = variant(base, vname)
        ts = st_tensors(st)
        edit(ts)
        st_pack(os.path.join(d, "model.safetensors"), ts)
        bad(label, d, needles)

    def transpose_qkv(ts):
        ts[qkv][1] = ts[qkv][1][::-1]
    repack("wrong_shape", "wrong tensor shape", transpose_qkv, ["model.safetensors", qkv, "shape"])

    def as_dtype(dt, size):
        def edit(ts):
            n = ts[ln_w][1][0]
            ts[ln_w] = [dt, [n], b"\0" * (n * size)]
        return edit
    repack("dtype_i64", "needed tensor as I64", as_dtype("I64", 8), ["model.safetensors", ln_w, "I64"])
    repack("dtype_f64", "needed tensor as F64", as_dtype("F64", 8), ["model.safetensors", ln_w, "F64"])
    repack("dtype_unknown", "needed tensor as an unknown dtype", as_dtype("Q4_WHAT", 1),
           ["model.safetensors", ln_w])
    repack("missing_tensor", "missing tensor", lambda ts: ts.pop(ln_b), ["model.safetensors", ln_b])

    def extra(ts):
        ts["gpt_neox.layers.0.attention.extra.weight"] = ["F32", [4], b"\0" * 16]
    repack("extra_tensor", "unexpected extra tensor", extra,
           ["model.safetensors", "gpt_neox.layers.0.attention.extra.weight"])

    def extra_layer(ts):
        ts["gpt_neox.layers.9.input_layernorm.weight"] = list(ts[ln_w])
    repack("extra_layer", "tensor of a layer beyond num_hidden_layers", extra_layer,
           ["gpt_neox.layers.9.input_layernorm.weight", "num_hidden_layers"])
    d = variant(base, "no_weights")
    os.unlink(os.path.join(d, "model.safetensors"))
    bad("no safetensors file", d, "model.safetensors")

    # sharded
    idx_name = "model.safetensors.index.json"
    d = variant(sharded, "missing_shard")
    idx = json.load(open(os.path.join(d, idx_name)))
    first = sorted(idx["weight_map"])[0]
    idx["weight_map"][first] = "model-00009-of-00009.safetensors"
    json.dump(idx, open(os.path.join(d, idx_name), "w"))
    bad("index names a missing shard", d, "model-00009-of-00009.safetensors")
    d = variant(sharded, "deleted_shard")
    shard = sorted(set(idx["weight_map"].values()) - {"model-00009-of-00009.safetensors"})[-1]
    os.unlink(os.path.join(d, shard))
    bad("a shard file deleted", d, shard)
    d = variant(sharded, "index_syntax")
    with open(os.path.join(d, idx_name), "w") as f:
        f.write('{"weight_map": {')
    bad("index invalid JSON", d, [idx_name, "JSON"])
    d = variant(sharded, "index_escape")
    idx = json.load(open(os.path.join(sharded, idx_name)))
    idx["weight_map"][first] = "../model.safetensors"
    json.dump(idx, open(os.path.join(d, idx_name), "w"))
    bad("index names a file outside the folder", d, [idx_name, "../model.safetensors"])

    # the output path
    for label, path, needle in [
            ("-o in a missing directory", os.path.join(TMP, "no-such-dir", "sub", "pythia_gen"), "no-such-dir"),
            ("-o under /proc (read-only)", "/proc/pythiac-cli-test", "/proc/pythiac-cli-test"),
            ("-o whose parent is a regular file", os.path.join(base, "config.json", "pythia_gen"), "config.json")]:
        # the message names the -o path itself, not a temporary beside it
        expect_error("pythiac " + label, [PYTHIAC, TARGET, "-o", path, base], ["-o %s: " % path, needle], [path])
        for kind in ("ir", "obj"):
            expect_error("pythiac --emit=%s %s" % (kind, label),
                         [PYTHIAC, TARGET, "--emit=" + kind, "-o", path, base], ["-o %s: " % path], [path])
    odir = os.path.join(TMP, "out", "a-directory")
    os.makedirs(odir, exist_ok=True)
    for kind in ("exe", "ir", "obj"):
        expect_error("pythiac --emit=%s -o an existing directory" % kind,
                     [PYTHIAC, TARGET, "--emit=" + kind, "-o", odir, base], ["-o %s: " % odir, "directory"], [])
    left = glob.glob(odir + ".tmp*") + os.listdir(odir)
    report("pythiac -o directory leaves nothing behind", ["left %s" % left] if left else [])
    expect_error("pythiac -o without a value", [PYTHIAC, base, "-o"], ["-o", "missing"])
    expect_error("pythiac -o empty", [PYTHIAC, "-o", "", base], ["-o", "missing"])

    # the tokenizer
    expect_error("pythiac --tokenizer missing file", [PYTHIAC, TARGET, "-o", out, "--tokenizer",
                                                      os.path.join(TMP, "no-tok.json"), base], "no-tok.json", [out])
    expect_error("pythiac --tokenizer not a tokenizer", [PYTHIAC, TARGET, "-o", out, "--tokenizer",
                                                         os.path.join(base, "config.json"), base], "config.json", [out])
    d = variant(base, "tok_cut")
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        f.write('{"model": {"type": "BPE", "vocab": {"a": 0,')
    bad("tokenizer.json in the folder cut short", d, "tokenizer.json")

    # flags
    bad("unknown --target", base, ["--target", "pentium9"], ["--target=pentium9"])
    bad("empty --target", base, "--target", ["--target="])
    bad("bad --emit", base, ["--emit", "elf"], ["--emit=elf"])
    bad("bad --weights", base, ["--weights", "q3"], ["--weights=q3"])
    bad("--weights i32", base, ["--weights", "i32"], ["--weights=i32"])
    bad("bad --kv-cache", base, ["--kv-cache", "bf16"], ["--kv-cache=bf16"])
    bad("--kv-cache empty", base, "--kv-cache", ["--kv-cache="])
    for flag in ("--max-block", "--ctx", "--tile"):
        for val in ("0", "-1", "abc", "99999999999", "", "12x"):
            bad("%s=%s" % (flag, val), base, flag, ["%s=%s" % (flag, val)])
        bad("%s N (separate) abc" % flag, base, flag, [flag, "abc"])
        expect_error("pythiac %s without a value" % flag, [PYTHIAC, TARGET, "-o", out, base, flag],
                     [flag, "missing value"], [out])
    for val in ("1,129", "1,16,17", "1,2,3,4,5,6", "1,16,3,4,9", "8,0", ",", "1,,2", "16,", ",4", "64,20", "64,16,0"):
        bad("--tile=%s" % val, base, "--tile", ["--tile=" + val])
    for flag in ("--fuse", "--no-fuse"):
        bad("%s with an unknown pass" % flag, base, [flag + "=bogus", "bogus"], [flag + "=bogus"])
        bad("%s with a pass that cannot be switched off" % flag, base, [flag + "=plan_memory", "plan_memory"],
            [flag + "=plan_memory"])
        bad("%s= empty" % flag, base, flag, [flag + "="])
    bad("unknown option", base, "--frobnicate", ["--frobnicate"])
    bad("unknown -O level", base, "-O7", ["-O7"])
    bad("unknown --print-after pass", base, ["--print-after", "no_such_pass"], ["--print-after=no_such_pass"])
    bad("--print-after with a list (one pass or all)", base, ["--print-after", "plan_weights,plan_memory"],
        ["--print-after=plan_weights,plan_memory"])
    bad("--print-after empty", base, "--print-after", ["--print-after="])
    bad("--tokenizer empty", base, "--tokenizer", ["--tokenizer="])
    bad("--weights empty", base, "--weights", ["--weights="])
    bad("--emit empty", base, "--emit", ["--emit="])
    expect_error("pythiac two model folders", [PYTHIAC, TARGET, "-o", out, base, sharded], "more than one", [out])


def cpu_vendor():
    for line in _cpuinfo().splitlines():
        if line.startswith("vendor_id"):
            return line.split(":", 1)[1].strip()
    return ""


def decode_defaults_case(base):
    """The decode GEMV's prefetch distance and streams, and the panel rows of
    float matmuls, come from the target when --prefetch and --tile's S and RN
    are absent: prefetch none on generic levels and AMD CPUs, 2 KiB on Intel
    ones; streams 1 on AMD CPUs, else as many as the registers hold (8 with
    AVX-512, 4 with AVX2); panels of 4 vectors (64 rows, 6-token tiles) on AMD
    CPUs with AVX-512, else 2 vectors; explicit values win, and an RN given
    without RT gets the tile height its accumulators fit."""
    def matmul_mark(args, pattern):
        path = os.path.join(TMP, "decode-defaults.ir")
        r = run([PYTHIAC, "--emit=ir", "-o", path] + args + [base])
        if r.returncode != 0:
            return "exit %d" % r.returncode
        lines = [l for l in open(path) if "= matmul " in l]
        marks = {m.group(0) if m else "" for m in (re.search(pattern, l) for l in lines)}
        return marks.pop() if lines and len(marks) == 1 else "mixed or no matmuls: %r" % sorted(marks)
    vendor = cpu_vendor()
    avx512 = " avx512f" in _cpuinfo()
    native_prefetch = {"AuthenticAMD": "", "GenuineIntel": "prefetch=2048"}.get(vendor)
    native_streams = {"AuthenticAMD": "", "GenuineIntel": "streams=8" if avx512 else "streams=4"}.get(vendor)
    prefetch = [([TARGET], ""), ([TARGET, "--prefetch=2048"], "prefetch=2048"),
                (["--target=x86-64-v4"], ""), (["--target=x86-64-v4", "--prefetch=64"], "prefetch=64")]
    streams = [([TARGET], "streams=4"), (["--target=x86-64-v4"], "streams=8"),
               (["--target=x86-64-v4", "--tile=512,32,12,256,2"], "streams=2"),
               (["--target=x86-64-v4", "--tile=512,32"], "streams=8")]  # S left out: the default
    panels = [([TARGET], "/16x6" if "v3" in TARGET else "/8x6"), (["--target=x86-64-v4"], "/32x12"),
              (["--target=x86-64-v4", "--tile=512,64"], "/64x6"),
              (["--target=x86-64-v4", "--tile=512,64,3"], "/64x3")]
    if native_prefetch is not None:
        prefetch.append((["--target=native"], native_prefetch))
        panels += [(["--target=native"], "/64x6" if vendor == "AuthenticAMD" and avx512 else
                    "/32x12" if avx512 else "/16x6"),
                   (["--target=native", "--tile=512,%d" % (32 if avx512 else 16)], "/32x12" if avx512 else "/16x6")]
        streams += [(["--target=native"], native_streams),
                    (["--target=native", "--tile=512,%d,12,256,3" % (32 if avx512 else 16)], "streams=3")]
    p = []
    for cases, pattern in ((prefetch, r"prefetch=\d+"), (streams, r"streams=\d+"), (panels, r"/\d+x\d+")):
        for args, want in cases:
            got = matmul_mark(args, pattern)
            if got != want:
                p.append("%s: matmuls carry %r, expected %r" % (" ".join(args), got, want))
    report("pythiac: decode prefetch, streams and panel rows chosen from the target (host %s)" % (vendor or "unknown"), p)


def attention_prefetch_case(base):
    """Decode attention prefetches its K and V rows on every target, with or
    without the matmuls' --prefetch: in the emitted LLVM the attention kernel
    holds two prefetcht0s (locality 3), one into each cache; with
    --prefetch=0 no other kernel holds any."""
    path = os.path.join(TMP, "attn-prefetch.ll")
    r = run([PYTHIAC, TARGET, "--prefetch=0", "--emit=llvm", "-o", path, base])
    p = []
    if r.returncode != 0:
        p.append("exit %d" % r.returncode)
    else:
        bodies = re.split(r"^define ", open(path).read(), flags=re.M)[1:]
        calls = {b.split("(", 1)[0].split("@")[-1]: re.findall(r"call void @llvm\.prefetch\.p0\(ptr (?:\w+ )*%[\w.]+, i32 0, i32 (\d), i32 1\)", b)
                 for b in bodies}
        # the code is in the attention op's kernel, or in the body it calls
        # (cg_share.c) when other ops share it
        attn = {f: c for f, c in calls.items() if "_attention_" in f and c}
        if not attn or any(c != ["3", "3"] for c in attn.values()):
            p.append("attention kernels' prefetches: %r" % attn)
        others = {f: c for f, c in calls.items() if "_attention_" not in f and c}
        if others:
            p.append("other kernels prefetch with --prefetch=0: %r" % sorted(others))
    report("pythiac: decode attention prefetches K and V", p)


def shared_kernels_case():
    """The layers' ops share one function per kind of op (compiler/codegen/
    cg_share.c): in the emitted LLVM of a 3-layer model each layer's qkv,
    rotary, attention, attn_out, fc1 and fc2 kernel calls the same body as
    the other layers', 7 bodies in all (those and one for the 7
    LayerNorms); with --no-share-kernels there are none."""
    d = gen("share3", "--layers 3 --hidden 64 --heads 4 --ff 128 --vocab 300 --ctx 64 --dtype f16")
    p = []
    for flags, want_bodies in (([], 7), (["--no-share-kernels"], 0)):
        path = os.path.join(TMP, "share3%s.ll" % "".join(flags))
        r = run([PYTHIAC, TARGET, "--emit=llvm", "-o", path, d] + flags)
        if r.returncode != 0:
            p.append("%s: exit %d" % (" ".join(flags), r.returncode))
            continue
        funcs = {m.group(1): m.group(2) for m in
                 re.finditer(r"^define [^@]*@([\w.]+)\(.*?\{\n(.*?)^\}", open(path).read(), re.M | re.S)}
        bodies = [f for f in funcs if f.startswith("body")]
        if len(bodies) != want_bodies:
            p.append("%s: %d bodies, expected %d: %r" % (" ".join(flags) or "default", len(bodies), want_bodies, bodies))
        if flags:
            continue
        for kind in ("matmul_l%d.qkv", "qkv_rotary_l%d.q_rot", "attention_l%d.attn", "matmul_l%d.attn_out",
                     "matmul_l%d.gelu", "matmul_l%d.resid", "layernorm_l%d.ln1"):
            called = set()
            for layer in range(3):
                k = [f for f in funcs if f.startswith("k") and f.endswith("_" + kind % layer)]
                calls = re.findall(r"call [\w ]*void @(body[\w.]+)\(", funcs[k[0]]) if len(k) == 1 else []
                if len(calls) != 1:
                    p.append("%s: kernel %r calls bodies %r, expected one" % (kind % layer, k, calls))
                called.update(calls)
            if len(called) != 1:
                p.append("%s: the 3 layers call %r, expected one body" % (kind.replace("%d", "N"), sorted(called)))
    report("pythiac: the layers' ops share one body per kind; --no-share-kernels gives each its own", p)


def pythiac_positive(base):
    # every --emit kind writes a non-empty file of its kind
    for kind, check in [("ir", lambda b: b.startswith(b"graph {")),
                        ("llvm", lambda b: b"define" in b),
                        ("asm", lambda b: b".text" in b),
                        ("obj", lambda b: b.startswith(b"\x7fELF"))]:
        path = os.path.join(TMP, "emit." + kind)
        if os.path.exists(path):
            os.unlink(path)
        r = run([PYTHIAC, TARGET, "--emit=" + kind, "-o", path, base])
        p = []
        if r.returncode != 0:
            p.append("exit %d: %s" % (r.returncode, r.stderr.decode(errors="replace")[:300]))
        elif not os.path.exists(path) or os.path.getsize(path) == 0:
            p.append("no output or empty output")
        elif not check(open(path, "rb").read()):
            p.append("output is not %s" % kind)
        report("pythiac --emit=%s" % kind, p)

    # --print-after=all dumps the IR after every pass (names from the error of an unknown one)
    r = run([PYTHIAC, TARGET, "--print-after=__none__", base])
    msg = r.stderr.decode(errors="replace").strip().splitlines()
    passes = []
    if msg and "passes: " in msg[0]:
        passes = [p.strip() for p in msg[0].rsplit("passes: ", 1)[1].rstrip(")").split(",") if p.strip()]
    r = run([PYTHIAC, TARGET, "--emit=ir", "-o", os.path.join(TMP, "pa.ir"), "--print-after=all", base])
    out = r.stdout.decode(errors="replace")
    p = [] if passes else ["could not learn the pass names from %r" % msg[:1]]
    if r.returncode != 0:
        p.append("exit %d" % r.returncode)
    for name in passes:
        if "; after %s\n" % name not in out:
            p.append("no dump after %s" % name)
    if out.count("graph {") != len(passes):
        p.append("%d dumps for %d passes" % (out.count("graph {"), len(passes)))
    report("pythiac --print-after=all (%d passes)" % len(passes), p)
    if passes:
        r = run([PYTHIAC, TARGET, "--emit=ir", "-o", os.path.join(TMP, "pa.ir"), "--print-after=" + passes[-1], base])
        out = r.stdout.decode(errors="replace")
        report("pythiac --print-after=%s" % passes[-1],
               [] if r.returncode == 0 and out.count("; after ") == 1 and out.startswith("; after " + passes[-1])
               else ["exit %d, output %r" % (r.returncode, out[:120])])
    decode_defaults_case(base)
    attention_prefetch_case(base)
    shared_kernels_case()
    r = run([PYTHIAC, TARGET, "-v", "-o", os.path.join(TMP, "v.gen"), base])
    err = r.stderr.decode(errors="replace")
    report("pythiac -v reports stage times", [] if r.returncode == 0 and all(
        "pythiac: %s" % st in err for st in ("read", "passes", "codegen", "link", "weights"))
        else ["exit %d, stderr %r" % (r.returncode, err[:300])])
    r = run([PYTHIAC, "--help"])
    report("pythiac --help", [] if r.returncode == 0 and b"--emit" in r.stdout else ["exit %d" % r.returncode])


# ---------------------------------------------------------- pythia_gen

def profile_case(exe):
    """--bench --profile: one row per op of the forward pass, first the
    embedding and last the logits matmul, whose decode times add up to most
    of the measured decode time per token (the rest is the sampler-free loop
    around py_forward) and never to more. 48 decoded tokens, not a handful:
    a token of this model lasts microseconds, and one late thread wake-up
    outside the ops (another test running beside it) once made 8 tokens'
    op times only 41 % of their total."""
    r = run([exe, "--bench", "--pp", "8", "--tg", "48", "-t", "2", "--profile"])
    p = []
    if r.returncode != 0:
        report("pythia_gen --bench --profile", ["exit %d: %r" % (r.returncode, r.stderr[:300])])
        return
    bench = json.loads(r.stdout)
    rows = [l.split() for l in r.stderr.decode().splitlines()[1:]]
    ops, total = rows[:-1], rows[-1]
    if not ops or ops[0][1:3] != ["embed", "%embed"] or ops[-1][1:3] != ["matmul", "%logits"]:
        p.append("op rows: first %r, last %r" % (ops[:1], ops[-1:]))
    if [int(o[0]) for o in ops] != list(range(len(ops))):
        p.append("op indices are not 0..%d" % (len(ops) - 1))
    decode_us = 1e6 / bench["decode_tok_s"]
    if total[0] != "total" or not 0.5 * decode_us <= float(total[3]) <= decode_us * 1.001:
        p.append("total decode %r us/token vs %.1f measured" % (total[3:4], decode_us))
    share = sum(float(o[6].rstrip("%")) for o in ops)
    if abs(share - 100) > 1:
        p.append("decode shares add up to %.1f%%" % share)
    report("pythia_gen --bench --profile (%d ops)" % len(ops), p)


def repetitions_case(exe):
    """--bench --repetitions 3: three prefill+decode runs in one process; the reported
    rates are the medians of the three listed ones."""
    r = run([exe, "--bench", "--pp", "8", "--tg", "4", "-t", "2", "--repetitions", "3"])
    if r.returncode != 0:
        report("pythia_gen --bench --repetitions 3", ["exit %d: %r" % (r.returncode, r.stderr[:300])])
        return
    b = json.loads(r.stdout)
    p = []
    if b.get("repetitions") != 3:
        p.append("repetitions %r" % b.get("repetitions"))
    for phase in ("prefill", "decode"):
        rates = b.get(phase + "_tok_s_all", [])
        if len(rates) != 3 or min(rates) <= 0:
            p.append("%s rates %r" % (phase, rates))
        elif abs(sorted(rates)[1] - b[phase + "_tok_s"]) > 1e-2 * b[phase + "_tok_s"]:
            p.append("%s_tok_s %r is not the median of %r" % (phase, b[phase + "_tok_s"], rates))
    # the share of the weight mapping the kernel maps with 2 MiB entries (read
    # from /proc/self/smaps): this model's weights are smaller than one
    huge = b.get("weights_huge_frac")
    if os.path.exists("/proc/self/smaps") and (huge is None or b["weights_bytes"] >= 2 << 20 or huge != 0):
        p.append("weights_huge_frac %r for %d bytes of weights" % (huge, b["weights_bytes"]))
    report("pythia_gen --bench --repetitions 3", p)


def probe_bandwidth_case(exe):
    """--bench --probe-bandwidth: after each decode token the weight blob is read
    once; each repetition reports that read's GB/s, and the read is the whole
    blob rounded down to 4 KiB blocks."""
    name = "pythia_gen --bench --probe-bandwidth"
    r = run([exe, "--bench", "--pp", "8", "--tg", "6", "-t", "2", "--repetitions", "3", "--probe-bandwidth"])
    if r.returncode != 0:
        report(name, ["exit %d: %r" % (r.returncode, r.stderr[:300])])
        return
    b = json.loads(r.stdout)
    p = []
    if b.get("probe_read_bytes") != b["weights_bytes"] // 4096 * 4096 or b["probe_read_bytes"] <= 0:
        p.append("probe_read_bytes %r for %d bytes of weights" % (b.get("probe_read_bytes"), b["weights_bytes"]))
    rates = b.get("probe_read_gb_s_all", [])
    # a read that was skipped or optimised away shows as 0 or as more than
    # any cache of this machine delivers
    if len(rates) != 3 or not all(0.05 < g < 2000 for g in rates):
        p.append("probe rates %r" % rates)
    elif abs(sorted(rates)[1] - b["probe_read_gb_s"]) > 1e-2 * b["probe_read_gb_s"]:
        p.append("probe_read_gb_s %r is not the median of %r" % (b["probe_read_gb_s"], rates))
    if len(b.get("decode_tok_s_all", [])) != 3:
        p.append("decode rates %r" % b.get("decode_tok_s_all"))
    r1 = run([exe, "--bench", "--pp", "8", "--tg", "2", "-t", "2"])
    if r1.returncode != 0 or b"probe_read" in r1.stdout:
        p.append("without the flag: exit %d, %r" % (r1.returncode, r1.stdout[:300]))
    report(name, p)


def file_thp_works(d):
    """Whether this kernel and the filesystem under d map a file's page cache
    with 2 MiB entries: a 4 MiB file written in two 2 MiB-aligned pieces,
    mapped MADV_HUGEPAGE and read, then looked up in /proc/self/smaps."""
    import mmap
    path = os.path.join(d, "thp-probe")
    with open(path, "wb") as f:
        for _ in range(2):
            f.write(b"\1" * (2 << 20))
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 4 << 20, prot=mmap.PROT_READ)
        try:
            m.madvise(mmap.MADV_HUGEPAGE)
            sum(m[i] for i in range(0, 4 << 20, 4096))
            smaps = open("/proc/self/smaps").read()
            kb = [int(x) for x in re.findall(r"thp-probe\n(?:[A-Za-z_]+:.*\n)*?FilePmdMapped:\s+(\d+) kB", smaps)]
        finally:
            m.close()
    os.unlink(path)
    return bool(kb) and kb[0] > 0


def fresh_huge_mapping_case():
    """An executable straight from pythiac, never evicted from the page cache,
    has its weights mapped by 2 MiB entries (--bench's weights_huge_frac):
    pythiac writes them in 2 MiB-aligned pieces, so the page cache holds them
    in 2 MiB folios. Written in smaller or unaligned pieces (as before), the
    share was 0.1 until the file left the cache. Where the share falls short,
    a control decides: a file written the aligned way by this test and mapped
    the same way; if that is not 2 MiB-mapped either (no file THP on this
    kernel or filesystem, or no free 2 MiB blocks just now), the case is
    skipped, not failed."""
    d = os.path.join(TMP, "out")
    os.makedirs(d, exist_ok=True)
    if not os.path.exists("/proc/self/smaps"):
        print("skip: fresh executable's 2 MiB mapping (no /proc/self/smaps)")
        return
    base = gen("huge", "--layers 2 --hidden 256 --heads 4 --ff 1024 --vocab 16384 --ctx 64 --dtype f16")
    exe = os.path.join(d, "huge.gen")
    try:  # defragmented free memory, as the kernel's 2 MiB folios need (root only)
        with open("/proc/sys/vm/compact_memory", "w") as f:
            f.write("1")
    except OSError:
        pass
    must([PYTHIAC, TARGET, "-o", exe, base])
    r = run([exe, "--bench", "--pp", "4", "--tg", "2", "-t", "1"])
    p = []
    if r.returncode != 0:
        p.append("exit %d: %r" % (r.returncode, r.stderr[:300]))
    else:
        b = json.loads(r.stdout)
        # ~20 MB of weights: all but the part before the first 2 MiB boundary
        if b["weights_bytes"] < 16 << 20:
            p.append("the model has only %d bytes of weights" % b["weights_bytes"])
        elif not b.get("weights_huge_frac", 0) >= 0.5:
            if not file_thp_works(d):
                print("skip: fresh executable's 2 MiB mapping (weights_huge_frac %r, and a file written in "
                      "2 MiB-aligned pieces here is not 2 MiB-mapped either)" % b.get("weights_huge_frac"))
                return
            p.append("weights_huge_frac %r of %d bytes" % (b.get("weights_huge_frac"), b["weights_bytes"]))
    report("fresh executable's weights mapped by 2 MiB entries", p)


def small_stack_case(base):
    """Kernels keep stack buffers (here 1 MiB of parked accumulators: k chunks
    of 8, 1024-row blocks, --max-block 256); under `ulimit -s 256` (soft and
    hard) the executable still runs: it computes on threads with their own
    stacks."""
    import resource

    exe = os.path.join(TMP, "out", "bigstack.gen")
    rn = "8" if "v3" in TARGET else "4"
    must([PYTHIAC, TARGET, "-o", exe, "--max-block=256", "--tile=1024,%s,12,8" % rn, base])

    def limit():
        resource.setrlimit(resource.RLIMIT_STACK, (256 << 10, 256 << 10))
    r = run([exe, "--bench", "--pp", "16", "--tg", "2", "-t", "2"], preexec_fn=limit)
    p = [] if r.returncode == 0 and b"decode_tok_s" in r.stdout else ["exit %d: %r" % (r.returncode, r.stderr[:200])]
    report("pythia_gen under ulimit -s 256", p)


def gen_cases(exe, base):
    def bad(name, args, needles, absent=(), **kw):
        expect_error("pythia_gen " + name, [exe] + args, needles, absent, **kw)

    ids = "--ids"
    for flag, vals in [("-n", ["abc", "-2", "99999999999", "1.5", ""]),
                       ("-t", ["0", "-1", "abc", "100000"]),
                       ("-c", ["0", "-1", "abc"]),
                       ("-b", ["0", "abc"]),
                       ("--temp", ["-1", "abc", "nan", "inf", ""]),
                       ("--top-k", ["-1", "abc", "1.5"]),
                       ("--top-p", ["1.5", "-0.1", "abc"]),
                       ("--min-p", ["1.5", "-0.1", "abc"]),
                       ("--repeat-penalty", ["0", "abc"]),
                       ("--repeat-last-n", ["-1"]),
                       ("--seed", ["-1", "abc", "99999999999999999999999", ""]),
                       ("--pp", ["0"]), ("--tg", ["-3"]), ("--repetitions", ["0", "1001", "abc"])]:
        for v in vals:
            bad("%s %r" % (flag, v), [flag, v, ids, "1,2,3"], [flag, '"%s"' % v])
    bad("-c larger than the compiled context", ["-c", str(CTX + 1), ids, "1,2"], ["-c", str(CTX)])
    for flag in ("-n", "-p", "--ids", "--seed", "-f", "--dump-hidden", "--dump-attentions"):
        bad("%s without a value" % flag, [ids, "1", flag], [flag, "missing"])
    for v in [str(VOCAB), "1,2,%d" % VOCAB, "-1", "1,,2", "a", "1,2x", ",1", "99999999999999999999", "1 2"]:
        bad("--ids %r" % v, [ids, v, "-n", "1"], ["--ids", v])
    bad("--ids empty", [ids, "", "-n", "1"], "empty")
    long_ids = ",".join(["5"] * CTX)
    bad("--ids as long as the context", [ids, long_ids, "-n", "1"], ["prompt", "too long", str(CTX), "context"])
    bad("--ids longer than -c", ["-c", "8", ids, "1,2,3,4,5,6,7,8,9", "-n", "1"], ["prompt", "too long", "8", "context"])
    npy = os.path.join(TMP, "out", "logits.npy")
    if os.path.exists(npy):
        os.unlink(npy)
    bad("--dump-logits prompt longer than the context", ["--dump-logits", npy, ids, ",".join(["5"] * (CTX + 1))],
        "--dump-logits", [npy])
    bad("--dump-logits into a missing directory", ["--dump-logits", os.path.join(TMP, "nodir", "l.npy"), ids, "1,2"],
        ["--dump-logits", "nodir"], [os.path.join(TMP, "nodir")])
    bad("--perplexity of one token", ["--perplexity", ids, "5"], ["--perplexity", "at least 2"])
    bad("--perplexity without a prompt", ["--perplexity"], ["no prompt"])
    bad("--ppl-stride beyond the window", ["--perplexity", "-c", "8", "--ppl-stride", "9", ids, "1,2,3"],
        ["--ppl-stride", "8", "9"])
    bad("--ppl-stride without --perplexity", ["--ppl-stride", "2", ids, "1,2"], ["--ppl-stride", "--perplexity"])
    bad("--ppl-stride 0", ["--perplexity", "--ppl-stride", "0", ids, "1,2"], ["--ppl-stride", '"0"'])
    hid = os.path.join(TMP, "out", "hidden.npy")
    bad("--dump-hidden from an executable without hidden states", ["--dump-hidden", hid, ids, "1,2"],
        ["--dump-hidden", "pythiac --hidden-states"], [hid])
    att = os.path.join(TMP, "out", "attn.npy")
    bad("--dump-attentions from an executable without them", ["--dump-attentions", att, ids, "1,2"],
        ["--dump-attentions", "pythiac --attentions"], [att])
    bad("--bench --pp + --tg beyond the context", ["--bench", "--pp", str(CTX), "--tg", "8"], ["--pp", "--tg"])
    bad("--profile without --bench", ["--profile", ids, "1"], ["--profile", "--bench"])
    bad("--repetitions without --bench", ["--repetitions", "2", ids, "1"], ["--repetitions", "--bench"])
    bad("--probe-bandwidth without --bench", ["--probe-bandwidth", ids, "1"], ["--probe-bandwidth", "--bench"])
    profile_case(exe)
    probe_bandwidth_case(exe)
    repetitions_case(exe)
    small_stack_case(base)
    missing = os.path.join(TMP, "no-such-prompt.txt")
    bad("-f on a missing file", ["-f", missing], ["-f", "no-such-prompt.txt"])
    bad("-f on a directory", ["-f", TMP], ["-f", TMP])
    bad("unknown option", ["--frobnicate", ids, "1"], "--frobnicate")
    bad("stray argument", ["hello", ids, "1"], ["hello", "unexpected argument", "-p"])
    bad("-p and --ids together", ["-p", "x", ids, "1"], "--ids")
    bad("-p and -f together", ["-p", "x", "-f", missing], ["-f", "-p"])
    bad("no prompt at all", [], ["-p", "--ids"])
    bad("--stop empty", ["--stop", "", ids, "1"], "--stop")

    # damaged copies: one flipped weight byte; the appended data cut off
    t = trailer(exe)
    p = [] if t["magic"] == b"PYTHIAB1" and t["weights_size"] > 0 else ["bad trailer %r" % t]
    r = run([exe, "--verify"])
    if r.returncode != 0 or b"OK" not in r.stdout:
        p.append("--verify on the intact file: exit %d %r" % (r.returncode, r.stderr[:200]))
    report("pythia_gen --verify intact", p)
    raw = open(exe, "rb").read()
    flipped = os.path.join(TMP, "flipped.gen")
    b = bytearray(raw)
    b[t["weights_off"] + t["weights_size"] // 2] ^= 0x10
    open(flipped, "wb").write(bytes(b))
    os.chmod(flipped, 0o755)
    expect_error("pythia_gen --verify with a flipped weight byte", [flipped, "--verify"],
                 ["weights", "corrupt", "%016x" % t["weights_hash"]])
    # bytes cut from the middle, the trailer kept: its offsets now point past the end
    mid = os.path.join(TMP, "midcut.gen")
    half = t["weights_off"] + t["weights_size"] // 2
    open(mid, "wb").write(raw[:half] + raw[half + 4096:])
    os.chmod(mid, 0o755)
    for args in (["--ids", "1,2", "-n", "2"], ["--verify"]):
        expect_error("pythia_gen weights cut in the middle (trailer kept), %s" % args[0], [mid] + args,
                     ["weights", "missing"])
    for label, cut in [("in the weights", t["weights_off"] + t["weights_size"] // 2),
                       ("at the weights", t["weights_off"]),
                       ("inside the trailer", len(raw) - 10)]:
        trunc = os.path.join(TMP, "trunc%d.gen" % cut)
        open(trunc, "wb").write(raw[:cut])
        os.chmod(trunc, 0o755)
        for args in (["--ids", "1,2", "-n", "2"], ["--verify"], ["--info"]):
            expect_error("pythia_gen appended data cut %s, %s" % (label, args[0]), [trunc] + args,
                         ["weights", "missing"])


def gen_positive(exe, base, pythiac_args):
    r = run([exe, "--info"])
    out = r.stdout.decode(errors="replace")
    t = trailer(exe)
    cfg_text = open(os.path.join(base, "config.json")).read().strip()
    p = [] if r.returncode == 0 else ["exit %d" % r.returncode]
    want = {"source:": os.path.realpath(base), "options:": " ".join(pythiac_args),
            "target:": TARGET.split("=")[1], "weights:": "xxh3 %016x" % t["weights_hash"],
            "context:": "%d tokens" % CTX, "model:": "vocab %d" % VOCAB,
            "kv-cache:": "f32, %d bytes per position" % (2 * 1 * 32 * 4),  # K and V, 1 layer, d_model 32
            "hidden:": "none (pythiac --hidden-states adds them)",
            "attentions:": "none (pythiac --attentions adds them)"}
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln and ln.split()[0].endswith(":")}
    for key, sub in want.items():
        if sub not in lines.get(key, ""):
            p.append("%s line lacks %r: %r" % (key, sub, lines.get(key)))
    if "config:" not in lines or cfg_text not in out:
        p.append("config.json text not printed")
    report("pythia_gen --info", p)

    r = run([exe, "--ids", "1,2,3", "-n", "4", "--temp", "0"])
    toks = r.stdout.split()
    report("pythia_gen greedy --ids", [] if r.returncode == 0 and len(toks) == 7 and toks[:3] == [b"1", b"2", b"3"]
           else ["exit %d, output %r" % (r.returncode, r.stdout[:200])])
    for ctx in (None, 16):  # -n -1 fills the context: every cache row, and the rotary's last table row
        r = run([exe, "--ids", "1,2,3", "-n", "-1", "--temp", "0", "--ignore-eos"] + (["-c", str(ctx)] if ctx else []))
        want = ctx or CTX
        report("pythia_gen -n -1 %s fills the context" % ("-c %d" % ctx if ctx else ""),
               [] if r.returncode == 0 and len(r.stdout.split()) == want else
               ["exit %d, %d ids (want %d): %r" % (r.returncode, len(r.stdout.split()), want, r.stderr[:200])])
    r = run([exe, "--ids", "1,2,3", "-n", "0"])
    report("pythia_gen -n 0", [] if r.returncode == 0 else ["exit %d %r" % (r.returncode, r.stderr[:200])])
    r = run([exe, "--help"])
    report("pythia_gen --help", [] if r.returncode == 0 and b"--ids" in r.stdout else ["exit %d" % r.returncode])

    interp = elf_has_interp(exe)
    p = [] if interp is False else ["PT_INTERP present" if interp else "not a 64-bit ELF file"]
    if shutil.which("readelf"):
        d = run(["readelf", "-d", exe]).stdout.decode(errors="replace")
        if "NEEDED" in d:
            p.append("needs shared libraries: %s" % [ln for ln in d.splitlines() if "NEEDED" in ln])
    if shutil.which("file"):
        f = run(["file", "-b", exe]).stdout.decode(errors="replace")
        if "dynamically linked" in f:
            p.append("file(1): %s" % f.strip())
    report("pythia_gen is statically linked", p)


def standalone_check(base):
    d = os.path.join(TMP, "standalone_model")
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(base, d)
    exe = os.path.join(TMP, "standalone.gen")
    p = []
    r = run([PYTHIAC, TARGET, "-o", exe, d])
    if r.returncode != 0:
        report("pythia_gen runs after the model folder is deleted", ["compile failed: %r" % r.stderr[:300]])
        return
    before = run([exe, "--ids", "4,5,6", "-n", "6", "--temp", "0"])
    shutil.rmtree(d)
    after = run([exe, "--ids", "4,5,6", "-n", "6", "--temp", "0"])
    if before.returncode or after.returncode or before.stdout != after.stdout:
        p.append("before: %d %r, after: %d %r" % (before.returncode, before.stdout, after.returncode,
                                                  after.stderr[:200]))
    v = run([exe, "--verify"])
    if v.returncode:
        p.append("--verify after deletion: %r" % v.stderr[:200])
    report("pythia_gen runs after the model folder is deleted", p)


# ----------------------------------------------------- with a tokenizer

def tok_cases(tok_base, base):
    exe = os.path.join(TMP, "tok.gen")
    r = run([PYTHIAC, TARGET, "--tokenizer", TOKENIZER, "-o", exe, tok_base])
    if r.returncode != 0:
        report("pythiac --tokenizer", ["exit %d: %r" % (r.returncode, r.stderr[:300])])
        return
    report("pythiac --tokenizer", [])

    def bad(name, args, needles, **kw):
        expect_error("pythia_gen(tok) " + name, [exe] + args, needles, **kw)

    r = run([exe, "-p", "Hello world", "--tokenize"])
    ok = r.returncode == 0 and r.stdout.strip().startswith(b"[") and r.stdout.strip().endswith(b"]")
    report("pythia_gen(tok) --tokenize", [] if ok else ["exit %d %r %r" % (r.returncode, r.stdout[:100], r.stderr[:200])])
    # a text scored by --perplexity -f is its --tokenize ids scored
    text = os.path.join(TMP, "ppl.txt")
    open(text, "w").write("The quick brown fox jumps over the lazy dog. It was the best of times.")
    ids = run([exe, "-f", text, "--tokenize"]).stdout.decode().strip()
    by_text = run([exe, "-f", text, "--perplexity"])
    by_ids = run([exe, "--ids", ids.strip("[]"), "--perplexity"])
    p = []
    try:
        a, b = json.loads(by_text.stdout), json.loads(by_ids.stdout)
        if a != b or a["tokens"] != len(json.loads(ids)) or a["scored"] != a["tokens"] - 1:
            p.append("-f: %r, --ids: %r" % (by_text.stdout[:120], by_ids.stdout[:120]))
    except ValueError:
        p.append("exit %d / %d: %r %r" % (by_text.returncode, by_ids.returncode, by_text.stderr[-200:],
                                          by_ids.stderr[-200:]))
    report("pythia_gen(tok) --perplexity -f scores the text's ids", p)
    bad("invalid UTF-8 prompt", ["-p", b"ab\xffcd", "-n", "1"], ["UTF-8", "byte 2"])
    bad("invalid UTF-8 prompt, --tokenize", ["-p", b"hello \xc3(", "--tokenize"], ["UTF-8", "byte 6"])
    badf = os.path.join(TMP, "bad-utf8.txt")
    open(badf, "wb").write(b"abc\xe2\x82")
    bad("invalid UTF-8 in -f file", ["-f", badf, "-n", "1"], ["bad-utf8.txt", "UTF-8", "byte 3"])
    bad("-p longer than the context", ["-p", "hello " * (CTX + 8), "-n", "1"], ["prompt", "too long", str(CTX), "context"])
    bad("-p empty", ["-p", "", "-n", "1"], "empty")
    bad("-f on a missing file", ["-f", os.path.join(TMP, "no-such-prompt.txt")], ["-f", "no-such-prompt.txt"])
    bad("--detokenize without --ids", ["--detokenize"], "--ids")
    bad("--detokenize id out of range", ["--detokenize", "--ids", "99999999"], "--ids")

    # a tokenizer larger than the model's vocabulary: its ids must not index past the embedding
    small = os.path.join(TMP, "small_vocab_tok.gen")
    r = run([PYTHIAC, TARGET, "--tokenizer", TOKENIZER, "-o", small, base])
    if r.returncode != 0:
        report("pythiac --tokenizer on a %d-id model" % VOCAB, ["exit %d: %r" % (r.returncode, r.stderr[:300])])
    else:
        r = run([small, "-p", "Hello world", "--tokenize"])
        report("pythia_gen(tok, vocab %d) --tokenize prints ids beyond the model's vocabulary" % VOCAB,
               [] if r.returncode == 0 and r.stdout.startswith(b"[") else ["exit %d %r" % (r.returncode, r.stderr)])
        for args in (["-n", "2"], ["--dump-logits", os.path.join(TMP, "small.npy")]):
            expect_error("pythia_gen(tok, vocab %d) -p with ids beyond the vocabulary, %s" % (VOCAB, args[0]),
                         [small, "-p", "Hello world, the capital of France"] + args, ["-p", "vocabulary", str(VOCAB)])


def notok_text_cases(exe):
    expect_error("pythia_gen -p on an executable without tokenizer", [exe, "-p", "hello"], ["tokenizer", "--ids"])
    expect_error("pythia_gen --tokenize without tokenizer", [exe, "-p", "hello", "--tokenize"], ["tokenizer"])
    expect_error("pythia_gen --detokenize without tokenizer", [exe, "--detokenize", "--ids", "1"], ["tokenizer"])


def kv_f16_check(base):
    """--kv-cache=f16: the executable says so and keeps half the bytes per
    position; it generates the whole context (every cache row written and
    read as f16)."""
    exe = os.path.join(TMP, "kvf16.gen")
    r = run([PYTHIAC, TARGET, "--kv-cache=f16", "-o", exe, base])
    if r.returncode != 0:
        report("pythiac --kv-cache=f16", ["exit %d: %r" % (r.returncode, r.stderr[:300])])
        return
    info = run([exe, "--info"]).stdout.decode(errors="replace")
    p = [] if "kv-cache:     f16, %d bytes per position" % (2 * 1 * 32 * 2) in info else ["--info: %r" % info[:400]]
    r = run([exe, "--ids", "1,2,3", "-n", "-1", "--temp", "0", "--ignore-eos"])
    if r.returncode != 0 or len(r.stdout.split()) != CTX:
        p.append("-n -1: exit %d, %d ids (want %d)" % (r.returncode, len(r.stdout.split()), CTX))
    report("pythiac --kv-cache=f16", p)


def npy_parts(path):
    """(header dict text, data bytes) of a .npy version 1.0 file."""
    raw = open(path, "rb").read()
    hlen = struct.unpack("<H", raw[8:10])[0]
    return raw[10:10 + hlen].decode("latin1"), raw[10 + hlen:]


def attn_layers_case():
    """pythia_gen --dump-attentions --attn-layers: the listed layers' matrices,
    in the order listed, byte for byte those of the full dump; bad lists are
    refused with the value in the message and no file written."""
    m = gen("attn3", "--layers 3 --hidden 32 --heads 2 --ff 64 --vocab %d --ctx %d --dtype f16" % (VOCAB, CTX))
    d = os.path.join(TMP, "out")
    exe, full, part = (os.path.join(d, n) for n in ("attn3.gen", "attn_all.npy", "attn_part.npy"))
    must([PYTHIAC, TARGET, "--attentions", "--max-block=4", "-o", exe, m])
    ids = ["--ids", "3,1,4,1,5,9,2,6,5,3"]
    p = []
    r = run([exe] + ids + ["--dump-attentions", full])
    if r.returncode:
        report("pythia_gen --dump-attentions", ["exit %d %r" % (r.returncode, r.stderr[-200:])])
        return
    hdr, data = npy_parts(full)
    if "'shape': (3, 2, 10, 10)" not in hdr or len(data) != 3 * 2 * 10 * 10 * 4:
        p.append("full dump: header %r, %d data bytes" % (hdr, len(data)))
    layer = [data[i * 800:(i + 1) * 800] for i in range(3)]
    for sel, order in (("2,0", [2, 0]), ("1", [1]), ("0-2", [0, 1, 2]), ("2,0-1", [2, 0, 1])):
        r = run([exe] + ids + ["--dump-attentions", part, "--attn-layers", sel])
        if r.returncode:
            p.append("--attn-layers %s: exit %d %r" % (sel, r.returncode, r.stderr[-200:]))
            continue
        h, got = npy_parts(part)
        if "'shape': (%d, 2, 10, 10)" % len(order) not in h or got != b"".join(layer[i] for i in order):
            p.append("--attn-layers %s: header %r, data %s the full dump's layers %s"
                     % (sel, h, "equals" if got == b"".join(layer[i] for i in order) else "differs from", order))
    report("pythia_gen --dump-attentions --attn-layers picks layers in order", p)
    if os.path.exists(part):
        os.unlink(part)
    for v in ["3", "0,0", "1,0-1", "2-1", "a", "", "0,", ",0", "-1", "0-", "1 2", "99999999999999999999"]:
        expect_error("pythia_gen --attn-layers %r" % v, [exe] + ids + ["--dump-attentions", part, "--attn-layers", v],
                     ["--attn-layers", '"%s"' % v, "[0, 2]"], [part])
    expect_error("pythia_gen --attn-layers without --dump-attentions", [exe] + ids + ["--attn-layers", "0"],
                 ["--attn-layers", "--dump-attentions"])


def weights_file_case():
    """pythiac --emit=weights and pythia_gen --weights-file: one executable runs
    another checkpoint of its shape, bit for bit as that checkpoint's own
    executable; other code's weights, a missing or a cut file are refused."""
    flags = "--layers 1 --hidden 32 --heads 2 --ff 64 --vocab %d --ctx %d --dtype f16" % (VOCAB, CTX)
    a, b = gen("wf_a", flags), gen("wf_b", flags + " --seed 8")
    other = gen("wf_other", flags.replace("--layers 1", "--layers 2"))
    d = os.path.join(TMP, "out")
    exe_a, exe_b, w_b, w_other, exe_other = (os.path.join(d, n) for n in (
        "wf_a.gen", "wf_b.gen", "wf_b.weights", "wf_other.weights", "wf_other.gen"))
    for args in (["-o", exe_a, a], ["-o", exe_b, b], ["--emit=weights", "-o", w_b, b],
                 ["--emit=weights", "-o", w_other, other], ["-o", exe_other, other]):
        must([PYTHIAC, TARGET] + args)
    ids = ["--ids", "3,1,4,1,5,9,2,6"]
    p = []

    def logits(exe, extra):
        path = os.path.join(d, "wf.npy")
        r = run([exe] + ids + ["--dump-logits", path] + extra)
        if r.returncode:
            p.append("%s %s: exit %d %r" % (os.path.basename(exe), extra, r.returncode, r.stderr[-200:]))
            return b""
        return open(path, "rb").read()
    swapped, own_b, own_a = logits(exe_a, ["--weights-file", w_b]), logits(exe_b, []), logits(exe_a, [])
    if logits(exe_a, ["--weights-file", exe_b]) != own_b:  # an executable's appended bundle serves too
        p.append("--weights-file with the other checkpoint's executable: logits differ")
    if not swapped or swapped != own_b:
        p.append("--weights-file: logits differ from the checkpoint's own executable")
    if swapped == own_a:
        p.append("--weights-file: the executable ran its own weights")
    with open(w_b, "rb") as f:
        head = f.read(4)
    if head == b"\x7fELF" or os.path.getsize(w_b) >= os.path.getsize(exe_b):
        p.append("--emit=weights wrote code: %r, %d bytes" % (head, os.path.getsize(w_b)))
    v = run([exe_a, "--weights-file", w_b, "--verify"]).stdout.decode()
    info_b = run([exe_b, "--info"]).stdout.decode()
    hash_b = re.search(r"xxh3 ([0-9a-f]{16})", info_b)
    if not hash_b or "weights OK" not in v or hash_b.group(1) not in v:
        p.append("--verify of the file: %r, the checkpoint's own: %r" % (v, hash_b and hash_b.group(1)))
    if "weights-file: " + w_b not in run([exe_a, "--weights-file", w_b, "--info"]).stdout.decode():
        p.append("--info does not name the weights file")
    report("pythia_gen --weights-file runs another checkpoint", p)
    cut = os.path.join(d, "wf_cut.weights")
    with open(w_b, "rb") as f, open(cut, "wb") as g:
        g.write(f.read(os.path.getsize(w_b) // 2))
    for name, path, needles in (("of another shape", w_other, ["compiled for other code"]),
                                ("missing", os.path.join(d, "wf_none.weights"), ["cannot open"]),
                                ("cut in half", cut, ["cut short"]),
                                ("an executable of another shape", exe_other, ["compiled for other code"])):
        expect_error("pythia_gen --weights-file " + name, [exe_a, "--weights-file", path] + ids + ["-n", "1"],
                     ["--weights-file", os.path.basename(path)] + needles)
    expect_error("pythiac --emit=weights into a directory", [PYTHIAC, TARGET, "--emit=weights", "-o", d, b],
                 ["-o", "directory"])
    expect_error("pythia_gen --weights-file without a value", [exe_a] + ids + ["--weights-file"],
                 ["--weights-file", "missing"])


def main():
    for tool in (PYTHIAC,):
        if not os.access(tool, os.X_OK):
            print("skip: %s not built" % tool)
            sys.exit(77)
    os.makedirs(TMP, exist_ok=True)
    model_flags = "--layers 1 --hidden 32 --heads 2 --ff 64 --vocab %d --ctx %d --dtype f32" % (VOCAB, CTX)
    base = gen("base", model_flags)
    sharded = gen("sharded", model_flags + " --shards 2")

    pythiac_cases(base, sharded)
    pythiac_positive(base)

    exe = os.path.join(TMP, "notok.gen")
    args = [TARGET, "--max-block=16", "-o", exe, base]
    r = run([PYTHIAC] + args)
    if r.returncode != 0:
        report("pythiac compiles the base model", ["exit %d: %r" % (r.returncode, r.stderr[:300])])
    else:
        report("pythiac compiles the base model", [])
        gen_positive(exe, base, args)
        gen_cases(exe, base)
        notok_text_cases(exe)
    standalone_check(base)
    kv_f16_check(base)
    fresh_huge_mapping_case()
    weights_file_case()
    attn_layers_case()

    if os.path.exists(TOKENIZER):
        tok_base = gen("tokbase", "--layers 1 --hidden 32 --heads 2 --ff 64 --vocab 50304 --ctx %d --dtype f16" % CTX)
        tok_cases(tok_base, base)
    else:
        print("skip: tokenizer sub-cases (%s not found)" % TOKENIZER)

    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
