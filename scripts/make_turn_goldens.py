#!/usr/bin/env python3
"""Two-turn goldens for the stateful chunk sets' cross-turn KV reuse (`parity --turns`).

Run by hand (never from CI), with the pinned fixture environment (scripts/requirements-fixtures.txt):

    /work/pyfix/bin/python scripts/make_turn_goldens.py            # all fixture models
    /work/pyfix/bin/python scripts/make_turn_goldens.py tiny-e2b   # one

It reads the fixture models and their goldens written by scripts/make_fixtures.py (and changes
neither) and writes fixtures/goldens/<name>.turns.safetensors. Every turn is in the golden format
of make_fixtures.py, under a prefix:

    <turn>.input_ids         i64 [1, S]   the turn's whole input (history included), BOS first
    <turn>.logits            f32 [1, S, V] teacher-forced logits of every input position
    <turn>.decode_input_ids  i64 [N]      greedy tokens fed back one at a time after the input
    <turn>.decode_logits     f32 [N, V]   logits of the cached step that consumed each of them

`turn1` is the model's golden conversation, copied (its prompt, then its decode tokens; recomputed
here, the greedy tokens must agree and the logits stay within 2e-3 — HF fp32 on another CPU rounds
differently and the random models amplify it; the drift is recorded in the metadata key
`turn1_recomputed_max_abs_diff`). Each `turn2.<case>` is computed by HF **from scratch over the
whole turn-2 sequence** (no cache carried over), so a runtime that reuses its KV across turns must
reproduce it exactly. With H = turn 1's whole token list (prompt + decode ids, P tokens) and U a
fixed random user message of 6 tokens:

    turn2.extend     H + U                  H is a strict prefix: resume at P, nothing recomputed
    turn2.edit_last  H[:P-1] + [t'] + U     the last consumed token differs: rewind by one
    turn2.diverge    H[:S+2] + U            diverges inside turn 1's reply, after the sliding ring
                                            has wrapped: an in-place rewind cannot be exact

followed by 8 greedy decode steps each. The metadata key `turns` lists the turn-2 cases; the
other keys record the generator versions, as in the goldens.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import safetensors
import tokenizers
import torch
import transformers
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402

USER_LEN = 6
DECODE2 = 8
CASES = ("extend", "edit_last", "diverge")


@torch.no_grad()
def conversation(model: torch.nn.Module, ids: list[int], steps: int) -> dict[str, torch.Tensor]:
    """Teacher-forced logits of `ids` from scratch, then `steps` greedy cached decode steps."""
    x = torch.tensor([ids], dtype=torch.int64)
    out = model(input_ids=x, use_cache=True)
    logits = out.logits.float()
    cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    tok = int(logits[0, -1].argmax())
    dec_ids, dec_logits = [], []
    for _ in range(steps):
        step = model(input_ids=torch.tensor([[tok]]), cache=cache, use_cache=True)
        cache = step.cache if getattr(step, "cache", None) is not None else step.past_key_values
        dec_ids.append(tok)
        dec_logits.append(step.logits[0, -1].float())
        tok = int(step.logits[0, -1].argmax())
    return {
        "input_ids": x.contiguous(),
        "logits": logits.contiguous(),
        "decode_input_ids": torch.tensor(dec_ids, dtype=torch.int64),
        "decode_logits": torch.stack(dec_logits).contiguous(),
    }


def make(name: str) -> None:
    spec = mf.SPECS[name]
    model = mf.load_back(name, spec, mf.MODELS / name)
    golden = load_file(str(mf.GOLDENS / f"{name}.safetensors"))
    prompt = golden["input_ids"][0].tolist()
    decoded = golden["decode_input_ids"].tolist()
    s = len(prompt)
    again = conversation(model, prompt, len(decoded))
    assert again["decode_input_ids"].tolist() == decoded, f"{name}: turn 1 decodes differently"
    # HF fp32 on another CPU differs from the golden by rounding (amplified by the random model):
    # recorded, bounded, and turn 1 is the golden itself
    drift = max(
        (again[k].reshape(golden[k].shape) - golden[k]).abs().max().item()
        for k in ("logits", "decode_logits")
    )
    assert drift <= 2e-3, f"{name}: turn 1 recomputed differs from the golden by {drift:.2e}"
    turn1 = {k: golden[k] for k in ("input_ids", "logits", "decode_input_ids", "decode_logits")}

    history = prompt + decoded
    p = len(history)
    v = spec["text"]["vocab_size"]
    gen = torch.Generator().manual_seed(2000 + spec["seed"])
    user = torch.randint(3, v, (USER_LEN,), generator=gen).tolist()
    edited = (history[-1] + 1 - 3) % (v - 3) + 3  # a different id in 3..V-1
    assert edited != history[-1]
    inputs = {
        "extend": history + user,
        "edit_last": history[: p - 1] + [edited] + user,
        "diverge": history[: s + 2] + user,
    }
    tensors = {f"turn1.{k}": t for k, t in turn1.items()}
    for case in CASES:
        c = conversation(model, inputs[case], DECODE2)
        tensors.update({f"turn2.{case}.{k}": t for k, t in c.items()})
    meta = {
        "model": name,
        "seed": str(spec["seed"]),
        "generator": "scripts/make_turn_goldens.py",
        "turns": ",".join(f"turn2.{c}" for c in CASES),
        "turn1_recomputed_max_abs_diff": f"{drift:.3e}",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "tokenizers": tokenizers.__version__,
        "dtype": "float32",
        "attn_implementation": "eager",
    }
    out = mf.GOLDENS / f"{name}.turns.safetensors"
    mf.save_sorted(tensors, out, meta)
    back = load_file(str(out))
    assert all(torch.equal(back[k], tensors[k]) for k in tensors), "round trip"
    print(
        f"[{name}] turn 1: {s} + {len(decoded)} tokens; turn 2: "
        + ", ".join(f"{c} {len(inputs[c])} + {DECODE2}" for c in CASES)
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", default=list(mf.SPECS))
    args = p.parse_args()
    torch.set_num_threads(1)
    for n in args.names:
        if n not in mf.SPECS:
            sys.exit(f"unknown fixture {n}; known: {list(mf.SPECS)}")
        make(n)


if __name__ == "__main__":
    main()
