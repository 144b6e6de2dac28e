#!/usr/bin/env python3
"""Reference logits for the fp16 fidelity benchmark (`gemma-convert fidelity`).

For N seeded random token sequences of length S, run the checkpoint through HF transformers twice
and cache the logits of every position:

* **fp64**: `from_pretrained(dtype=float64)`, eager attention, with HF's three fp32 islands
  moved to fp64 as well (RMSNorm, which upcasts to fp32; the eager softmax, which runs in fp32; the
  RoPE angles, computed in fp32 from fp32 inverse frequencies — recomputed here in fp64 and checked
  against HF's buffers). This is the reference P of every KL figure.
* **HF fp16**: `from_pretrained(dtype=float16)` exactly as a user would load it (the default
  attention implementation, recorded in the metadata), no patches. On the CPU, torch computes fp16
  ops in fp32 internally and rounds each op's output to fp16 once (matmuls accumulate in fp32,
  elementwise ops upcast, RMSNorm and softmax run in fp32 by HF's own code); this script checks
  that claim on the running torch before using it (`check_cpu_fp16`). It is the same rounding model
  as our CPU interpreter (one fp16 rounding per op output), so the paired comparison measures graph
  structure, not the emulation.

Both are one teacher-forced forward per sequence (batch 1, no cache): position p's logits see
tokens 0..p. Run by hand with the pinned versions (scripts/requirements-fixtures.txt):

    /work/pyfix/bin/python scripts/fidelity_reference.py --model fixtures/models/tiny-pal \
        --sequences 200 --length 48 --seed 0 --out target/fidelity

Output: OUT/<name>-n<N>-s<S>-seed<seed>-<key>.safetensors, `key` = the first 16 hex digits of
sha256(model key ‖ sequences); an existing file with the same key is reused (`--force` recomputes).

    input_ids       i64 [N, S]     BOS (config bos_token_id) then uniform ids in [3, V)
    fp64_logits     f32 [N, S, V]  the fp64 forward, rounded to f32 (|error| ≤ 2^-24 relative)
    hf_fp16_logits  f16 [N, S, V]  HF's fp16 forward (its own fp16 output, stored exactly)

    hf_fp16_kl      f32 [N, S]     HF fp16's figures at every position against the fp64 logits as
    hf_fp16_mean_abs f32 [N, S]    stored (f32): KL(P_fp64 ‖ Q_hf16) in nats, mean |Δlogit| over the
    hf_fp16_top1    i64 [N, S]     vocabulary, argmax agreement (first index on ties) — the formulas
                                   of mil_runtime::parity::Comparator, which `gemma-convert fidelity`
                                   checks against the logits when both are present

`--gate K` writes the CI gate's fixture instead (fixtures/fidelity/, see
crates/gemma-convert/tests/fidelity_gate.rs): `input_ids`, the three `hf_fp16_*` figures and
`fp64_sample_logits f32 [K, S, V]` (the fp64 logits of the first K sequences) — a few hundred KB for
N = 200, S = 48. CI recomputes the fp64 logits of every sequence with the numpy forward of
scripts/fidelity_fp64.py, which checks itself against the sample. Every run of this script also
compares that numpy forward with the torch fp64 logits of all N sequences and records the largest
difference (`numpy_fp64_vs_torch_max_abs`; it refuses to write above 1e-9).

Metadata: `model_sha256` (see `model_key`), `sequences_sha256` (of input_ids as little-endian
i64), seed, sizes, versions, the fp16 attention implementation and the fp64 patches.

`model_key`: sha256 over the checkpoint files that define the weights — `config.json`,
`model.safetensors.index.json` if present and every `*.safetensors`, in byte order of their names —
each fed as name, NUL, size as u64 little-endian, contents. `gemma-convert fidelity` recomputes it
and refuses a reference made from another checkpoint.
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
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import Gemma4ForCausalLM, Gemma4ForConditionalGeneration
from transformers.models.gemma4 import modeling_gemma4 as g4

ROOT = Path(__file__).resolve().parent.parent


def model_key(model_dir: Path) -> str:
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


def model_class(model_dir: Path):
    cfg = json.loads((model_dir / "config.json").read_text())
    archs = cfg.get("architectures") or []
    if "Gemma4ForConditionalGeneration" in archs or "text_config" in cfg:
        return Gemma4ForConditionalGeneration, cfg.get("text_config", cfg)
    return Gemma4ForCausalLM, cfg


def sequences(n: int, length: int, seed: int, vocab: int, bos: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    body = rng.integers(3, vocab, size=(n, length - 1), dtype=np.int64)
    ids = np.concatenate([np.full((n, 1), bos, dtype=np.int64), body], axis=1)
    return torch.from_numpy(ids)


def check_cpu_fp16() -> None:
    """The rounding model claimed in the module doc, checked on this torch build."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(9, 300, generator=gen).half()
    b = torch.randn(300, 70, generator=gen).half()
    x = torch.randn(4096, generator=gen).half()
    y = torch.randn(4096, generator=gen).half()
    checks = {
        "matmul = fp32 accumulation, one rounding": torch.equal(a @ b, (a.float() @ b.float()).half()),
        "mul = one rounding": torch.equal(x * y, (x.float() * y.float()).half()),
        "add = one rounding": torch.equal(x + y, (x.float() + y.float()).half()),
        "tanh = one rounding": torch.equal(torch.tanh(x), torch.tanh(x.float()).half()),
        "gelu_tanh = one rounding": torch.equal(
            torch.nn.functional.gelu(x, approximate="tanh"),
            torch.nn.functional.gelu(x.float(), approximate="tanh").half(),
        ),
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        sys.exit(f"torch CPU fp16 does not follow the one-rounding-per-op model here: {bad}")


class Fp64Patches:
    """Move HF's fp32 islands to fp64 for the duration of the fp64 forward (restored on exit)."""

    def __init__(self, text_cfg: dict):
        self.text_cfg = text_cfg
        self.saved = {}

    def inv_freq64(self, layer_type: str, hf_buffer: torch.Tensor) -> torch.Tensor:
        rp = self.text_cfg["rope_parameters"][layer_type]
        d = 2 * hf_buffer.numel()  # the layer type's head dim (its config spelling varies)
        theta = float(rp["rope_theta"])
        j = torch.arange(0, d // 2, dtype=torch.float64)
        inv = theta ** (-2.0 * j / d)
        if rp["rope_type"] == "proportional":
            n_rot = int(float(rp.get("partial_rotary_factor", 1.0)) * d // 2)
            inv[n_rot:] = 0.0
        elif rp["rope_type"] != "default":
            sys.exit(f"rope_type {rp['rope_type']!r} has no fp64 recomputation here")
        ref = hf_buffer.to(torch.float64)
        if ref.shape != inv.shape or not torch.equal(ref == 0, inv == 0):
            sys.exit(f"{layer_type}: fp64 inverse frequencies disagree with HF's in shape or zeros")
        rel = ((inv - ref).abs() / inv.abs().clamp_min(1e-300)).max().item()
        if rel > 1e-6:
            sys.exit(f"{layer_type}: fp64 inverse frequencies differ from HF's by {rel:.2e} (relative)")
        return inv

    def __enter__(self):
        patches = self

        def rms_forward(mod, hidden_states):
            x = hidden_states
            ms = x.pow(2).mean(-1, keepdim=True) + mod.eps
            out = x * torch.pow(ms, -0.5)
            if mod.with_scale:
                out = out * mod.weight.to(x.dtype)
            return out

        def rope_forward(mod, x, position_ids, layer_type):
            key = (id(mod), layer_type)
            if key not in patches.inv:
                patches.inv[key] = patches.inv_freq64(layer_type, getattr(mod, f"{layer_type}_inv_freq"))
            scaling = getattr(mod, f"{layer_type}_attention_scaling")
            freqs = position_ids[..., None].to(torch.float64) * patches.inv[key].to(x.device)
            emb = torch.cat((freqs, freqs), dim=-1)
            return (emb.cos() * scaling).to(x.dtype), (emb.sin() * scaling).to(x.dtype)

        def eager64(module, query, key, value, attention_mask, dropout=0.0, scaling=None, softcap=None, **kwargs):
            if scaling is None:
                scaling = module.head_dim**-0.5
            k = g4.repeat_kv(key, module.num_key_value_groups)
            v = g4.repeat_kv(value, module.num_key_value_groups)
            w = torch.matmul(query, k.transpose(2, 3)) * scaling
            if softcap is not None:
                w = torch.tanh(w / softcap) * softcap
            if attention_mask is not None:
                w = w + attention_mask
            w = torch.nn.functional.softmax(w, dim=-1)  # in the activation dtype (fp64)
            out = torch.matmul(w, v).transpose(1, 2).contiguous()
            return out, w

        self.inv = {}
        self.saved = {
            "rms": g4.Gemma4RMSNorm.forward,
            "rope": g4.Gemma4TextRotaryEmbedding.forward,
            "eager": g4.eager_attention_forward,
        }
        g4.Gemma4RMSNorm.forward = rms_forward
        g4.Gemma4TextRotaryEmbedding.forward = rope_forward
        g4.eager_attention_forward = eager64
        return self

    def __exit__(self, *exc):
        g4.Gemma4RMSNorm.forward = self.saved["rms"]
        g4.Gemma4TextRotaryEmbedding.forward = self.saved["rope"]
        g4.eager_attention_forward = self.saved["eager"]
        return False


@torch.no_grad()
def forward_all(model, ids: torch.Tensor) -> torch.Tensor:
    rows = []
    for seq in ids:
        out = model(input_ids=seq[None, :], use_cache=False)
        rows.append(out.logits[0])
    return torch.stack(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, type=Path, help="HF checkpoint directory")
    p.add_argument("--sequences", type=int, default=200, help="N (default 200)")
    p.add_argument("--length", type=int, default=48, help="S, tokens per sequence incl. BOS (default 48)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "target" / "fidelity", help="cache directory")
    p.add_argument("--name", help="file name prefix (default: the model directory's name)")
    p.add_argument("--force", action="store_true", help="recompute even if the cache file exists")
    p.add_argument("--gate", type=int, metavar="K", help="write the CI gate fixture with K sample sequences (see above)")
    args = p.parse_args()
    if args.sequences < 1 or args.length < 2:
        sys.exit("--sequences must be >= 1 and --length >= 2")
    model_dir = args.model.resolve()
    if not (model_dir / "config.json").is_file():
        sys.exit(f"{model_dir}: no config.json")
    cls, text_cfg = model_class(model_dir)
    vocab = int(text_cfg["vocab_size"])
    bos = int(text_cfg.get("bos_token_id", 2) or 2)
    torch.set_num_threads(1)

    mkey = model_key(model_dir)
    ids = sequences(args.sequences, args.length, args.seed, vocab, bos)
    ids_bytes = ids.numpy().astype("<i8").tobytes()
    skey = hashlib.sha256(ids_bytes).hexdigest()
    key = hashlib.sha256((mkey + skey).encode()).hexdigest()[:16]
    name = args.name or model_dir.name
    if args.gate is not None and not 1 <= args.gate <= args.sequences:
        sys.exit("--gate K needs 1 <= K <= --sequences")
    tag = "-gate" if args.gate else ""
    out = args.out / f"{name}{tag}-n{args.sequences}-s{args.length}-seed{args.seed}-{key}.safetensors"
    if out.exists() and not args.force:
        print(f"cached: {out}")
        return

    check_cpu_fp16()
    m16 = cls.from_pretrained(str(model_dir), dtype=torch.float16)
    m16.eval()
    attn16 = m16.config.get_text_config()._attn_implementation
    hf16 = forward_all(m16, ids)
    del m16

    with Fp64Patches(text_cfg):
        m64 = cls.from_pretrained(str(model_dir), dtype=torch.float64, attn_implementation="eager")
        m64.eval()
        ref = forward_all(m64, ids)
    # the patches must have changed something (HF's own fp64 run keeps fp32 islands)
    plain = cls.from_pretrained(str(model_dir), dtype=torch.float64, attn_implementation="eager").eval()
    islands = (forward_all(plain, ids[:1]) - ref[:1]).abs().max().item()
    del plain, m64
    if not (0.0 < islands < 1e-2):
        sys.exit(f"fp64 patches changed the first sequence's logits by {islands:.3e}: expected (0, 1e-2)")

    if not torch.isfinite(hf16).all():
        sys.exit("HF fp16 logits are not finite")
    # the independent numpy fp64 forward of the CI gate, held to torch's on every sequence
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fidelity_fp64 import Gemma4Fp64

    npf = Gemma4Fp64(model_dir)
    np_err = max(float(np.abs(npf.forward(seq.numpy()) - ref[i].numpy()).max()) for i, seq in enumerate(ids))
    if not np_err <= 1e-9:
        sys.exit(f"numpy fp64 forward differs from torch fp64 by {np_err:.3e} (> 1e-9)")
    # HF fp16's figures against the fp64 logits as stored (f32), Comparator's formulas
    ref32 = ref.to(torch.float32).double()
    lp = torch.log_softmax(ref32, -1)
    kl = (lp.exp() * (lp - torch.log_softmax(hf16.double(), -1))).sum(-1).clamp_min(0.0)
    mean_abs = (hf16.double() - ref32).abs().mean(-1)
    top1 = (hf16.argmax(-1) == ref32.argmax(-1)).to(torch.int64)
    meta = {
        "generator": "scripts/fidelity_reference.py",
        "numpy_fp64_vs_torch_max_abs": f"{np_err:.3e}",
        "model": name,
        "model_sha256": mkey,
        "sequences_sha256": skey,
        "key": key,
        "seed": str(args.seed),
        "sequences": str(args.sequences),
        "length": str(args.length),
        "vocab": str(vocab),
        "sequence_recipe": "numpy default_rng(seed).integers(3, vocab, (N, S-1)) after BOS",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "class": cls.__name__,
        "fp64": "from_pretrained(dtype=float64), eager; RMSNorm, softmax and RoPE angles in fp64 (patched)",
        "fp64_vs_unpatched_fp64_max_abs": f"{islands:.3e}",
        "hf_fp16": "from_pretrained(dtype=float16), default attention, CPU (fp32 compute, one fp16 rounding per op)",
        "hf_fp16_attn_implementation": str(attn16),
        "forward": "one teacher-forced forward per sequence, batch 1, use_cache=False",
    }
    tensors = {
        "input_ids": ids.contiguous(),
        "hf_fp16_kl": kl.to(torch.float32).contiguous(),
        "hf_fp16_mean_abs": mean_abs.to(torch.float32).contiguous(),
        "hf_fp16_top1": top1.contiguous(),
    }
    if args.gate:
        tensors["fp64_sample_logits"] = ref[: args.gate].to(torch.float32).contiguous()
        meta["gate_sample_sequences"] = str(args.gate)
    else:
        tensors["fp64_logits"] = ref.to(torch.float32).contiguous()
        tensors["hf_fp16_logits"] = hf16.to(torch.float16).contiguous()
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    save_file(tensors, str(tmp), metadata=meta)
    back = load_file(str(tmp))
    assert torch.equal(back["input_ids"], ids)
    tmp.replace(out)
    print(
        f"{out}: N={args.sequences} S={args.length} V={vocab}; HF fp16 ({attn16}) vs fp64: "
        f"mean KL {kl.mean().item():.5f}, mean |Δlogit| {mean_abs.mean().item():.4f}, "
        f"top-1 {top1.double().mean().item() * 100:.1f}%; "
        f"fp64 patches moved logits by {islands:.1e}"
        + f"; numpy fp64 vs torch fp64 {np_err:.1e}"
    )


if __name__ == "__main__":
    main()
