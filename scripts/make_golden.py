#!/usr/bin/env python3
"""Make a parity golden for any Gemma 4 checkpoint directory with HF transformers.

    pip install -r scripts/requirements-fixtures.txt          # the pinned torch + transformers
    python scripts/make_golden.py --model DIR --prompt "The capital of France is" --out g.safetensors
    python scripts/make_golden.py --model DIR --ids 2,818,5279,529 --decode-steps 32 --out g.safetensors
    python scripts/make_golden.py --model DIR --ids 2,17,42 --dtype fp64 --out g64.safetensors

then check a conversion of the same checkpoint against it:

    gemma-convert parity --model DIR --chunks OUT --golden g.safetensors

The file has the key layout of the CLI contract (spec/cli-contract.md, "Golden file"):

    input_ids        i64 [1, S]     the prompt (with --prompt: the tokenizer's ids, BOS first)
    logits           f32 [1, S, V]  teacher-forced logits at every prompt position
    decode_input_ids i64 [N]        greedy tokens fed back one at a time at positions S..S+N-1
    decode_logits    f32 [N, V]     logits of the cached step that consumed decode_input_ids[i]
    final_hidden     f32 [S, H]     post-final-norm hidden state of the prompt   (unless --no-hidden)
    layer_outputs    f32 [L, S, H]  output of every decoder layer for the prompt (unless --no-hidden)

The model runs in fp32 (default) or fp64 (`--dtype fp64`, stored as f32) with eager attention,
loaded with `from_pretrained` as `Gemma4ForCausalLM` (flat text config) or
`Gemma4ForConditionalGeneration` (release layout, `text_config`). The safetensors metadata records
the generator, the library versions, the dtype, the model class and the checkpoint directory's
name. The output is byte-reproducible (sorted keys, fixed header layout) for the same inputs and
library versions. The versions must be those pinned in scripts/requirements-fixtures.txt (other
versions compute slightly different logits); `--allow-other-versions` overrides that check and
records the versions used.

Memory: the model is held in the chosen dtype (E2B in fp32 needs ~20 GB; use --no-hidden and a
short prompt on small machines).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS = ROOT / "scripts" / "requirements-fixtures.txt"


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in PINS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, ver = line.split("==", 1)
            pins[name.strip()] = ver.strip()
    return pins


def check_versions(allow: bool) -> dict[str, str]:
    import numpy
    import safetensors
    import tokenizers
    import torch
    import transformers

    have = {
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": numpy.__version__,
    }
    pins = pinned_versions()
    wrong = [f"{k} {have[k]} (pinned {pins[k]})" for k in have if k in pins and have[k] != pins[k]]
    if wrong and not allow:
        sys.exit(
            "make_golden.py: library versions differ from scripts/requirements-fixtures.txt: "
            + ", ".join(wrong)
            + "\n  pip install -r scripts/requirements-fixtures.txt, or pass --allow-other-versions"
        )
    return have


def save_sorted(tensors: dict, path: Path, metadata: dict[str, str]) -> None:
    """Write a safetensors file byte-reproducibly (sorted names and metadata keys)."""
    import torch

    names = sorted(tensors)
    header: dict = {"__metadata__": {k: metadata[k] for k in sorted(metadata)}}
    blobs, off = [], 0
    for n in names:
        t = tensors[n].detach().contiguous().cpu()
        dt = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        b = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
        header[n] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)
    tmp.replace(path)


def load_model(model_dir: Path, dtype):
    from transformers import Gemma4ForCausalLM, Gemma4ForConditionalGeneration

    cfg = json.loads((model_dir / "config.json").read_text())
    nested = cfg.get("model_type") == "gemma4" or "text_config" in cfg
    cls = Gemma4ForConditionalGeneration if nested else Gemma4ForCausalLM
    model = cls.from_pretrained(str(model_dir), dtype=dtype, attn_implementation="eager")
    model.eval()
    lm = model.model.language_model if nested else model.model
    return model, lm


def prompt_ids(args, model_dir: Path):
    import torch

    if args.ids:
        ids = [int(x) for x in args.ids.split(",") if x.strip()]
    else:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(model_dir))
        except Exception as e:  # noqa: BLE001 - report any tokenizer failure the same way
            sys.exit(f"make_golden.py: --prompt needs the checkpoint's tokenizer files: {e}")
        ids = tok(args.prompt).input_ids
    if not ids:
        sys.exit("make_golden.py: empty prompt")
    return torch.tensor([ids], dtype=torch.int64)


def run_golden(model, lm, ids, steps: int, hidden: bool) -> dict:
    import torch

    layer_outs: list = []
    final: list = []
    hooks = []
    if hidden:
        hooks = [
            layer.register_forward_hook(lambda _m, _i, out: layer_outs.append(out.detach().clone()))
            for layer in lm.layers
        ]
        hooks.append(lm.norm.register_forward_hook(lambda _m, _i, out: final.append(out.detach().clone())))
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
        for h in hooks:
            h.remove()
        logits = out.logits
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        tok = int(logits[0, -1].argmax())
        dec_ids, dec_logits = [], []
        for _ in range(steps):
            step = model(input_ids=torch.tensor([[tok]]), cache=cache, use_cache=True)
            cache = step.cache if getattr(step, "cache", None) is not None else step.past_key_values
            dec_ids.append(tok)
            dec_logits.append(step.logits[0, -1])
            tok = int(step.logits[0, -1].argmax())
    g = {
        "input_ids": ids.to(torch.int64).contiguous(),
        "logits": logits.float().contiguous(),
        "decode_input_ids": torch.tensor(dec_ids, dtype=torch.int64),
        "decode_logits": torch.stack(dec_logits).float().contiguous(),
    }
    if hidden:
        assert len(layer_outs) == len(lm.layers), len(layer_outs)
        g["final_hidden"] = final[0][0].float().contiguous()
        g["layer_outputs"] = torch.stack([o[0].float() for o in layer_outs]).contiguous()
    return g


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, type=Path, help="Gemma 4 checkpoint directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text (tokenized with the checkpoint's tokenizer)")
    src.add_argument("--ids", help="prompt token ids, comma-separated (BOS first)")
    p.add_argument("--decode-steps", type=int, default=16, help="greedy steps after the prompt")
    p.add_argument("--dtype", choices=["fp32", "fp64"], default="fp32", help="compute dtype")
    p.add_argument("--no-hidden", action="store_true", help="leave out final_hidden and layer_outputs")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--allow-other-versions", action="store_true", help="run with unpinned versions")
    p.add_argument("--out", required=True, type=Path, help="golden .safetensors to write")
    args = p.parse_args()

    versions = check_versions(args.allow_other_versions)
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if not (args.model / "config.json").is_file():
        sys.exit(f"make_golden.py: {args.model}: no config.json (not a checkpoint directory)")
    if args.decode_steps < 0:
        sys.exit("make_golden.py: --decode-steps must be >= 0")
    dtype = torch.float64 if args.dtype == "fp64" else torch.float32
    model, lm = load_model(args.model, dtype)
    ids = prompt_ids(args, args.model)
    vocab = model.config.get_text_config().vocab_size
    if int(ids.max()) >= vocab or int(ids.min()) < 0:
        sys.exit(f"make_golden.py: prompt ids must be in 0..{vocab - 1}")
    g = run_golden(model, lm, ids, args.decode_steps, not args.no_hidden)
    meta = {
        "generator": "scripts/make_golden.py",
        "model": args.model.resolve().name,
        "class": type(model).__name__,
        "dtype": {"fp32": "float32", "fp64": "float64"}[args.dtype],
        "attn_implementation": "eager",
        **versions,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_sorted(g, args.out, meta)
    print(
        f"{args.out}: S={ids.shape[1]} N={len(g['decode_input_ids'])} V={g['logits'].shape[-1]} "
        f"({args.dtype}); decode ids {g['decode_input_ids'].tolist()}"
    )


if __name__ == "__main__":
    main()
