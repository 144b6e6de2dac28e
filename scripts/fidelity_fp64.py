#!/usr/bin/env python3
"""An fp64 Gemma 4 text forward in numpy, for the fidelity gate in CI (no torch there).

Why a second implementation: the CI gate (`crates/gemma-convert/tests/fidelity_gate.rs`) needs the
fp64 logits of a few thousand positions, which would take tens of MB to commit, and CI has no torch.
This forward is written from the model definition (spec/gemma4-text.md §3–§6) in plain numpy,
shares no code with the Rust exporter, interpreter or reference forward, and is held to HF's own
fp64 forward twice: `scripts/fidelity_reference.py` compares it with the patched torch fp64 run on
every sequence when it writes a reference (`numpy_fp64_vs_torch_max_abs` in the metadata, ~1e-13),
and every run here compares it again with the torch fp64 logits committed for the first sequences
of the reference (`fp64_sample_logits`) and refuses to write anything if they differ by more than
1e-5 (their f32 storage).

    python scripts/fidelity_fp64.py --model fixtures/models/tiny-pal \\
        --reference fixtures/fidelity/tiny-pal-gate.safetensors --out target/ref-full.safetensors

reads the reference's `input_ids` (and everything else in it), computes the fp64 logits of every
position (one teacher-forced forward per sequence, as HF), and writes the reference with
`fp64_logits` (f32) added — the form `gemma-convert fidelity --reference` reads. Needs numpy only
(scripts/requirements-ci.txt); safetensors files are read and written here.

Semantics copied from HF transformers 5.24 (the fp64 run of scripts/fidelity_reference.py): embedding
scales `sqrt(H)`, `sqrt(P)` (buffers created in the load dtype, so exact in fp64), `H^-1/2` and
`2^-1/2` Python floats;
RMSNorm `x·(mean(x²)+ε)^-1/2·w`; attention scale 1.0; RoPE rotate-half with default (sliding) and
proportional (full) inverse frequencies; sliding window of W keys including the current one; KV
sharing from the last KV-owning layer of each type; PLE; `layer_scalar` on the whole stream; final
softcap.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np


def model_key(model_dir: Path) -> str:
    """sha256 of the checkpoint files (same definition as gemma-convert fidelity)."""
    names = ["config.json"]
    if (model_dir / "model.safetensors.index.json").is_file():
        names.append("model.safetensors.index.json")
    names += [p.name for p in model_dir.glob("*.safetensors")]
    h = hashlib.sha256()
    for name in sorted(set(names), key=lambda s: s.encode()):
        data = (model_dir / name).read_bytes()
        h.update(name.encode() + b"\0" + struct.pack("<Q", len(data)))
        h.update(data)
    return h.hexdigest()


_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "BF16": "<u2"}


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor of a safetensors file (bf16 widened to f32) and its metadata."""
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, e in header.items():
        if e["dtype"] not in _DTYPES:
            sys.exit(f"{path}: tensor {name} has dtype {e['dtype']}, not supported here")
        a, b = e["data_offsets"]
        arr = np.frombuffer(data[base + a : base + b], dtype=_DTYPES[e["dtype"]])
        if e["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.reshape(e["shape"])
    return out, meta


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], meta: dict[str, str]) -> None:
    """A safetensors file with sorted names and metadata keys."""
    codes = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<i8"): "I64", np.dtype("<f8"): "F64"}
    header: dict = {"__metadata__": {k: meta[k] for k in sorted(meta)}}
    blobs, off = [], 0
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        t = t.astype(t.dtype.newbyteorder("<"))
        b = t.tobytes()
        header[name] = {"dtype": codes[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_weights(model_dir: Path) -> dict[str, np.ndarray]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        sys.exit(f"{model_dir}: no *.safetensors")
    w: dict[str, np.ndarray] = {}
    for f in files:
        w.update(read_safetensors(f)[0])
    return w


class Gemma4Fp64:
    def __init__(self, model_dir: Path):
        cfg = json.loads((model_dir / "config.json").read_text())
        self.cfg = cfg.get("text_config", cfg)
        raw = load_weights(model_dir)
        prefix = None
        for p in ("model.language_model.", "model."):
            if p + "embed_tokens.weight" in raw:
                prefix = p
                break
        if prefix is None:
            sys.exit(f"{model_dir}: no embed_tokens.weight")
        self.w = {k[len(prefix) :]: v.astype(np.float64) for k, v in raw.items() if k.startswith(prefix)}
        if "lm_head.weight" in raw:
            self.w["lm_head.weight"] = raw["lm_head.weight"].astype(np.float64)
        c = self.cfg
        self.L = int(c["num_hidden_layers"])
        self.H = int(c["hidden_size"])
        self.nh = int(c["num_attention_heads"])
        self.eps = float(c["rms_norm_eps"])
        self.window = int(c["sliding_window"])
        self.types = list(c["layer_types"])
        self.P = int(c.get("hidden_size_per_layer_input") or 0)
        self.softcap = c.get("final_logit_softcapping")
        self.first_shared = self.L - int(c.get("num_kv_shared_layers") or 0)
        self.producer = {}
        for i in range(self.first_shared):
            self.producer[self.types[i]] = i  # the last KV-owning layer of each type
        self.rope = {}
        for t, rp in c["rope_parameters"].items():
            layer = next(i for i in range(self.L) if self.types[i] == t)
            d = self.w[f"layers.{layer}.self_attn.q_norm.weight"].shape[0]
            theta = float(rp["rope_theta"])
            j = np.arange(d // 2, dtype=np.float64)
            inv = theta ** (-2.0 * j / d)
            if rp["rope_type"] == "proportional":
                n_rot = int(float(rp.get("partial_rotary_factor", 1.0)) * d // 2)
                inv[n_rot:] = 0.0
            elif rp["rope_type"] != "default":
                sys.exit(f"rope_type {rp['rope_type']!r} is not implemented here")
            self.rope[t] = inv

    def rms(self, x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
        y = x * (np.mean(x * x, axis=-1, keepdims=True) + self.eps) ** -0.5
        return y if w is None else y * w

    @staticmethod
    def gelu_tanh(x: np.ndarray) -> np.ndarray:
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))

    def rotate(self, x: np.ndarray, t: str, pos: np.ndarray) -> np.ndarray:
        # x: [S, heads, D]
        f = pos[:, None] * self.rope[t][None, :]
        emb = np.concatenate([f, f], axis=-1)
        cos, sin = np.cos(emb)[:, None, :], np.sin(emb)[:, None, :]
        half = x.shape[-1] // 2
        rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos + rot * sin

    def forward(self, ids: np.ndarray) -> np.ndarray:
        """Logits [S, V] of one teacher-forced sequence."""
        w = self.w
        s = len(ids)
        pos = np.arange(s, dtype=np.float64)
        x = w["embed_tokens.weight"][ids] * math.sqrt(self.H)
        ple = None
        if self.P:
            tok = w["embed_tokens_per_layer.weight"][ids] * math.sqrt(self.P)
            proj = (x @ w["per_layer_model_projection.weight"].T) * self.H**-0.5
            proj = self.rms(proj.reshape(s, self.L, self.P), w["per_layer_projection_norm.weight"])
            ple = (proj + tok.reshape(s, self.L, self.P)) * 2.0**-0.5
        q_idx, k_idx = np.arange(s)[:, None], np.arange(s)[None, :]
        masks = {
            "full_attention": k_idx <= q_idx,
            "sliding_attention": (k_idx <= q_idx) & (k_idx > q_idx - self.window),
        }
        shared = {}
        for i in range(self.L):
            p = f"layers.{i}."
            t = self.types[i]
            h = self.rms(x, w[p + "input_layernorm.weight"])
            d = w[p + "self_attn.q_norm.weight"].shape[0]
            q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(s, self.nh, d)
            q = self.rotate(self.rms(q, w[p + "self_attn.q_norm.weight"]), t, pos)
            if i < self.first_shared:
                kv = w[p + "self_attn.k_proj.weight"].shape[0] // d
                k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(s, kv, d)
                v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(s, kv, d)
                k = self.rotate(self.rms(k, w[p + "self_attn.k_norm.weight"]), t, pos)
                v = self.rms(v, None)
                if self.producer.get(t) == i:
                    shared[t] = (k, v)
            else:
                k, v = shared[t]
                kv = k.shape[1]
            rep = self.nh // kv
            kk = np.repeat(k, rep, axis=1)  # query head j reads KV head j // rep
            vv = np.repeat(v, rep, axis=1)
            sc = np.einsum("qhd,khd->hqk", q, kk)
            sc = np.where(masks[t][None], sc, -np.inf)
            sc = sc - sc.max(axis=-1, keepdims=True)
            pr = np.exp(sc)
            pr = pr / pr.sum(axis=-1, keepdims=True)
            o = np.einsum("hqk,khd->qhd", pr, vv).reshape(s, self.nh * d)
            a = o @ w[p + "self_attn.o_proj.weight"].T
            x = x + self.rms(a, w[p + "post_attention_layernorm.weight"])
            m = self.rms(x, w[p + "pre_feedforward_layernorm.weight"])
            g = self.gelu_tanh(m @ w[p + "mlp.gate_proj.weight"].T)
            m = (g * (m @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
            x = x + self.rms(m, w[p + "post_feedforward_layernorm.weight"])
            if ple is not None:
                g = self.gelu_tanh(x @ w[p + "per_layer_input_gate.weight"].T) * ple[:, i, :]
                g = g @ w[p + "per_layer_projection.weight"].T
                x = x + self.rms(g, w[p + "post_per_layer_input_norm.weight"])
            x = x * w[p + "layer_scalar"].reshape(())
        x = self.rms(x, w["norm.weight"])
        head = w.get("lm_head.weight", w["embed_tokens.weight"])
        logits = x @ head.T
        if self.softcap:
            logits = np.tanh(logits / self.softcap) * self.softcap
        return logits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--reference", required=True, type=Path, help="reference with input_ids (and fp64_sample_logits)")
    p.add_argument("--out", required=True, type=Path, help="new file: the reference plus fp64_logits (f32)")
    args = p.parse_args()
    if args.out.exists():
        sys.exit(f"{args.out} exists; not overwriting it")
    ref, meta = read_safetensors(args.reference)
    key = model_key(args.model)
    if meta.get("model_sha256") != key:
        sys.exit(f"{args.reference} was made from another checkpoint than {args.model}")
    model = Gemma4Fp64(args.model)
    ids = ref["input_ids"]
    logits = np.stack([model.forward(seq) for seq in ids])
    sample = ref.get("fp64_sample_logits")
    if sample is None:
        sys.exit(f"{args.reference}: no fp64_sample_logits to check this forward against")
    err = float(np.abs(logits[: sample.shape[0]] - sample.astype(np.float64)).max())
    if not err <= 1e-5:
        sys.exit(f"numpy fp64 forward differs from the committed torch fp64 logits by {err:.3e} (> 1e-5)")
    out = dict(ref)
    out["fp64_logits"] = logits.astype(np.float32)
    meta["fp64_logits_by"] = "scripts/fidelity_fp64.py (numpy fp64)"
    meta["numpy_fp64_vs_sample_max_abs"] = f"{err:.3e}"
    tmp = args.out.with_name(args.out.name + ".partial")
    write_safetensors(tmp, out, meta)
    tmp.replace(args.out)
    print(f"{args.out}: fp64 logits of {ids.shape[0]}×{ids.shape[1]} positions; vs torch fp64 sample: {err:.2e}")


if __name__ == "__main__":
    main()
