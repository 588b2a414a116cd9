#!/usr/bin/env python3
"""test_reference.py -- self-tests of the Python test tooling.

Checks, without the C compiler, that the tools every numerics test leans on
are right:
  * tests/tools/neox_ref.py (reference forward pass) against a hand-built
    model whose logits are worked out with scalar formulas here, and against
    a deliberately naive per-scalar implementation (its own safetensors
    decoding, explicit 2-D rotations, loops everywhere) on generated models:
    both residual modes, tied/untied, rotary_pct 0.25/0.5/1.0, with and
    without attention biases, f32/f16/bf16, sharded;
  * that the generator's weight scales make likely bugs visible: each
    mutation of the naive implementation (wrong qkv layout, GPT-J rotary,
    no causal mask, tanh GELU, ...) moves the logits by more than a floor;
  * causality, prefix consistency, greedy decoding and its tie-breaking;
  * examples/gen_model.py: valid safetensors (header, offsets, alignment,
    names and shapes as Hugging Face's), sharded index consistency, f16/bf16
    equal to the f32 values rounded to nearest even, byte-identical output
    whatever the chunk size or thread count, legacy buffers ignored;
  * the npy.py / compare_logits.py CLI contract.

Environment: SRC_DIR (repo root), TEST_TMP (scratch).  Exit 77 = skip.
Prints one line per test and `N passed, N failed`.
"""

import hashlib
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import traceback

try:
    import numpy as np
except ImportError:
    print("numpy not available: skipping")
    sys.exit(77)

SRC = os.environ.get("SRC_DIR") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable or "/usr/bin/python3"
GEN = os.path.join(SRC, "examples", "gen_model.py")
TOOLS = os.path.join(SRC, "tests", "tools")
sys.path.insert(0, TOOLS)
import neox_ref  # noqa: E402
import npy  # noqa: E402

_tmp_root = os.environ.get("TEST_TMP")
if _tmp_root:
    TMP = os.path.join(_tmp_root, "test_reference")
    shutil.rmtree(TMP, ignore_errors=True)
    os.makedirs(TMP)
else:
    TMP = tempfile.mkdtemp(prefix="test_reference.")


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def run(args, expect_rc=0):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if expect_rc is not None and p.returncode != expect_rc:
        raise Fail("%s -> rc %d (wanted %d)\nstdout: %s\nstderr: %s" % (
            " ".join(args), p.returncode, expect_rc, p.stdout[-2000:], p.stderr[-2000:]))
    return p


_gen_cache = {}


def gen(name, *args):
    """Generate (once) a model folder under TMP with gen_model.py args."""
    d = os.path.join(TMP, name)
    if _gen_cache.get(d) != args:
        run([PY, GEN, d] + [str(a) for a in args])
        _gen_cache[d] = args
    return d


SMALL = ("--hidden", 16, "--heads", 2, "--ff", 32, "--vocab", 40, "--ctx", 16, "--layers", 2)


# ------------------------------------------- our own safetensors reader ---
# Independent of neox_ref: struct-based decoding, strict layout checks.

ESIZE = {"F32": 4, "F16": 2, "BF16": 2, "BOOL": 1}


def st_parse(path):
    """-> (header dict without __metadata__, metadata, data bytes); checks layout."""
    with open(path, "rb") as f:
        raw = f.read()
    check(len(raw) >= 8, "%s: shorter than 8 bytes" % path)
    (n,) = struct.unpack("<Q", raw[:8])
    check(n % 8 == 0, "%s: header length %d not a multiple of 8" % (path, n))
    text = raw[8:8 + n].decode("utf-8")
    hdr = json.loads(text)
    meta = hdr.pop("__metadata__", None)
    data = raw[8 + n:]
    spans = []
    for name, e in hdr.items():
        check(set(e) == {"dtype", "shape", "data_offsets"}, "%s: %s keys %s" % (path, name, sorted(e)))
        dt, shape, (b, end) = e["dtype"], e["shape"], e["data_offsets"]
        check(dt in ESIZE, "%s: %s dtype %s" % (path, name, dt))
        count = 1
        for s in shape:
            count *= s
        check(end - b == count * ESIZE[dt], "%s: %s spans %d bytes, shape %s %s" % (path, name, end - b, shape, dt))
        check(b % ESIZE[dt] == 0, "%s: %s offset %d not aligned to %d" % (path, name, b, ESIZE[dt]))
        spans.append((b, end, name))
    spans.sort()
    pos = 0
    for b, end, name in spans:
        check(b == pos, "%s: hole or overlap before %s (%d != %d)" % (path, name, b, pos))
        pos = end
    check(pos == len(data), "%s: data is %d bytes, tensors cover %d" % (path, len(data), pos))
    return hdr, meta, data


def st_decode(hdr, data, name):
    """Tensor -> numpy float64 via struct (BF16 through Python ints)."""
    e = hdr[name]
    b, end = e["data_offsets"]
    buf = data[b:end]
    dt = e["dtype"]
    n = (end - b) // ESIZE[dt]
    if dt == "F32":
        vals = struct.unpack("<%df" % n, buf)
    elif dt == "F16":
        vals = struct.unpack("<%de" % n, buf)
    elif dt == "BF16":
        hs = struct.unpack("<%dH" % n, buf)
        vals = struct.unpack("<%df" % n, struct.pack("<%dI" % n, *[h << 16 for h in hs]))
    else:
        vals = struct.unpack("<%dB" % n, buf)
    return np.array(vals, dtype=np.float64).reshape(e["shape"])


def st_load_dir(d):
    """All tensors of a model folder -> {name: float64 array}, via st_*."""
    out = {}
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    for fn in files:
        hdr, _, data = st_parse(os.path.join(d, fn))
        for name in hdr:
            out[name] = st_decode(hdr, data, name)
    return out


def st_write(path, tensors):
    """Minimal writer for hand-built models: {name: float32 array} -> F32 file."""
    hdr, off, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, a in tensors.items():
        a = np.ascontiguousarray(a, dtype="<f4")
        hdr[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
        blobs.append(a.tobytes())
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_model(d, cfg, tensors):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    st_write(os.path.join(d, "model.safetensors"), tensors)


def hf_names_shapes(cfg, legacy=False):
    """The tensor names and shapes Hugging Face's GPTNeoXForCausalLM has."""
    D, F, V, C = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["max_position_embeddings"]
    rot = int(D // cfg["num_attention_heads"] * cfg["rotary_pct"])
    bias = cfg.get("attention_bias", True)
    s = {"gpt_neox.embed_in.weight": [V, D], "gpt_neox.final_layer_norm.weight": [D],
         "gpt_neox.final_layer_norm.bias": [D]}
    if not cfg["tie_word_embeddings"]:
        s["embed_out.weight"] = [V, D]
    for i in range(cfg["num_hidden_layers"]):
        p = "gpt_neox.layers.%d." % i
        for ln in ("input_layernorm", "post_attention_layernorm"):
            s[p + ln + ".weight"] = [D]
            s[p + ln + ".bias"] = [D]
        s[p + "attention.query_key_value.weight"] = [3 * D, D]
        s[p + "attention.dense.weight"] = [D, D]
        if bias:
            s[p + "attention.query_key_value.bias"] = [3 * D]
            s[p + "attention.dense.bias"] = [D]
        s[p + "mlp.dense_h_to_4h.weight"] = [F, D]
        s[p + "mlp.dense_h_to_4h.bias"] = [F]
        s[p + "mlp.dense_4h_to_h.weight"] = [D, F]
        s[p + "mlp.dense_4h_to_h.bias"] = [D]
        if legacy:
            s[p + "attention.bias"] = [1, 1, C, C]
            s[p + "attention.masked_bias"] = []
            s[p + "attention.rotary_emb.inv_freq"] = [rot // 2]
    return s


# ------------------------------------------ naive per-scalar reference ---
# Written independently of neox_ref: Python lists and loops, rotary as an
# explicit rotation of the pair (i, i + r/2).  `mut` injects known bugs.

def naive_forward(d, ids, mut=(), hidden=None, attentions=None):
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    Wt = {k: v.tolist() for k, v in st_load_dir(d).items()}
    D, H, L = c["hidden_size"], c["num_attention_heads"], c["num_hidden_layers"]
    hd = D // H
    r = int(hd * c["rotary_pct"])
    base, eps = float(c["rotary_emb_base"]), float(c["layer_norm_eps"])
    parallel = c["use_parallel_residual"] != ("residual_swap" in mut)
    T = len(ids)

    def lin(w, b, v):
        return [sum(w[o][j] * v[j] for j in range(len(v))) + (b[o] if b is not None else 0.0)
                for o in range(len(w))]

    def ln(v, g, b):
        n = len(v)
        mean = sum(v) / n
        var = sum((x - mean) ** 2 for x in v) / n
        s = math.sqrt(var + eps)
        return [(v[j] - mean) / s * g[j] + b[j] for j in range(n)]

    def gelu(x):
        if "tanh_gelu" in mut:
            return 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
        return 0.5 * x * (1 + math.erf(x / math.sqrt(2)))

    def rope(v, pos, is_key):
        if "no_rotary" in mut or ("q_only_rotary" in mut and is_key):
            return v
        rr = hd if "rotary_all_dims" in mut else r
        p = pos + 1 if "k_pos_offset" in mut and is_key else pos
        sign = -1.0 if "rotate_backwards" in mut else 1.0
        out = list(v)
        for i in range(rr // 2):
            theta = p * base ** (-(2.0 * i) / (hd if "inv_freq_hd" in mut else rr))
            a, b = (2 * i, 2 * i + 1) if "interleaved" in mut else (i, i + rr // 2)
            cs, sn = math.cos(theta), sign * math.sin(theta)
            out[a] = v[a] * cs - v[b] * sn
            out[b] = v[b] * cs + v[a] * sn
        return out

    x = [list(Wt["gpt_neox.embed_in.weight"][i]) for i in ids]
    for l in range(L):
        if hidden is not None:  # Hugging Face's output_hidden_states: each layer's input ...
            hidden.append([list(row) for row in x])
        p = "gpt_neox.layers.%d." % l
        h = [ln(x[t], Wt[p + "input_layernorm.weight"], Wt[p + "input_layernorm.bias"]) for t in range(T)]
        qkv = [lin(Wt[p + "attention.query_key_value.weight"], Wt.get(p + "attention.query_key_value.bias"), h[t])
               for t in range(T)]

        def part(t, head, which):
            row = which * D + head * hd if "qkv_layout" in mut else head * 3 * hd + which * hd
            return qkv[t][row:row + hd]

        o = [[0.0] * D for _ in range(T)]
        probs = [[[0.0] * T for _ in range(T)] for _ in range(H)]  # Hugging Face's output_attentions
        for head in range(H):
            ks = [rope(part(s, head, 1), s, True) for s in range(T)]
            for t in range(T):
                q = rope(part(t, head, 0), t, False)
                span = range(T) if "no_causal" in mut else range(t + 1)
                scale = 1.0 if "no_scale" in mut else 1.0 / math.sqrt(hd)
                sc = [sum(q[i] * ks[s][i] for i in range(hd)) * scale for s in span]
                m = max(sc)
                e = [math.exp(z - m) for z in sc]
                z = sum(e)
                for j, s in enumerate(span):
                    probs[head][t][s] = e[j] / z
                    v = part(s, head, 2)
                    for i in range(hd):
                        o[t][head * hd + i] += e[j] / z * v[i]
        if attentions is not None:
            attentions.append(probs)
        attn = [lin(Wt[p + "attention.dense.weight"], Wt.get(p + "attention.dense.bias"), o[t]) for t in range(T)]

        def mlp(v):
            u = lin(Wt[p + "mlp.dense_h_to_4h.weight"], Wt[p + "mlp.dense_h_to_4h.bias"], v)
            return lin(Wt[p + "mlp.dense_4h_to_h.weight"], Wt[p + "mlp.dense_4h_to_h.bias"], [gelu(a) for a in u])

        g2, b2 = Wt[p + "post_attention_layernorm.weight"], Wt[p + "post_attention_layernorm.bias"]
        for t in range(T):
            if parallel:
                m_ = mlp(ln(x[t], g2, b2))
                x[t] = [x[t][j] + attn[t][j] + m_[j] for j in range(D)]
            else:
                hh = [x[t][j] + attn[t][j] for j in range(D)]
                m_ = mlp(ln(hh, g2, b2))
                x[t] = [hh[j] + m_[j] for j in range(D)]
    tied = c["tie_word_embeddings"] != ("tie_wrong" in mut)
    wout = Wt["gpt_neox.embed_in.weight"] if tied else Wt["embed_out.weight"]
    logits, final = [], []
    for t in range(T):
        y = ln(x[t], Wt["gpt_neox.final_layer_norm.weight"], Wt["gpt_neox.final_layer_norm.bias"])
        final.append(y)
        logits.append([sum(wout[v][j] * y[j] for j in range(D)) for v in range(len(wout))])
    if hidden is not None:  # ... then the final LayerNorm's output
        hidden.append(final)
    return np.array(logits)


def maxdiff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# ================================================================ tests ===

def test_hand_computed():
    """1 layer, hidden 4, 2 heads of 2 dims, full rotary: logits by hand."""
    eps = 1e-5
    E = np.array([[1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1], [3, 1, -1, -3]], dtype=np.float64)
    ids = [0, 1, 2, 3, 1]
    I4 = np.eye(4)
    Wqkv = np.zeros((12, 4))
    bqkv = np.zeros(12)
    # rows: head0 q0 q1 k0 k1 v0 v1, head1 q0 q1 k0 k1 v0 v1
    bqkv[0] = 2.0           # head 0: q = (2, 0) whatever the token
    Wqkv[2], Wqkv[3] = I4[0], I4[1]   # head 0: k = (u0, u1)
    Wqkv[4], Wqkv[5] = I4[2], I4[3]   # head 0: v = (u2, u3)
    Wqkv[10], Wqkv[11] = I4[0], I4[1]  # head 1: q = k = 0 -> mean of v = (u0, u1)
    bdense = np.array([0.125, 0.0, 0.0, 0.0])  # exact in f32, like every value here
    ones, zeros = np.ones(4), np.zeros(4)
    t = {"gpt_neox.embed_in.weight": E,
         "gpt_neox.layers.0.input_layernorm.weight": ones, "gpt_neox.layers.0.input_layernorm.bias": zeros,
         "gpt_neox.layers.0.post_attention_layernorm.weight": ones,
         "gpt_neox.layers.0.post_attention_layernorm.bias": zeros,
         "gpt_neox.layers.0.attention.query_key_value.weight": Wqkv,
         "gpt_neox.layers.0.attention.query_key_value.bias": bqkv,
         "gpt_neox.layers.0.attention.dense.weight": I4, "gpt_neox.layers.0.attention.dense.bias": bdense,
         "gpt_neox.layers.0.mlp.dense_h_to_4h.weight": I4, "gpt_neox.layers.0.mlp.dense_h_to_4h.bias": zeros,
         "gpt_neox.layers.0.mlp.dense_4h_to_h.weight": I4, "gpt_neox.layers.0.mlp.dense_4h_to_h.bias": zeros,
         "gpt_neox.final_layer_norm.weight": ones, "gpt_neox.final_layer_norm.bias": zeros}

    def ln(v):
        m = sum(v) / 4
        var = sum((a - m) ** 2 for a in v) / 4
        return [(a - m) / math.sqrt(var + eps) for a in v]

    def gelu(a):
        return 0.5 * a * (1 + math.erf(a / math.sqrt(2)))

    def rot(v, ang):  # rotate-half on 2 dims with inv_freq = 1: a plain rotation
        return [v[0] * math.cos(ang) - v[1] * math.sin(ang), v[1] * math.cos(ang) + v[0] * math.sin(ang)]

    def expected(parallel, tied):
        u = [ln(list(E[i])) for i in ids]
        out = []
        for ti in range(len(ids)):
            q = rot([2.0, 0.0], ti)
            sc = []
            for s in range(ti + 1):
                k = rot([u[s][0], u[s][1]], s)
                sc.append((q[0] * k[0] + q[1] * k[1]) / math.sqrt(2))
            w = [math.exp(a) for a in sc]
            w = [a / sum(w) for a in w]
            h0 = [sum(w[s] * u[s][2 + j] for s in range(ti + 1)) for j in range(2)]
            h1 = [sum(u[s][j] for s in range(ti + 1)) / (ti + 1) for j in range(2)]
            o = [a + b for a, b in zip(h0 + h1, bdense)]
            e = list(E[ids[ti]])
            if parallel:
                xo = [e[j] + o[j] + gelu(ln(e)[j]) for j in range(4)]
            else:
                hh = [e[j] + o[j] for j in range(4)]
                xo = [hh[j] + gelu(ln(hh)[j]) for j in range(4)]
            y = ln(xo)
            out.append([sum(y[j] * E[v][j] for j in range(4)) for v in range(4)] if tied else y)
        return np.array(out)

    worst = 0.0
    for parallel in (True, False):
        for tied in (False, True):
            cfg = {"hidden_size": 4, "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 4,
                   "vocab_size": 4, "max_position_embeddings": 8, "rotary_pct": 1.0, "rotary_emb_base": 10000,
                   "layer_norm_eps": eps, "use_parallel_residual": parallel, "tie_word_embeddings": tied,
                   "hidden_act": "gelu", "attention_bias": True}
            tt = dict(t)
            if not tied:
                tt["embed_out.weight"] = I4
            d = os.path.join(TMP, "hand_%d%d" % (parallel, tied))
            write_model(d, cfg, tt)
            got = neox_ref.load_model(d).forward(ids)
            want = expected(parallel, tied)
            diff = maxdiff(got, want)
            check(got.shape == (len(ids), 4), "shape %s" % (got.shape,))
            check(diff < 1e-12, "parallel=%s tied=%s: |ref - hand| = %g" % (parallel, tied, diff))
            worst = max(worst, diff)
    # The modes must actually differ here, or the test would prove nothing.
    check(maxdiff(expected(True, False), expected(False, False)) > 0.01, "residual modes indistinguishable")
    return "max |ref - hand| = %.1e" % worst


def test_naive_configs():
    """neox_ref == naive loops on generated models, across config variants."""
    ids = [3, 17, 0, 39, 17, 8, 25]
    cases = []
    for par in (1, 0):
        for tie in (0, 1):
            for pct in ("0.25", "0.5", "1.0"):
                cases.append(("--parallel-residual", par, "--tie", tie, "--rotary-pct", pct))
    cases += [("--attention-bias", 0), ("--attention-bias", 0, "--parallel-residual", 0, "--tie", 1),
              ("--dtype", "f16"), ("--dtype", "bf16", "--rotary-base", 500), ("--dtype", "f16", "--shards", 3),
              ("--eps", "1e-2", "--rotary-pct", "0.5", "--layers", 3)]
    worst = worst_hidden = worst_attn = 0.0
    for i, extra in enumerate(cases):
        d = gen("naive%d" % i, *(SMALL + extra + ("--seed", 100 + i)))
        got_h, want_h, got_a, want_a = [], [], [], []
        got = neox_ref.load_model(d).forward(ids, hidden_states=got_h, attentions=got_a)
        want = naive_forward(d, ids, hidden=want_h, attentions=want_a)
        diff = maxdiff(got, want)
        check(diff < 1e-9, "%s: |ref - naive| = %g" % (" ".join(map(str, extra)), diff))
        layers = json.load(open(os.path.join(d, "config.json")))["num_hidden_layers"]
        check(len(got_h) == len(want_h) == layers + 1, "%s: %d and %d hidden states for %d layers"
              % (" ".join(map(str, extra)), len(got_h), len(want_h), layers))
        hdiff = maxdiff(np.array(got_h), np.array(want_h))
        check(hdiff < 1e-9, "%s: hidden states |ref - naive| = %g" % (" ".join(map(str, extra)), hdiff))
        check(len(got_a) == len(want_a) == layers, "%s: %d and %d attention layers for %d layers"
              % (" ".join(map(str, extra)), len(got_a), len(want_a), layers))
        adiff = maxdiff(np.array(got_a), np.array(want_a))
        check(adiff < 1e-12, "%s: attentions |ref - naive| = %g" % (" ".join(map(str, extra)), adiff))
        worst, worst_hidden, worst_attn = max(worst, diff), max(worst_hidden, hdiff), max(worst_attn, adiff)
    return "%d configs, max |ref - naive| = %.1e, hidden states %.1e, attentions %.1e" % (
        len(cases), worst, worst_hidden, worst_attn)


# How far each bug moves the logits on a default-scaled generated model.
# A floor well above f32 round-off (~1e-5 here) means a compiled model with
# that bug fails a comparison at atol 1e-4.
MUTATIONS = {
    "qkv_layout": 0.05,        # [3, heads, hd] instead of [heads, 3, hd]
    "interleaved": 0.05,       # GPT-J rotary pairs (2i, 2i+1)
    "k_pos_offset": 0.05,      # keys rotated one position late (positions from 1
                               # for both q and k would be invisible: rotary is relative)
    "q_only_rotary": 0.05,     # rotary applied to q only
    "rotate_backwards": 0.05,  # rotate_half sign flipped: [x2, -x1]
    "no_rotary": 0.05,
    "rotary_all_dims": 0.05,   # rotary_pct ignored
    "inv_freq_hd": 0.05,       # inv_freq exponent over head_dim, not rotary_ndims
    "no_scale": 0.05,          # missing 1/sqrt(head_dim)
    "no_causal": 0.05,
    "residual_swap": 0.05,     # sequential instead of parallel residual
    "tie_wrong": 0.05,         # unembed with embed_in although untied
    "tanh_gelu": 1e-4,         # the tanh approximation (a small effect)
}


def test_bugs_visible():
    """Generator scales make each classic bug change the logits noticeably."""
    d = gen("mut", "--hidden", 32, "--heads", 2, "--ff", 64, "--vocab", 64, "--ctx", 32, "--layers", 2,
            "--seed", 7)
    ids = [5, 60, 2, 33, 33, 9, 41, 0, 17, 50]
    ref = neox_ref.load_model(d).forward(ids)
    base = naive_forward(d, ids)
    check(maxdiff(ref, base) < 1e-9, "naive != ref on the mutation model")
    notes = []
    for mut, floor in MUTATIONS.items():
        diff = maxdiff(naive_forward(d, ids, (mut,)), ref)
        notes.append("%s %.2g" % (mut, diff))
        check(diff > floor, "bug %s moves logits by only %g (floor %g)" % (mut, diff, floor))
    return ", ".join(notes)


def test_attention_sharp():
    """Default scales give sharp, position-dependent attention (not uniform)."""
    d = gen("tiny", "--preset", "tiny", "--seed", 3)
    m = neox_ref.load_model(d)
    T = 48
    ids = np.random.default_rng(1).integers(0, m.V, T)
    x = m._w("gpt_neox.embed_in.weight", (m.V, m.D))[ids]
    h = m._ln("gpt_neox.layers.0.input_layernorm", x)
    p = "gpt_neox.layers.0.attention.query_key_value."
    qkv = (h @ m._w(p + "weight", (3 * m.D, m.D)).T + m._w(p + "bias", (3 * m.D,))).reshape(T, m.H, 3, m.hd)
    s = np.einsum("thd,shd->hts", qkv[:, :, 0], qkv[:, :, 1]) / math.sqrt(m.hd)
    sd = float(s.std())
    check(2.0 < sd < 8.0, "attention logit std %.2f outside (2, 8)" % sd)
    P = neox_ref.softmax(np.where(np.tril(np.ones((T, T), bool))[None], s, -np.inf))
    top = float(P[:, 16:].max(axis=-1).mean())
    check(0.3 < top < 0.95, "mean max attention weight %.2f: too uniform or one-hot" % top)
    return "logit std %.2f, mean max weight %.2f" % (sd, top)


def test_causality():
    d = gen("tiny", "--preset", "tiny", "--seed", 3)
    m = neox_ref.load_model(d)
    rng = np.random.default_rng(5)
    ids = rng.integers(0, m.V, 20)
    full = m.forward(ids)
    check(full.shape == (20, m.V), "shape %s" % (full.shape,))
    for k in (0, 7, 18):
        alt = ids.copy()
        alt[k + 1:] = rng.integers(0, m.V, 20 - k - 1)
        alt[k + 1] = (ids[k + 1] + 1) % m.V
        la = m.forward(alt)
        check(maxdiff(la[:k + 1], full[:k + 1]) < 1e-12, "logits before %d changed with later tokens" % (k + 1))
        check(maxdiff(la[k + 1], full[k + 1]) > 1e-3, "position %d ignores its own token" % (k + 1))
        pre = m.forward(ids[:k + 1])
        check(maxdiff(pre, full[:k + 1]) < 1e-10, "prefix forward differs at length %d" % (k + 1))
    alt = ids.copy()
    alt[0] = (ids[0] + 1) % m.V
    check(maxdiff(m.forward(alt)[10:], full[10:]) > 1e-3, "later positions ignore token 0")


def test_greedy():
    d = gen("tiny", "--preset", "tiny", "--seed", 3)
    m = neox_ref.load_model(d)
    ids = [1, 2, 3]
    got = m.greedy(ids, 6)
    seq, want = list(ids), []
    for _ in range(6):
        want.append(int(np.argmax(m.forward(seq)[-1])))
        seq.append(want[-1])
    check(got == want, "greedy %s != argmax loop %s" % (got, want))
    # Ties: final LN weight 0 makes its output the bias b at every position;
    # embed_out rows 3 and 7 equal w with w.b > 0, every other row 0, so
    # logits 3 and 7 tie for the maximum and greedy must pick 3, every step.
    # With embed_out all zero everything ties and greedy must pick 0.
    t = st_load_dir(d)
    b = t["gpt_neox.final_layer_norm.bias"]
    t["gpt_neox.final_layer_norm.weight"] = np.zeros_like(b)
    w = np.zeros_like(t["embed_out.weight"])
    w[3] = w[7] = np.sign(b) * 0.5
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    picks = []
    for rows, want_tok in ((w, 3), (np.zeros_like(w), 0)):
        t["embed_out.weight"] = rows
        d2 = os.path.join(TMP, "ties%d" % want_tok)
        write_model(d2, cfg, t)
        m2 = neox_ref.load_model(d2)
        lg = m2.forward([5, 6])[-1]
        check(lg[3] == lg[7] and (lg[3] > lg[0] if want_tok == 3 else lg.max() == lg.min()),
              "tie model not tied: %s" % lg[:8])
        got2 = m2.greedy([5, 6], 3)
        check(got2 == [want_tok] * 3, "ties broken to %s, want %d" % (got2, want_tok))
        picks.append(want_tok)
    seq = [None, None] + picks
    return "greedy %s, ties %s" % (got, seq[2:])


def test_cli():
    d = gen("tiny", "--preset", "tiny", "--seed", 3)
    out = os.path.join(TMP, "cli_logits.npy")
    p = run([PY, os.path.join(TOOLS, "neox_ref.py"), d, "--ids", "4,8,15,16,23,42", "--out", out, "--greedy", "3"])
    m = neox_ref.load_model(d)
    check(json.loads(p.stdout) == m.greedy([4, 8, 15, 16, 23, 42], 3), "CLI greedy output %r" % p.stdout)
    a = npy.read_npy(out)
    check(maxdiff(a, m.forward([4, 8, 15, 16, 23, 42])) == 0.0, "CLI --out logits differ from the API")
    run([PY, os.path.join(TOOLS, "neox_ref.py"), d, "--ids", "1,x"], expect_rc=2)


def test_compare_logits():
    cmp_ = os.path.join(TOOLS, "compare_logits.py")
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((5, 50))
    f64 = os.path.join(TMP, "ref.npy")
    np.save(f64, ref)
    # float32 [T, vocab] exactly as a C writer would lay it out by hand
    c32 = os.path.join(TMP, "c.npy")
    h = "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 50), }"
    h += " " * (-(10 + len(h) + 1) % 64) + "\n"
    with open(c32, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode() + ref.astype("<f4").tobytes())
    check(npy.read_npy(c32).shape == (5, 50), "hand-written float32 npy unreadable")
    run([PY, cmp_, c32, f64, "--atol", "1e-6"])
    run([PY, cmp_, c32, f64, "--atol", "1e-9"], expect_rc=1)
    bad = ref.copy()
    bad[2, 7] += 0.01
    npy.write_npy(os.path.join(TMP, "bad.npy"), bad.astype(np.float32))
    p = run([PY, cmp_, os.path.join(TMP, "bad.npy"), f64, "--atol", "1e-3"], expect_rc=1)
    check("[2, 7]" in p.stdout, "diff location not reported: %s" % p.stdout)
    run([PY, cmp_, os.path.join(TMP, "bad.npy"), f64, "--atol", "0.02"])
    np.save(os.path.join(TMP, "short.npy"), ref[:4])
    run([PY, cmp_, os.path.join(TMP, "short.npy"), f64], expect_rc=1)
    run([PY, cmp_, os.path.join(TMP, "short.npy"), f64, "--last", "--atol", "0"], expect_rc=1)
    np.save(os.path.join(TMP, "last.npy"), ref[-1:])
    run([PY, cmp_, os.path.join(TMP, "last.npy"), f64, "--last", "--atol", "0"])
    nan = ref.copy()
    nan[0, 0] = np.nan
    np.save(os.path.join(TMP, "nan.npy"), nan)
    run([PY, cmp_, os.path.join(TMP, "nan.npy"), f64, "--atol", "100"], expect_rc=1)
    with open(os.path.join(TMP, "trunc.npy"), "wb") as f:
        f.write(open(c32, "rb").read()[:-4])
    run([PY, cmp_, os.path.join(TMP, "trunc.npy"), f64], expect_rc=2)
    with open(os.path.join(TMP, "unaligned.npy"), "wb") as f:
        h2 = "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 50), }\n"
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h2)) + h2.encode() + ref.astype("<f4").tobytes())
    run([PY, cmp_, os.path.join(TMP, "unaligned.npy"), f64], expect_rc=2)


def test_generator_layout():
    """Single-file f32: header, names, shapes, config, value scales."""
    d = gen("layout", "--preset", "tiny", "--seed", 11)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    want = {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "hidden_act": "gelu",
            "bos_token_id": 0, "eos_token_id": 0, "hidden_size": 64, "num_attention_heads": 4,
            "num_hidden_layers": 2, "intermediate_size": 256, "vocab_size": 512, "max_position_embeddings": 128,
            "rotary_pct": 0.25, "rotary_emb_base": 10000, "layer_norm_eps": 1e-5, "use_parallel_residual": True,
            "tie_word_embeddings": False, "attention_bias": True, "torch_dtype": "float32"}
    for k, v in want.items():
        check(cfg.get(k) == v, "config.json %s = %r, want %r" % (k, cfg.get(k), v))
    check(sorted(os.listdir(d)) == ["config.json", "model.safetensors"], "files %s" % os.listdir(d))
    hdr, meta, data = st_parse(os.path.join(d, "model.safetensors"))
    check(meta == {"format": "pt"}, "__metadata__ %r" % meta)
    expect = hf_names_shapes(cfg)
    got = {n: e["shape"] for n, e in hdr.items()}
    check(got == expect, "names/shapes differ: extra %s missing %s" % (
        sorted(set(got) - set(expect)), sorted(set(expect) - set(got))))
    check(all(e["dtype"] == "F32" for e in hdr.values()), "dtype not F32")
    t = {n: st_decode(hdr, data, n) for n in hdr}
    D, hd = 64, 16
    emb = t["gpt_neox.embed_in.weight"]
    check(abs(emb.std() - 1) < 0.05 and abs(emb.mean()) < 0.05, "embed_in std %.3f" % emb.std())
    g = t["gpt_neox.layers.1.input_layernorm.weight"]
    check(abs(g.mean() - 1) < 0.1 and 0.1 < g.std() < 0.3, "LN gamma mean %.3f std %.3f" % (g.mean(), g.std()))
    w = t["gpt_neox.layers.0.attention.query_key_value.weight"].reshape(4, 3, hd, D)
    qs, vs = w[:, 0].std() * math.sqrt(D), w[:, 2].std() * math.sqrt(D)
    check(abs(qs - 2) < 0.15 and abs(vs - 1) < 0.1, "qkv q std*sqrt(D) %.2f, v %.2f" % (qs, vs))
    w2 = t["gpt_neox.layers.0.mlp.dense_4h_to_h.weight"]
    check(abs(w2.std() * math.sqrt(256) - 1) < 0.1, "dense_4h_to_h std %.4f" % w2.std())
    # flags override the preset; pythia presets default to f16
    d2 = gen("preset", "--preset", "pythia-70m", "--layers", 1, "--vocab", 100, "--ctx", 64, "--ff", 64)
    with open(os.path.join(d2, "config.json")) as f:
        c2 = json.load(f)
    check((c2["hidden_size"], c2["num_attention_heads"], c2["num_hidden_layers"], c2["intermediate_size"],
           c2["vocab_size"], c2["torch_dtype"]) == (512, 8, 1, 64, 100, "float16"), "preset override %r" % c2)
    h2, _, _ = st_parse(os.path.join(d2, "model.safetensors"))
    check(all(e["dtype"] == "F16" for e in h2.values()), "pythia preset not F16")
    run([PY, GEN, os.path.join(TMP, "bad"), "--hidden", "30", "--heads", "4"], expect_rc=2)
    run([PY, GEN, os.path.join(TMP, "bad"), "--hidden", "24", "--heads", "2", "--rotary-pct", "0.25"],
        expect_rc=2)  # rotary_ndims 3 is odd


def test_generator_dtypes():
    """f16/bf16 files hold the f32 values rounded to nearest even."""
    a = (SMALL + ("--seed", 21))
    h32, _, d32 = st_parse(os.path.join(gen("dt32", *a), "model.safetensors"))
    h16, _, d16 = st_parse(os.path.join(gen("dt16", *(a + ("--dtype", "f16"))), "model.safetensors"))
    hb, _, db = st_parse(os.path.join(gen("dtbf", *(a + ("--dtype", "bf16"))), "model.safetensors"))
    with open(os.path.join(TMP, "dtbf", "config.json")) as f:
        check(json.load(f)["torch_dtype"] == "bfloat16", "torch_dtype for bf16")
    n_checked = 0
    for name, e in h32.items():
        b, end = e["data_offsets"]
        n = (end - b) // 4
        bits = struct.unpack("<%dI" % n, d32[b:end])
        f32 = np.frombuffer(d32[b:end], dtype="<f4")
        check(h16[name]["dtype"] == "F16" and hb[name]["dtype"] == "BF16", "%s dtypes" % name)
        b16, e16 = h16[name]["data_offsets"]
        check(d16[b16:e16] == f32.astype("<f2").tobytes(), "%s: f16 != round(f32)" % name)
        bb, eb = hb[name]["data_offsets"]
        got = struct.unpack("<%dH" % n, db[bb:eb])
        for x, g in zip(bits, got):  # round to nearest, ties to even, by hand
            hi, lo = x >> 16, x & 0xFFFF
            if lo > 0x8000 or (lo == 0x8000 and hi & 1):
                hi += 1
            if g != hi:
                raise Fail("%s: bf16 %04x for f32 %08x" % (name, g, x))
        n_checked += n
    return "%d values" % n_checked


def test_generator_shards():
    """Sharded output: index consistent, tensors identical to single-file."""
    a = SMALL + ("--seed", 31, "--dtype", "f16", "--legacy-buffers")
    single = gen("sh1", *a)
    multi = gen("sh3", *(a + ("--shards", 3)))
    files = sorted(f for f in os.listdir(multi) if f.endswith(".safetensors"))
    check(files == ["model-%05d-of-00003.safetensors" % i for i in (1, 2, 3)], "shard names %s" % files)
    check(not os.path.exists(os.path.join(multi, "model.safetensors")), "stray model.safetensors")
    with open(os.path.join(multi, "model.safetensors.index.json")) as f:
        idx = json.load(f)
    wm = idx["weight_map"]
    hs, _, ds = st_parse(os.path.join(single, "model.safetensors"))
    seen, total = set(), 0
    for fn in files:
        h, meta, data = st_parse(os.path.join(multi, fn))
        check(meta == {"format": "pt"}, "%s metadata" % fn)
        check(len(h) > 0, "%s is empty" % fn)
        for name, e in h.items():
            check(name not in seen, "%s in two shards" % name)
            seen.add(name)
            check(wm.get(name) == fn, "index maps %s to %s, found in %s" % (name, wm.get(name), fn))
            b, end = e["data_offsets"]
            bs, es = hs[name]["data_offsets"]
            check(e["dtype"] == hs[name]["dtype"] and e["shape"] == hs[name]["shape"], "%s meta differs" % name)
            check(data[b:end] == ds[bs:es], "%s bytes differ from the single file" % name)
            total += end - b
    check(seen == set(wm) == set(hs), "index / shards / single-file tensor sets differ")
    check(idx["metadata"]["total_size"] == total, "total_size %d != %d" % (idx["metadata"]["total_size"], total))
    # regenerating into the same folder unsharded leaves no stale shards
    run([PY, GEN, multi] + [str(x) for x in a])
    _gen_cache.pop(multi, None)
    check(sorted(os.listdir(multi)) == ["config.json", "model.safetensors"], "stale files %s" % os.listdir(multi))


def _digest(d):
    h = hashlib.sha256()
    for fn in sorted(os.listdir(d)):
        h.update(fn.encode())
        with open(os.path.join(d, fn), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def test_generator_deterministic():
    """Same seed -> byte-identical files whatever chunk size / thread count."""
    a = ("--preset", "tiny", "--seed", 41, "--dtype", "bf16", "--shards", 2)
    d1 = gen("det1", *a)
    d2 = gen("det2", *(a + ("--chunk-mb", "0.001", "--threads", 1)))
    d3 = gen("det3", *(a + ("--chunk-mb", "0.03", "--threads", 4)))
    d4 = gen("det4", *(("--preset", "tiny", "--seed", 42, "--dtype", "bf16", "--shards", 2)))
    check(_digest(d1) == _digest(d2) == _digest(d3), "chunk size / threads change the bytes")
    check(_digest(d1) != _digest(d4), "seed does not change the bytes")
    # Optional tensors keep their seeds: tie / attention_bias change nothing else.
    base = st_load_dir(gen("opt0", *(SMALL + ("--seed", 5))))
    for extra in (("--tie", 1), ("--attention-bias", 0)):
        other = st_load_dir(gen("opt%s" % extra[0][2:], *(SMALL + ("--seed", 5) + extra)))
        for name, v in other.items():
            check(np.array_equal(v, base[name]), "%s changes %s" % (extra[0], name))


def test_legacy_buffers():
    """Legacy buffers are written like old checkpoints and ignored."""
    a = SMALL + ("--seed", 51, "--dtype", "f16")
    plain = gen("leg0", *a)
    legacy = gen("leg1", *(a + ("--legacy-buffers",)))
    hdr, _, data = st_parse(os.path.join(legacy, "model.safetensors"))
    with open(os.path.join(legacy, "config.json")) as f:
        cfg = json.load(f)
    got = {n: e["shape"] for n, e in hdr.items()}
    check(got == hf_names_shapes(cfg, legacy=True), "legacy names/shapes")
    p = "gpt_neox.layers.1.attention."
    check(hdr[p + "bias"]["dtype"] == "BOOL", "mask dtype %s" % hdr[p + "bias"]["dtype"])
    mask = st_decode(hdr, data, p + "bias")[0, 0]
    check(np.array_equal(mask, np.tril(np.ones((16, 16)))), "mask not lower-triangular")
    check(st_decode(hdr, data, p + "masked_bias").item() == np.float32(-1e9), "masked_bias")
    inv = st_decode(hdr, data, p + "rotary_emb.inv_freq")
    check(maxdiff(inv, 1.0 / 10000 ** (np.arange(0, 2, 2) / 2)) < 1e-6, "inv_freq %s" % inv)
    plain_t, legacy_t = st_load_dir(plain), st_load_dir(legacy)
    for name, v in plain_t.items():
        check(np.array_equal(v, legacy_t[name]), "%s differs with --legacy-buffers" % name)
    ids = [1, 5, 9, 2, 2]
    check(maxdiff(neox_ref.load_model(plain).forward(ids), neox_ref.load_model(legacy).forward(ids)) == 0.0,
          "legacy buffers change the reference logits")


TESTS = [test_hand_computed, test_naive_configs, test_bugs_visible, test_attention_sharp, test_causality,
         test_greedy, test_cli, test_compare_logits, test_generator_layout, test_generator_dtypes,
         test_generator_shards, test_generator_deterministic, test_legacy_buffers]


def main():
    only = sys.argv[1:]
    passed = failed = 0
    for t in TESTS:
        if only and t.__name__ not in only and t.__name__[5:] not in only:
            continue
        try:
            note = t()
            print("ok   %s%s" % (t.__name__, "  (%s)" % note if note else ""), flush=True)
            passed += 1
        except Exception as e:  # report every failure, keep going
            failed += 1
            detail = str(e) if isinstance(e, Fail) else traceback.format_exc()
            print("FAIL %s: %s" % (t.__name__, detail), flush=True)
    print("%d passed, %d failed" % (passed, failed))
    if failed == 0 and not os.environ.get("TEST_TMP"):
        shutil.rmtree(TMP, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
