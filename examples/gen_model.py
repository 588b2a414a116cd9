#!/usr/bin/env python3
"""gen_model.py -- write a synthetic GPT-NeoX / Pythia model folder.

Usage:
    gen_model.py OUT_DIR [--preset NAME] [--hidden N --heads N --layers N --ff N
                 --vocab N --ctx N --rotary-pct F --rotary-base F --eps F
                 --parallel-residual 0|1 --tie 0|1 --attention-bias 0|1]
                 [--dtype f32|f16|bf16] [--shards N] [--seed S]
                 [--legacy-buffers] [--tokenizer FILE] [--threads N]
                 [--chunk-mb N] [--verbose]

Writes OUT_DIR/config.json and OUT_DIR/model.safetensors, or with --shards N>1
OUT_DIR/model-0000K-of-0000N.safetensors plus model.safetensors.index.json,
exactly as Hugging Face lays out a GPTNeoXForCausalLM checkpoint.  Tensor names
and shapes are Hugging Face's (see tensor_specs()).  Explicit flags override
the preset; the default preset is `tiny`.  The default dtype is f32 for `tiny`
and f16 (like the real checkpoints) for the pythia-* presets.

Weight scales (the point of this generator is to make tests catch bugs)
----------------------------------------------------------------------
Real-looking init (N(0, 0.02) everywhere) gives nearly uniform attention and
near-linear layers, so a wrong qkv layout, a rotary off by one position or the
tanh GELU would all pass a logits comparison.  We instead use, with D = hidden
size, F = intermediate size:

    embed_in              N(0, 1)
    LayerNorm weight      1 + N(0, 0.2)          LayerNorm bias  N(0, 0.1)
    query_key_value       N(0, 1/sqrt(D)), and the q and k rows times QK_GAIN=2
    dense, dense_h_to_4h  N(0, 1/sqrt(D))
    dense_4h_to_h         N(0, 1/sqrt(F))
    embed_out             N(0, 1/sqrt(D))
    every linear bias     N(0, 0.1)

LayerNorm outputs have unit-ish variance, so every linear layer outputs values
of variance ~1 (the GELU sees pre-activations of std ~1, well inside its
curved region); q and k have std ~QK_GAIN, so attention logits q.k/sqrt(hd)
have std ~QK_GAIN**2 = 4: attention is sharp and position-dependent, yet not
one-hot.  Logits have std ~1 (untied).  With tied embeddings the unembedding is
embed_in (N(0,1)), so logits have std ~sqrt(D); that is fine for tests.

Determinism and memory
----------------------
Tensor number k of the canonical list (embed_in, then the 12 parameters of
each layer, then final_layer_norm and embed_out; optional tensors keep their
number even when omitted) is drawn from np.random.default_rng([seed, k]) as
one stream of float32 standard normals, scaled, then converted.  Values thus
depend neither on chunk size, nor on thread count, nor on sharding, dtype
(f16/bf16 are the f32 values rounded to nearest even), --tie or
--attention-bias.  Tensors are generated chunk by chunk (--chunk-mb, default
16 MB of float32) and written with pwrite at their final offsets, several
tensors in parallel (--threads), so memory stays bounded by
threads x chunk size whatever the model size.

Legacy buffers (--legacy-buffers) add what old checkpoints carried per layer:
attention.bias (BOOL causal mask [1,1,ctx,ctx]), attention.masked_bias (F32
scalar -1e9) and attention.rotary_emb.inv_freq (F32 [rotary_ndims/2]).  Loaders
must ignore them.
"""

import argparse
import json
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

QK_GAIN = 2.0

# name: (layers, hidden, heads, ff, vocab, ctx)
PRESETS = {
    "tiny": (2, 64, 4, 256, 512, 128),
    "pythia-14m": (6, 128, 4, 512, 50304, 2048),
    "pythia-70m": (6, 512, 8, 2048, 50304, 2048),
    "pythia-160m": (12, 768, 12, 3072, 50304, 2048),
    "pythia-410m": (24, 1024, 16, 4096, 50304, 2048),
    "pythia-1b": (16, 2048, 8, 8192, 50304, 2048),
    "pythia-1.4b": (24, 2048, 16, 8192, 50304, 2048),
    "pythia-2.8b": (32, 2560, 32, 10240, 50304, 2048),
    "pythia-6.9b": (32, 4096, 32, 16384, 50432, 2048),
    "pythia-12b": (36, 5120, 40, 20480, 50688, 2048),
}

DTYPES = {  # our name: (safetensors dtype, bytes per element, torch_dtype)
    "f32": ("F32", 4, "float32"),
    "f16": ("F16", 2, "float16"),
    "bf16": ("BF16", 2, "bfloat16"),
}
ELEM_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "BOOL": 1}


# ---------------------------------------------------------------- config ---

def build_config(a):
    """Hugging Face config.json contents for the resolved arguments."""
    base = a.rotary_base
    if float(base).is_integer():
        base = int(base)
    return {
        "architectures": ["GPTNeoXForCausalLM"],
        "attention_bias": bool(a.attention_bias),
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "classifier_dropout": 0.1,
        "eos_token_id": 0,
        "hidden_act": "gelu",
        "hidden_dropout": 0.0,
        "hidden_size": a.hidden,
        "initializer_range": 0.02,
        "intermediate_size": a.ff,
        "layer_norm_eps": a.eps,
        "max_position_embeddings": a.ctx,
        "model_type": "gpt_neox",
        "num_attention_heads": a.heads,
        "num_hidden_layers": a.layers,
        "rope_scaling": None,
        "rotary_emb_base": base,
        "rotary_pct": a.rotary_pct,
        "tie_word_embeddings": bool(a.tie),
        "torch_dtype": DTYPES[a.dtype][2],
        "transformers_version": "4.40.0",
        "use_cache": True,
        "use_parallel_residual": bool(a.parallel_residual),
        "vocab_size": a.vocab,
    }


# --------------------------------------------------------------- tensors ---

class Spec:
    """One tensor: name, shape, dtype and how to fill it.

    kind "normal": mean + std * N(0,1) (seeded by index);
    kind "qkv": std * N(0,1), q/k rows of each head times QK_GAIN;
    kinds "mask", "masked_bias", "inv_freq": deterministic legacy buffers."""

    def __init__(self, name, shape, kind, index=None, std=1.0, mean=0.0, dtype=None):
        self.name, self.shape, self.kind = name, tuple(shape), kind
        self.index, self.std, self.mean, self.dtype = index, std, mean, dtype
        self.numel = int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1
        self.nbytes = self.numel * ELEM_SIZE[dtype]


def tensor_specs(a):
    """Every tensor of the checkpoint, in canonical (layer) order."""
    D, F, V, H, C = a.hidden, a.ff, a.vocab, a.heads, a.ctx
    hd = D // H
    rot = int(hd * a.rotary_pct)
    wd = DTYPES[a.dtype][0]
    ln_w, ln_b, bias = 0.2, 0.1, 0.1
    specs = []
    idx = [0]

    def param(name, shape, kind="normal", std=1.0, mean=0.0, keep=True):
        k = idx[0]
        idx[0] += 1  # the number is consumed even when the tensor is omitted
        if keep:
            specs.append(Spec(name, shape, kind, k, std, mean, wd))

    param("gpt_neox.embed_in.weight", (V, D), std=1.0)
    for i in range(a.layers):
        p = "gpt_neox.layers.%d." % i
        param(p + "input_layernorm.weight", (D,), std=ln_w, mean=1.0)
        param(p + "input_layernorm.bias", (D,), std=ln_b)
        param(p + "post_attention_layernorm.weight", (D,), std=ln_w, mean=1.0)
        param(p + "post_attention_layernorm.bias", (D,), std=ln_b)
        param(p + "attention.query_key_value.weight", (3 * D, D), "qkv", std=D ** -0.5)
        param(p + "attention.query_key_value.bias", (3 * D,), std=bias, keep=a.attention_bias)
        param(p + "attention.dense.weight", (D, D), std=D ** -0.5)
        param(p + "attention.dense.bias", (D,), std=bias, keep=a.attention_bias)
        param(p + "mlp.dense_h_to_4h.weight", (F, D), std=D ** -0.5)
        param(p + "mlp.dense_h_to_4h.bias", (F,), std=bias)
        param(p + "mlp.dense_4h_to_h.weight", (D, F), std=F ** -0.5)
        param(p + "mlp.dense_4h_to_h.bias", (D,), std=bias)
        if a.legacy_buffers:
            specs.append(Spec(p + "attention.bias", (1, 1, C, C), "mask", dtype="BOOL"))
            specs.append(Spec(p + "attention.masked_bias", (), "masked_bias", dtype="F32"))
            specs.append(Spec(p + "attention.rotary_emb.inv_freq", (rot // 2,), "inv_freq",
                              dtype="F32", std=a.rotary_base))
    param("gpt_neox.final_layer_norm.weight", (D,), std=ln_w, mean=1.0)
    param("gpt_neox.final_layer_norm.bias", (D,), std=ln_b)
    param("embed_out.weight", (V, D), std=D ** -0.5, keep=not a.tie)
    return specs


def to_bf16_bits(x32):
    """float32 array -> uint16 bf16 bits, rounded to nearest, ties to even."""
    u = x32.view(np.uint32)
    t = u >> np.uint32(16)
    t &= np.uint32(1)
    t += np.uint32(0x7FFF)
    t += u                      # no overflow: |x| < 2**127 here, no NaNs
    t >>= np.uint32(16)
    return t.astype(np.uint16)


def pwrite_all(fd, data, offset):
    mv = memoryview(data).cast("B")
    while len(mv):
        k = os.pwrite(fd, mv, offset)
        mv, offset = mv[k:], offset + k


def encode(x32, dtype):
    if dtype == "F32":
        return x32
    if dtype == "F16":
        return x32.astype(np.float16)
    if dtype == "BF16":
        return to_bf16_bits(x32)
    raise ValueError(dtype)


def fill_tensor(spec, seed, a, fd, offset, chunk_elems, progress):
    """Generate spec's data chunk by chunk and pwrite it at offset."""
    if spec.kind == "mask":
        C = spec.shape[-1]
        rows = max(1, chunk_elems // C)
        for r0 in range(0, C, rows):
            r1 = min(C, r0 + rows)
            m = (np.arange(C)[None, :] <= np.arange(r0, r1)[:, None]).astype(np.uint8)
            pwrite_all(fd, m, offset + r0 * C)
            progress(m.nbytes)
        return
    if spec.kind == "masked_bias":
        pwrite_all(fd, np.array([-1e9], dtype="<f4"), offset)
        progress(4)
        return
    if spec.kind == "inv_freq":
        rot = 2 * spec.shape[0]
        inv = 1.0 / (spec.std ** (np.arange(0, rot, 2, dtype=np.float32) / np.float32(rot)))
        pwrite_all(fd, inv.astype("<f4"), offset)
        progress(inv.nbytes)
        return
    rng = np.random.default_rng([seed, spec.index])
    esize = ELEM_SIZE[spec.dtype]
    D = spec.shape[-1]
    hd = D // a.heads
    pos = 0
    while pos < spec.numel:
        n = min(chunk_elems, spec.numel - pos)
        x = rng.standard_normal(n, dtype=np.float32)
        x *= np.float32(spec.std)
        if spec.kind == "qkv":
            # Output row r is slot (r // hd) % 3 (q, k, v) of head r // (3*hd):
            # flat segments of D*hd elements alternate q, k, v.
            seg = D * hd
            for j in range(pos // seg, (pos + n - 1) // seg + 1):
                if j % 3 < 2:
                    x[max(pos, j * seg) - pos:min(pos + n, (j + 1) * seg) - pos] *= np.float32(QK_GAIN)
        if spec.mean:
            x += np.float32(spec.mean)
        out = encode(x, spec.dtype)
        pwrite_all(fd, out, offset + pos * esize)
        progress(out.nbytes)
        pos += n


# ----------------------------------------------------------- safetensors ---

def header_bytes(specs):
    """JSON header padded with spaces to a multiple of 8; also data offsets."""
    hdr = {"__metadata__": {"format": "pt"}}
    offsets, off = [], 0
    for s in specs:
        hdr[s.name] = {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [off, off + s.nbytes]}
        offsets.append(off)
        off += s.nbytes
    raw = json.dumps(hdr, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return raw, offsets, off


def file_order(specs):
    """Within a file, larger elements first (stable), so every tensor's offset
    is a multiple of its element size, as the safetensors serializer does."""
    return sorted(specs, key=lambda s: -ELEM_SIZE[s.dtype])


def split_shards(specs, n):
    """Cut the canonical list into n consecutive, non-empty runs of similar
    byte size (shard k closes once the bytes so far reach k/n of the total)."""
    if n > len(specs):
        raise SystemExit("gen_model: --shards %d but only %d tensors" % (n, len(specs)))
    total = sum(s.nbytes for s in specs)
    shards, cur, cum = [], [], 0
    for i, s in enumerate(specs):
        cur.append(s)
        cum += s.nbytes
        need = n - len(shards) - 1          # shards still to open after cur
        left = len(specs) - i - 1           # tensors not yet placed
        if need > 0 and (cum * n >= total * (len(shards) + 1) or left == need):
            shards.append(cur)
            cur = []
    shards.append(cur)
    assert len(shards) == n and all(shards)
    return shards


def remove_old_weights(out):
    for f in os.listdir(out):
        if f == "model.safetensors" or f == "model.safetensors.index.json" or (
                f.startswith("model-") and f.endswith(".safetensors")):
            os.unlink(os.path.join(out, f))


# ------------------------------------------------------------------ main ---

def parse_args(argv):
    ap = argparse.ArgumentParser(description="Write a synthetic GPT-NeoX model folder.")
    ap.add_argument("out_dir")
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--hidden", type=int)
    ap.add_argument("--heads", type=int)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--ff", type=int)
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--ctx", type=int)
    ap.add_argument("--rotary-pct", type=float, default=0.25)
    ap.add_argument("--rotary-base", type=float, default=10000.0)
    ap.add_argument("--eps", type=float, default=1e-5)
    ap.add_argument("--parallel-residual", type=int, choices=(0, 1), default=1)
    ap.add_argument("--tie", type=int, choices=(0, 1), default=0)
    ap.add_argument("--attention-bias", type=int, choices=(0, 1), default=1)
    ap.add_argument("--dtype", choices=sorted(DTYPES))
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--legacy-buffers", action="store_true")
    ap.add_argument("--tokenizer", metavar="FILE", help="copy this tokenizer.json into OUT_DIR")
    ap.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--chunk-mb", type=float, default=16.0,
                    help="float32 megabytes generated at a time per thread (default 16)")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)
    L, D, H, F, V, C = PRESETS[a.preset]
    for k, v in (("layers", L), ("hidden", D), ("heads", H), ("ff", F), ("vocab", V), ("ctx", C)):
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.dtype is None:
        a.dtype = "f32" if a.preset == "tiny" else "f16"
    err = None
    if min(a.hidden, a.heads, a.ff, a.vocab, a.ctx) <= 0 or a.layers < 0:
        err = "sizes must be positive"
    elif a.hidden % a.heads:
        err = "--hidden %d is not a multiple of --heads %d" % (a.hidden, a.heads)
    elif not 0.0 <= a.rotary_pct <= 1.0:
        err = "--rotary-pct must be in [0, 1]"
    elif int(a.hidden // a.heads * a.rotary_pct) % 2:
        err = "rotary_ndims = int(head_dim * rotary_pct) = %d must be even" % int(a.hidden // a.heads * a.rotary_pct)
    elif a.shards < 1 or a.threads < 1 or a.chunk_mb <= 0:
        err = "--shards, --threads and --chunk-mb must be positive"
    if err:
        ap.error(err)
    return a


def main(argv=None):
    a = parse_args(argv if argv is not None else sys.argv[1:])
    t0 = time.time()
    os.makedirs(a.out_dir, exist_ok=True)
    remove_old_weights(a.out_dir)
    with open(os.path.join(a.out_dir, "config.json"), "w") as f:
        json.dump(build_config(a), f, indent=2, sort_keys=True)
        f.write("\n")
    if a.tokenizer:
        shutil.copyfile(a.tokenizer, os.path.join(a.out_dir, "tokenizer.json"))

    specs = tensor_specs(a)
    shards = split_shards(specs, a.shards)
    n = len(shards)
    names = ["model.safetensors"] if n == 1 else [
        "model-%05d-of-%05d.safetensors" % (i + 1, n) for i in range(n)]
    chunk_elems = max(1, int(a.chunk_mb * (1 << 20)) // 4)
    total = sum(s.nbytes for s in specs)
    done = [0]
    lock = threading.Lock()
    last = [0.0]

    def progress(nbytes):
        if not a.verbose:
            return
        with lock:
            done[0] += nbytes
            now = time.time()
            if now - last[0] > 1.0 or done[0] == total:
                last[0] = now
                el = now - t0
                sys.stderr.write("gen_model: %6.2f / %.2f GB  %5.1f%%  %.0f MB/s\n" % (
                    done[0] / 1e9, total / 1e9, 100.0 * done[0] / max(total, 1),
                    done[0] / 1e6 / max(el, 1e-9)))

    fds, jobs, weight_map = [], [], {}
    try:
        for fname, shard in zip(names, shards):
            ordered = file_order(shard)
            hdr, offsets, size = header_bytes(ordered)
            fd = os.open(os.path.join(a.out_dir, fname), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            fds.append(fd)
            pwrite_all(fd, len(hdr).to_bytes(8, "little") + hdr, 0)
            os.ftruncate(fd, 8 + len(hdr) + size)
            for s, off in zip(ordered, offsets):
                jobs.append((s, fd, 8 + len(hdr) + off))
                weight_map[s.name] = fname
        jobs.sort(key=lambda j: -j[0].nbytes)  # biggest first: better balance
        with ThreadPoolExecutor(max_workers=a.threads) as ex:
            futs = [ex.submit(fill_tensor, s, a.seed, a, fd, off, chunk_elems, progress)
                    for s, fd, off in jobs]
            for fu in futs:
                fu.result()
    finally:
        for fd in fds:
            os.close(fd)

    if n > 1:
        index = {"metadata": {"total_size": total},
                 "weight_map": dict(sorted(weight_map.items()))}
        with open(os.path.join(a.out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
            f.write("\n")
    if a.verbose:
        sys.stderr.write("gen_model: wrote %s (%d tensors, %.3f GB, %d file(s)) in %.1f s\n" % (
            a.out_dir, len(specs), total / 1e9, n, time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
