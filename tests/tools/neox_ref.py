#!/usr/bin/env python3
"""neox_ref.py -- reference GPT-NeoX forward pass in numpy float64.

The yardstick every numerics test compares the compiled executables against.
Written from the Hugging Face GPTNeoXForCausalLM semantics, deliberately
plain: no KV cache, no fusion, whole sequence at once, float64 throughout.

    x = embed_in[ids]
    per layer:
        a = attention(LN1(x))
        parallel residual:    x = x + a + mlp(LN2(x))
        sequential residual:  h = x + a;  x = h + mlp(LN2(h))
    logits = LN_final(x) @ W.T      W = embed_out, or embed_in when tied

    attention(h):
        qkv = h @ Wqkv.T + bqkv, viewed as [T, heads, 3, head_dim]
              (q, k, v of head 0, then of head 1, ... along the output dim)
        rotary on the first rotary_ndims = int(head_dim * rotary_pct) dims of
              q and k, rotate-half convention: with inv_freq[i] =
              1 / base**(2i / rotary_ndims) and angle t*inv_freq[i] at position
              t = 0, 1, ..., x_rot * cos + rotate_half(x_rot) * sin where cos,
              sin are of [freqs, freqs] and rotate_half(x) = [-x2, x1]
        softmax(q k^T / sqrt(head_dim), causal) v, heads concatenated,
        then dense (+ bias)
    mlp(h) = dense_4h_to_h(gelu(dense_h_to_4h(h))), gelu the exact erf form
    LN(x) = (x - mean) / sqrt(var + eps) * weight + bias, biased variance

Reads config.json and model.safetensors or sharded model-*.safetensors with
model.safetensors.index.json (F32/F16/BF16, converted to float64); tensors it
does not use (legacy attention.bias, masked_bias, rotary_emb.inv_freq) are
ignored.

The one option, kv_dtype="f16", models a half-precision K/V cache (pythiac
--kv-cache=f16): k (after rotary) and v are rounded to IEEE half, to
nearest even, before the scores and the weighted sum use them.

API:  m = load_model(dir[, kv_dtype="f16"]);  m.forward(ids) -> logits [T, vocab] float64;
      m.greedy(ids, n) -> n new ids (argmax over all vocab_size logits, ties to
      the lowest id).
CLI:  neox_ref.py MODEL_DIR --ids 1,2,3 [--out logits.npy] [--greedy N]
      --out writes all positions' logits (float64 .npy, [T, vocab]);
      --greedy prints the continuation as a JSON array; with neither, prints
      the last position's top-5 ids as JSON.
"""

import argparse
import json
import math
import mmap
import os
import sys

import numpy as np

# -------------------------------------------------------- safetensors ---

_NP_DTYPE = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
             "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "u1"}


class SafetensorsFile:
    """A safetensors file mapped read-only: header parsed, tensors on demand."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if len(self.mm) < 8:
            raise ValueError("%s: too short for a safetensors file" % path)
        n = int.from_bytes(self.mm[:8], "little")
        if 8 + n > len(self.mm):
            raise ValueError("%s: header length %d past end of file" % (path, n))
        hdr = json.loads(bytes(self.mm[8:8 + n]).decode("utf-8"))
        self.metadata = hdr.pop("__metadata__", {})
        self.header = hdr
        self.data_start = 8 + n

    def names(self):
        return list(self.header)

    def get_raw(self, name):
        """The tensor as stored (BF16 as uint16), no copy."""
        e = self.header[name]
        dt, shape, (b, end) = e["dtype"], e["shape"], e["data_offsets"]
        if dt == "BF16":
            npdt = "<u2"
        elif dt in _NP_DTYPE:
            npdt = _NP_DTYPE[dt]
        else:
            raise ValueError("%s: tensor %s: unsupported dtype %s" % (self.path, name, dt))
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if end - b != count * np.dtype(npdt).itemsize:
            raise ValueError("%s: tensor %s: %d bytes for shape %s %s" % (self.path, name, end - b, shape, dt))
        a = np.frombuffer(self.mm, dtype=npdt, count=count, offset=self.data_start + b)
        return a.reshape(shape), dt

    def get_f64(self, name):
        a, dt = self.get_raw(name)
        if dt == "BF16":
            return (a.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)
        return a.astype(np.float64)


class Checkpoint:
    """All tensors of a model folder, single file or sharded."""

    def __init__(self, d):
        idx = os.path.join(d, "model.safetensors.index.json")
        single = os.path.join(d, "model.safetensors")
        self.where = {}
        if os.path.exists(idx):
            with open(idx) as f:
                wm = json.load(f)["weight_map"]
            files = {fn: SafetensorsFile(os.path.join(d, fn)) for fn in sorted(set(wm.values()))}
            for name, fn in wm.items():
                if name not in files[fn].header:
                    raise ValueError("%s: index maps %s to %s, which lacks it" % (idx, name, fn))
                self.where[name] = files[fn]
        elif os.path.exists(single):
            f = SafetensorsFile(single)
            self.where = {n: f for n in f.names()}
        else:
            raise FileNotFoundError("%s: no model.safetensors or model.safetensors.index.json" % d)

    def __contains__(self, name):
        return name in self.where

    def get(self, name, shape):
        if name not in self.where:
            raise KeyError("tensor %s missing from checkpoint" % name)
        a = self.where[name].get_f64(name)
        if tuple(a.shape) != tuple(shape):
            raise ValueError("tensor %s: shape %s, expected %s" % (name, list(a.shape), list(shape)))
        return a


# ------------------------------------------------------------- maths ---

_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x):
    """Exact GELU: x/2 * (1 + erf(x/sqrt 2)), erf from libm via math.erf."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def layer_norm(x, w, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def softmax(s):
    s = s - s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=-1, keepdims=True)


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


# ------------------------------------------------------------- model ---

class Model:
    def __init__(self, d, cache_limit_bytes=1 << 30, kv_dtype="f32"):
        if kv_dtype not in ("f32", "f16"):
            raise ValueError("kv_dtype: expected f32 or f16, got %r" % kv_dtype)
        self.kv_f16 = kv_dtype == "f16"
        with open(os.path.join(d, "config.json")) as f:
            c = json.load(f)
        self.config = c
        self.D = int(c["hidden_size"])
        self.H = int(c["num_attention_heads"])
        self.L = int(c["num_hidden_layers"])
        self.F = int(c.get("intermediate_size", 4 * self.D))
        self.V = int(c["vocab_size"])
        self.ctx = int(c.get("max_position_embeddings", 2048))
        self.hd = self.D // self.H
        pct = c.get("rotary_pct", c.get("partial_rotary_factor", 1.0))
        self.rot = int(self.hd * pct)
        self.base = float(c.get("rotary_emb_base", c.get("rope_theta", 10000)))
        self.eps = float(c.get("layer_norm_eps", 1e-5))
        self.parallel = bool(c.get("use_parallel_residual", True))
        self.tied = bool(c.get("tie_word_embeddings", False))
        self.attn_bias = bool(c.get("attention_bias", True))
        act = c.get("hidden_act", "gelu")
        if act != "gelu":
            raise ValueError("config.json: hidden_act %r not supported (only \"gelu\")" % act)
        if self.D % self.H or self.rot % 2:
            raise ValueError("config.json: bad head split or odd rotary_ndims")
        self.ckpt = Checkpoint(d)
        n = self.V * self.D * (1 if self.tied else 2) + self.L * (
            4 * self.D * self.D + 2 * self.D * self.F)
        self._cache = {} if n * 8 <= cache_limit_bytes else None

    def _w(self, name, shape):
        if self._cache is not None and name in self._cache:
            return self._cache[name]
        a = self.ckpt.get(name, shape)
        if self._cache is not None:
            self._cache[name] = a
        return a

    def _bias(self, name, shape):
        if self.attn_bias or name in self.ckpt:
            return self._w(name, shape)
        return np.zeros(shape)

    def _attention(self, i, h, attentions=None):
        D, H, hd, r, T = self.D, self.H, self.hd, self.rot, h.shape[0]
        p = "gpt_neox.layers.%d.attention." % i
        qkv = h @ self._w(p + "query_key_value.weight", (3 * D, D)).T
        qkv = qkv + self._bias(p + "query_key_value.bias", (3 * D,))
        qkv = qkv.reshape(T, H, 3, hd)
        q, k, v = qkv[:, :, 0, :], qkv[:, :, 1, :], qkv[:, :, 2, :]
        if r:
            inv_freq = 1.0 / self.base ** (np.arange(0, r, 2, dtype=np.float64) / r)
            freqs = np.outer(np.arange(T, dtype=np.float64), inv_freq)       # [T, r/2]
            emb = np.concatenate([freqs, freqs], axis=-1)[:, None, :]       # [T, 1, r]
            cos, sin = np.cos(emb), np.sin(emb)
            q = np.concatenate([q[..., :r] * cos + rotate_half(q[..., :r]) * sin, q[..., r:]], axis=-1)
            k = np.concatenate([k[..., :r] * cos + rotate_half(k[..., :r]) * sin, k[..., r:]], axis=-1)
        if self.kv_f16:
            k, v = k.astype(np.float16).astype(np.float64), v.astype(np.float16).astype(np.float64)
        s = np.einsum("thd,shd->hts", q, k) / math.sqrt(hd)
        s = np.where(np.tril(np.ones((T, T), dtype=bool))[None], s, -np.inf)
        probs = softmax(s)
        if attentions is not None:
            attentions.append(probs)
        o = np.einsum("hts,shd->thd", probs, v).reshape(T, D)
        o = o @ self._w(p + "dense.weight", (D, D)).T
        return o + self._bias(p + "dense.bias", (D,))

    def _mlp(self, i, h):
        D, F = self.D, self.F
        p = "gpt_neox.layers.%d.mlp." % i
        u = h @ self._w(p + "dense_h_to_4h.weight", (F, D)).T + self._w(p + "dense_h_to_4h.bias", (F,))
        return gelu(u) @ self._w(p + "dense_4h_to_h.weight", (D, F)).T + self._w(p + "dense_4h_to_h.bias", (D,))

    def _ln(self, prefix, x):
        return layer_norm(x, self._w(prefix + ".weight", (self.D,)), self._w(prefix + ".bias", (self.D,)), self.eps)

    def forward(self, ids, last_only=False, hidden_states=None, attentions=None):
        """Logits [T, vocab] for every position (or [1, vocab] with last_only).
        With hidden_states (a list, not with last_only), appends Hugging Face's
        output_hidden_states, n_layer + 1 arrays [T, d_model]: the embeddings,
        the input of every later layer, then the final LayerNorm's output.
        With attentions (a list), appends Hugging Face's output_attentions,
        n_layer arrays [n_head, T, T]: each layer's softmax probabilities,
        row t over keys 0..T-1, zero past t (the causal mask)."""
        if hidden_states is not None and last_only:
            raise ValueError("forward: hidden_states need every position")
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("forward: empty input")
        if ids.min() < 0 or ids.max() >= self.V:
            raise ValueError("forward: token id out of range [0, %d)" % self.V)
        if ids.size > self.ctx:
            raise ValueError("forward: %d tokens exceed the context %d" % (ids.size, self.ctx))
        emb = self._w("gpt_neox.embed_in.weight", (self.V, self.D))
        x = emb[ids]
        for i in range(self.L):
            if hidden_states is not None:
                hidden_states.append(x)
            p = "gpt_neox.layers.%d." % i
            a = self._attention(i, self._ln(p + "input_layernorm", x), attentions)
            if self.parallel:
                x = x + a + self._mlp(i, self._ln(p + "post_attention_layernorm", x))
            else:
                h = x + a
                x = h + self._mlp(i, self._ln(p + "post_attention_layernorm", h))
        if last_only:
            x = x[-1:]
        y = self._ln("gpt_neox.final_layer_norm", x)
        if hidden_states is not None:
            hidden_states.append(y)
        w = emb if self.tied else self._w("embed_out.weight", (self.V, self.D))
        return y @ w.T

    def greedy(self, ids, n):
        """n greedy continuation ids (argmax over all vocab_size logits; ties
        go to the lowest id, as np.argmax returns the first maximum)."""
        seq = [int(t) for t in ids]
        out = []
        for _ in range(n):
            t = int(np.argmax(self.forward(seq, last_only=True)[-1]))
            out.append(t)
            seq.append(t)
        return out


def load_model(d, **kw):
    return Model(d, **kw)


# --------------------------------------------------------------- CLI ---

def main(argv=None):
    ap = argparse.ArgumentParser(description="Reference GPT-NeoX forward pass (numpy float64).")
    ap.add_argument("model_dir")
    ap.add_argument("--ids", required=True, help="comma-separated token ids, e.g. 1,2,3")
    ap.add_argument("--out", help="write logits [T, vocab] (float64) to this .npy file")
    ap.add_argument("--greedy", type=int, metavar="N", help="print N greedy tokens as a JSON array")
    a = ap.parse_args(argv)
    try:
        ids = [int(t) for t in a.ids.replace(" ", "").split(",") if t != ""]
    except ValueError:
        ap.error("--ids: expected comma-separated integers, got %r" % a.ids)
    m = load_model(a.model_dir)
    if a.out:
        np.save(a.out, m.forward(ids))
    if a.greedy is not None:
        print(json.dumps(m.greedy(ids, a.greedy)))
    if not a.out and a.greedy is None:
        last = m.forward(ids, last_only=True)[-1]
        print(json.dumps([int(t) for t in np.argsort(-last, kind="stable")[:5]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
