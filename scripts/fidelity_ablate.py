#!/usr/bin/env python3
"""Where does the fp16 error come from? A rounding ablation of our graph against HF fp16 (numpy only).

An emulation, not the benchmark: the fp64 forward of scripts/fidelity_fp64.py with an fp16 rounding
inserted after every op where a graph rounds (one rounding per op output, the CPU interpreter's and
torch's model), each rounding tagged with an op family. Two graphs are emulated:

* `ours`: the emitted swa4 decode graph with the default numerics (RMSNorm as one rounding with the
  gain folded, `layer_scalar` folded inside chunks with the folded constants — gains / c, ε / c²,
  PLE gate · c — stored in fp16 and one restoring multiply where a chunk hands the stream on, RoPE
  elementwise, scores / mask / decomposed softmax / context each rounded, softcap as three ops);
* `hf`: HF transformers' fp16 forward on the CPU (fp16 embedding scales, RMSNorm in fp32 rounded
  once, `sdpa` rounded once, `x *= layer_scalar` rounded).

Configurations (`--configs`, comma-separated): `hf`, `ours`; `only:F[+G…]` (ours with only the
roundings of families F, G rounded, everything else exact: F's share; whole-graph KLs are chaotic
on a tiny random model, one flipped rounding moves a sequence's KL by 2×, while these are small,
nearly additive and tight); `hf-only:F[+G…]` (the same for the HF graph); `-F[+G…]` (ours with F
exact, everything else rounded); `sdpa-once` (ours with attention rounded once, as HF's `sdpa`);
`rope-once` / `rope-once-only:F` (ours with RoPE as one rounding, the `rope=matmul` form).
Figures: mean over sequences of the per-sequence mean KL(P_fp64 ‖ Q) over positions, and the
paired ratio of means against the `hf` emulation (when run first) and against HF's own fp16 KL
stored in the reference (`hf_fp16_kl`), which checks the `hf` emulation. A reference without
`fp64_logits` (a CI gate fixture) gets them from the numpy fp64 forward. docs/FIDELITY.md has the
table this made.

    python scripts/fidelity_ablate.py --model fixtures/models/tiny-pal \\
        --reference fixtures/fidelity/tiny-pal-gate-n128-s32-seed1-a78a609ebfed8196.safetensors \\
        --sequences 64 --chunk-ends 4,9,14 --configs hf,ours,only:scores,hf-only:context

`--chunk-ends`: the layers after which a chunk hands the stream on (swa4: tiny-pal 4,9,14;
tiny-e2b 2,4,6), where the folded `layer_scalar` is restored.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity_fp64 import Gemma4Fp64, model_key, read_safetensors  # noqa: E402

FAMILIES = [
    "embed",  # host embedding rows (and their scales)
    "ple",  # per-layer input combine and the PLE branch's gating multiply
    "norm",  # every RMSNorm output
    "fold",  # fp16 storage of the folded constants (gains / c, PLE gate · c)
    "proj",  # projections (q, k, v, o, gate, up, down, PLE gate / projection)
    "rope",  # cos / sin tables and the three RoPE ops
    "scores",  # q·kᵀ
    "softmax",  # sub, exp, sum, div of the decomposed softmax
    "context",  # probs · V
    "mlp",  # gelu and gate·up
    "resid",  # residual adds
    "head",  # final norm, LM head, softcap ops
    "lscalar",  # hf only: x *= layer_scalar
    "restore",  # ours: the multiply by c where a chunk hands the stream on
]


def f16(x):
    return np.asarray(x, dtype=np.float64).astype(np.float16).astype(np.float64)


class Emulated(Gemma4Fp64):
    def __init__(self, model_dir: Path, graph: str, exact: set[str], chunk_ends: set[int], sdpa_once=False):
        super().__init__(model_dir)
        self.graph = graph
        self.exact = exact
        self.chunk_ends = chunk_ends
        self.sdpa_once = sdpa_once
        self.rope_once = False

    def r(self, x, fam):
        return x if fam in self.exact else f16(x)

    def norm(self, x, w, eps=None, fam="norm"):
        eps = self.eps if eps is None else eps
        y = x * (np.mean(x * x, axis=-1, keepdims=True) + eps) ** -0.5
        if w is not None:
            y = y * w
        return self.r(y, fam)

    def rot(self, x, cos, sin):
        half = x.shape[-1] // 2
        rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        if self.rope_once:  # rope=matmul: x @ (I·cos + J·sin), one rounding
            return self.r(x * cos + rot * sin, "rope")
        return self.r(self.r(x * cos, "rope") + self.r(rot * sin, "rope"), "rope")

    def forward(self, ids):
        w, s, ours = self.w, len(ids), self.graph == "ours"
        r = self.r
        pos = np.arange(s, dtype=np.float64)
        if ours:
            x = r(w["embed_tokens.weight"][ids] * math.sqrt(self.H), "embed")
        else:  # HF: fp16 weight × fp16 buffer sqrt(H)
            x = r(w["embed_tokens.weight"][ids] * f16(math.sqrt(self.H)), "embed")
        ple = None
        if self.P:
            sp = math.sqrt(self.P) if ours else f16(math.sqrt(self.P))
            tok = r(w["embed_tokens_per_layer.weight"][ids] * sp, "embed")
            proj = r(x @ w["per_layer_model_projection.weight"].T, "proj")
            proj = r(proj * self.H**-0.5, "ple")
            proj = self.norm(proj.reshape(s, self.L, self.P), w["per_layer_projection_norm.weight"])
            ple = r(r(proj + tok.reshape(s, self.L, self.P), "ple") * 2.0**-0.5, "ple")
        q_idx, k_idx = np.arange(s)[:, None], np.arange(s)[None, :]
        masks = {
            "full_attention": k_idx <= q_idx,
            "sliding_attention": (k_idx <= q_idx) & (k_idx > q_idx - self.window),
        }
        tables = {}
        for t, inv in self.rope.items():
            f = pos[:, None] * inv[None, :]
            emb = np.concatenate([f, f], axis=-1)
            tables[t] = (r(np.cos(emb), "rope")[:, None, :], r(np.sin(emb), "rope")[:, None, :])
        shared = {}
        c = 1.0  # ours: the stream is carried as x / c
        for i in range(self.L):
            p = f"layers.{i}."
            t = self.types[i]
            cos, sin = tables[t]
            fold = (lambda v: r(v, "fold")) if ours else (lambda v: v)
            eps_s = self.eps / (c * c)
            h = self.norm(x, w[p + "input_layernorm.weight"], eps_s)
            d = w[p + "self_attn.q_norm.weight"].shape[0]
            q = r(h @ w[p + "self_attn.q_proj.weight"].T, "proj").reshape(s, self.nh, d)
            q = self.rot(self.norm(q, w[p + "self_attn.q_norm.weight"]), cos, sin)
            if i < self.first_shared:
                kv = w[p + "self_attn.k_proj.weight"].shape[0] // d
                k = r(h @ w[p + "self_attn.k_proj.weight"].T, "proj").reshape(s, kv, d)
                v = r(h @ w[p + "self_attn.v_proj.weight"].T, "proj").reshape(s, kv, d)
                k = self.rot(self.norm(k, w[p + "self_attn.k_norm.weight"]), cos, sin)
                v = self.norm(v, None)
                if self.producer.get(t) == i:
                    shared[t] = (k, v)
            else:
                k, v = shared[t]
                kv = k.shape[1]
            rep = self.nh // kv
            kk = np.repeat(k, rep, axis=1)
            vv = np.repeat(v, rep, axis=1)
            sc = np.einsum("qhd,khd->hqk", q, kk)
            once = not ours or self.sdpa_once
            if not once:
                sc = r(sc, "scores")
            sc = np.where(masks[t][None], sc, -np.inf)
            sc = sc - sc.max(axis=-1, keepdims=True)
            if not once:
                sc = r(sc, "softmax")
            pr = np.exp(sc)
            if not once:
                pr = r(pr, "softmax")
            sm = pr.sum(axis=-1, keepdims=True)
            if not once:
                sm = r(sm, "softmax")
            pr = pr / sm
            if not once:
                pr = r(pr, "softmax")
            o = np.einsum("hqk,khd->qhd", pr, vv).reshape(s, self.nh * d)
            o = r(o, "context")
            a = r(o @ w[p + "self_attn.o_proj.weight"].T, "proj")
            x = r(x + self.norm(a, fold(w[p + "post_attention_layernorm.weight"] / c)), "resid")
            m = self.norm(x, w[p + "pre_feedforward_layernorm.weight"], eps_s)
            g = r(self.gelu_tanh(r(m @ w[p + "mlp.gate_proj.weight"].T, "proj")), "mlp")
            u = r(m @ w[p + "mlp.up_proj.weight"].T, "proj")
            m = r(r(g * u, "mlp") @ w[p + "mlp.down_proj.weight"].T, "proj")
            x = r(x + self.norm(m, fold(w[p + "post_feedforward_layernorm.weight"] / c)), "resid")
            if ple is not None:
                g = r(x @ fold(w[p + "per_layer_input_gate.weight"] * c).T, "proj")
                g = r(r(self.gelu_tanh(g), "mlp") * ple[:, i, :], "ple")
                g = r(g @ w[p + "per_layer_projection.weight"].T, "proj")
                x = r(x + self.norm(g, fold(w[p + "post_per_layer_input_norm.weight"] / c)), "resid")
            ls = float(w[p + "layer_scalar"].reshape(()))
            if ours:
                folded = c * ls
                if i in self.chunk_ends:
                    x, c = r(x * f16(folded), "restore"), 1.0
                else:
                    k2 = round(math.log2(folded))
                    x, c = x * 2.0**k2, folded / 2.0**k2
            else:
                x = r(x * f16(ls), "lscalar")
        x = self.norm(x, w["norm.weight"], self.eps / (c * c), fam="head")
        head = w.get("lm_head.weight", w["embed_tokens.weight"])
        logits = r(x @ head.T, "head")
        if self.softcap:
            cap = self.softcap
            logits = r(r(np.tanh(r(logits * (1.0 / cap) if ours else logits / cap, "head")), "head") * cap, "head")
        return logits


def kl_rows(p_logits, q_logits):
    """KL(P ‖ Q) per position."""
    lp = p_logits - p_logits.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    lq = q_logits - q_logits.max(-1, keepdims=True)
    lq = lq - np.log(np.exp(lq).sum(-1, keepdims=True))
    return (np.exp(lp) * (lp - lq)).sum(-1)


def ratio(a, b):
    """Ratio of means with a delta-method 95 % interval (paired)."""
    n = len(a)
    ma, mb = a.mean(), b.mean()
    rr = ma / mb
    d = (a - rr * b) / mb
    half = 1.96 * d.std(ddof=1) / math.sqrt(n)
    return rr, rr - half, rr + half


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--reference", required=True, type=Path)
    ap.add_argument("--sequences", type=int, default=0, help="first K sequences (default all)")
    ap.add_argument("--chunk-ends", default="", help="layers after which a chunk hands the stream on")
    ap.add_argument(
        "--configs",
        default="hf,ours,hf-only:context,hf-only:resid+lscalar,"
        + ",".join("only:" + f for f in FAMILIES if f != "lscalar"),
    )
    args = ap.parse_args()
    ref, meta = read_safetensors(args.reference)
    if meta.get("model_sha256") != model_key(args.model):
        sys.exit(f"{args.reference} was made from another checkpoint than {args.model}")
    ids = ref["input_ids"]
    n = args.sequences or ids.shape[0]
    ids = ids[:n]
    if "fp64_logits" in ref:
        fp64 = ref["fp64_logits"][:n].astype(np.float64)
    else:  # a CI gate fixture: the numpy fp64 forward
        exact = Gemma4Fp64(args.model)
        fp64 = np.stack([exact.forward(seq) for seq in ids])
    hf_real = ref["hf_fp16_kl"][:n].astype(np.float64).mean(-1)
    ends = {int(v) for v in args.chunk_ends.split(",") if v}
    per = {}
    for cfg in args.configs.split(","):
        if cfg == "hf":
            m = Emulated(args.model, "hf", set(), ends)
        elif cfg == "ours":
            m = Emulated(args.model, "ours", set(), ends)
        elif cfg == "sdpa-once":
            m = Emulated(args.model, "ours", set(), ends, sdpa_once=True)
        elif cfg.startswith("-"):
            m = Emulated(args.model, "ours", set(cfg[1:].split("+")), ends)
        elif cfg.startswith("hf-only:"):
            m = Emulated(args.model, "hf", set(FAMILIES) - set(cfg[8:].split("+")), ends)
        elif cfg.startswith("only:"):
            m = Emulated(args.model, "ours", set(FAMILIES) - set(cfg[5:].split("+")), ends)
        elif cfg.startswith("rope-once"):
            m = Emulated(args.model, "ours", set(), ends)
            if cfg.startswith("rope-once-only:"):
                m.exact = set(FAMILIES) - set(cfg[15:].split("+"))
            m.rope_once = True
        else:
            sys.exit(f"unknown config {cfg}")
        kl = np.array([kl_rows(fp64[j], m.forward(ids[j])).mean() for j in range(n)])
        per[cfg] = kl
        line = f"{cfg:>16}  mean KL {kl.mean():.5f}"
        if "hf" in per:
            line += "  vs hf emu ×{:.3f} [{:.3f}, {:.3f}]".format(*ratio(kl, per["hf"]))
        line += "  vs HF real ×{:.3f} [{:.3f}, {:.3f}]".format(*ratio(kl, hf_real))
        print(line, flush=True)


if __name__ == "__main__":
    main()
