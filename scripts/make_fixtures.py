#!/usr/bin/env python3
"""Build the tiny random-weight Gemma 4 fixtures and their HF-transformers goldens.

Run by hand (never from CI):

    /work/pyenv/bin/python scripts/make_fixtures.py            # all models
    /work/pyenv/bin/python scripts/make_fixtures.py tiny-e2b   # one model

Exact versions used are pinned in scripts/requirements-fixtures.txt.

What it writes (relative to the repository root):

* fixtures/models/<name>/          config.json + safetensors (+ tokenizer files for some models)
* fixtures/goldens/<name>.safetensors
    input_ids        i64 [1, S]   prompt, BOS (=2) first
    logits           f32 [1, S, V] teacher-forced prefill logits
    decode_input_ids i64 [N]      greedy tokens fed back one at a time at positions S..S+N-1
    decode_logits    f32 [N, V]   logits of the cached step that consumed decode_input_ids[i]
    final_hidden     f32 [S, H]   post-final-norm hidden state of the prompt
    layer_outputs    f32 [L, S, H] output of every decoder layer for the prompt
    rope_inv_freq.<layer type>  f32 [D/2]  HF's RoPE inverse frequencies (extra key)
  The safetensors metadata records the generator versions, the seed and the model name.

Weights: every value is bf16-representable (so bf16 copies are lossless); norm weights and
layer_scalar ~U(0.5, 1.5) (final norm x3.5), linears N(0, 1/fan_in), embedding std 0.3, PLE table
std 1. The goldens come from HF transformers in fp32 with eager attention, computed on the model
reloaded from disk with `from_pretrained`.

The seed of each model is the first one (from a fixed start) whose greedy decode does not collapse
to a repeated token (at least MIN_DISTINCT distinct tokens among the decode steps, no token
repeated more than MAX_RUN times in a row) and whose HF fp32 logits stay within MAX_FP32_DRIFT of
an fp64 run of the same weights (so fp32 ports can be held to a 2e-3 tolerance).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import safetensors
import tokenizers
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import (
    Gemma4Config,
    Gemma4ForCausalLM,
    Gemma4ForConditionalGeneration,
    Gemma4TextConfig,
)

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "fixtures" / "models"
GOLDENS = ROOT / "fixtures" / "goldens"
MIN_DISTINCT = 10
MAX_RUN = 2
MAX_FP32_DRIFT = 4e-4
SEED_START = 29
SEED_TRIES = 200
BOS, EOS, PAD = 2, 1, 0
LINEAR_SUFFIXES = (
    "_proj.weight",
    "per_layer_input_gate.weight",
    "per_layer_projection.weight",
    "per_layer_model_projection.weight",
)


def sliding_full(pattern_sliding: int, repeats: int) -> list[str]:
    return (["sliding_attention"] * pattern_sliding + ["full_attention"]) * repeats


def rope_params() -> dict:
    return {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {
            "rope_type": "proportional",
            "partial_rotary_factor": 0.25,
            "rope_theta": 1000000.0,
        },
    }


# name -> text config kwargs, prompt length S, decode steps N, layout
SPECS: dict[str, dict] = {
    "tiny-e2b": dict(
        text=dict(
            vocab_size=512,
            vocab_size_per_layer_input=512,
            hidden_size=64,
            intermediate_size=32,
            num_hidden_layers=10,
            num_attention_heads=3,
            num_key_value_heads=1,
            head_dim=16,
            global_head_dim=32,
            layer_types=sliding_full(4, 2),
            sliding_window=8,
            num_kv_shared_layers=5,
            use_double_wide_mlp=True,
            hidden_size_per_layer_input=8,
        ),
        prompt_len=12,
        decode_steps=16,
        layout="causal",
        save_dtype=torch.float32,
        tokenizer=True,
        seed=45,
    ),
    "tiny-e2b-release": dict(
        text=dict(
            vocab_size=512,
            vocab_size_per_layer_input=512,
            hidden_size=64,
            intermediate_size=32,
            num_hidden_layers=10,
            num_attention_heads=3,
            num_key_value_heads=1,
            head_dim=16,
            global_head_dim=32,
            layer_types=sliding_full(4, 2),
            sliding_window=8,
            num_kv_shared_layers=5,
            use_double_wide_mlp=True,
            hidden_size_per_layer_input=8,
        ),
        prompt_len=12,
        decode_steps=16,
        layout="release",
        save_dtype=torch.bfloat16,
        tokenizer=False,
        seed=45,
    ),
    "tiny-gqa": dict(
        text=dict(
            vocab_size=512,
            vocab_size_per_layer_input=512,
            hidden_size=64,
            intermediate_size=48,
            num_hidden_layers=12,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            global_head_dim=32,
            layer_types=sliding_full(5, 2),
            sliding_window=8,
            num_kv_shared_layers=4,
            use_double_wide_mlp=False,
            hidden_size_per_layer_input=8,
        ),
        prompt_len=12,
        decode_steps=16,
        layout="causal",
        save_dtype=torch.float32,
        shard_size="300KB",
        tokenizer=False,
        seed=48,
    ),
    "tiny-pal": dict(
        text=dict(
            vocab_size=512,
            vocab_size_per_layer_input=512,
            hidden_size=128,
            intermediate_size=32,
            num_hidden_layers=20,
            num_attention_heads=3,
            num_key_value_heads=1,
            head_dim=32,
            global_head_dim=64,
            layer_types=sliding_full(4, 4),
            sliding_window=16,
            num_kv_shared_layers=10,
            use_double_wide_mlp=True,
            hidden_size_per_layer_input=32,
        ),
        prompt_len=20,
        decode_steps=16,
        layout="causal",
        save_dtype=torch.bfloat16,
        tokenizer=True,
        palettizable=True,
        # 20 layers amplify rounding more than 10: no seed in 200 stays under 4e-4
        max_fp32_drift=8e-4,
        seed=188,
    ),
}

COMMON_TEXT = dict(
    rope_parameters=rope_params(),
    final_logit_softcapping=30.0,
    rms_norm_eps=1e-6,
    hidden_activation="gelu_pytorch_tanh",
    tie_word_embeddings=True,
    attention_k_eq_v=False,
    attention_bias=False,
    max_position_embeddings=4096,
    pad_token_id=PAD,
    bos_token_id=BOS,
    eos_token_id=EOS,
)


def save_sorted(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write a safetensors file byte-reproducibly (sorted names and metadata keys).

    safetensors' own writer orders `__metadata__` through a hash map, so two runs differ.
    """
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
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def bf16_exact(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).to(torch.float32)


def fill_weights(model: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter/buffer of the state dict with the seeded recipe."""
    gen = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    with torch.no_grad():
        for name in sorted(sd.keys()):
            t = sd[name]
            if name == "lm_head.weight":
                continue  # tied to embed_tokens
            if name.endswith("norm.weight") or name.endswith("layer_scalar"):
                v = torch.rand(t.shape, generator=gen) + 0.5
                if name.endswith("language_model.norm.weight") or name == "model.norm.weight":
                    v = v * 3.5
            elif name.endswith("embed_tokens_per_layer.weight"):
                v = torch.randn(t.shape, generator=gen) * 1.0
            elif name.endswith("embed_tokens.weight"):
                v = torch.randn(t.shape, generator=gen) * 0.3
            elif name.endswith(LINEAR_SUFFIXES):
                fan_in = t.shape[1]
                v = torch.randn(t.shape, generator=gen) / (fan_in**0.5)
            else:
                raise SystemExit(f"no init rule for {name} {tuple(t.shape)}")
            t.copy_(bf16_exact(v))
    model.tie_weights()


def text_config(spec: dict) -> Gemma4TextConfig:
    kw = dict(COMMON_TEXT)
    kw.update(spec["text"])
    return Gemma4TextConfig(**kw)


def build_model(spec: dict, seed: int) -> torch.nn.Module:
    tc = text_config(spec)
    if spec["layout"] == "release":
        cfg = Gemma4Config(text_config=tc, vision_config=None, audio_config=None, tie_word_embeddings=True)
        model = Gemma4ForConditionalGeneration(cfg)
    else:
        model = Gemma4ForCausalLM(tc)
    model.eval()
    fill_weights(model, seed)
    return model


def text_layers(model: torch.nn.Module):
    if isinstance(model, Gemma4ForConditionalGeneration):
        return model.model.language_model
    return model.model


def prompt_ids(spec: dict, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1000 + seed)
    v = spec["text"]["vocab_size"]
    body = torch.randint(3, v, (spec["prompt_len"] - 1,), generator=gen)
    return torch.cat([torch.tensor([BOS]), body]).unsqueeze(0).to(torch.int64)


@torch.no_grad()
def run_golden(model: torch.nn.Module, spec: dict, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    lm = text_layers(model)
    layer_outs: list[torch.Tensor] = []
    final: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda _m, _i, out: layer_outs.append(out.detach().clone())) for layer in lm.layers]
    hooks.append(lm.norm.register_forward_hook(lambda _m, _i, out: final.append(out.detach().clone())))
    out = model(input_ids=ids, use_cache=True)
    for h in hooks:
        h.remove()
    L = len(lm.layers)
    assert len(layer_outs) == L, len(layer_outs)
    assert layer_outs[0].shape[1] == ids.shape[1]
    logits = out.logits.float()
    cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    tok = int(logits[0, -1].argmax())
    dec_ids, dec_logits = [], []
    for _ in range(spec["decode_steps"]):
        step = model(input_ids=torch.tensor([[tok]]), cache=cache, use_cache=True)
        cache = step.cache if getattr(step, "cache", None) is not None else step.past_key_values
        dec_ids.append(tok)
        dec_logits.append(step.logits[0, -1].float())
        tok = int(step.logits[0, -1].argmax())
    return {
        "input_ids": ids.to(torch.int64).contiguous(),
        "logits": logits.contiguous(),
        "decode_input_ids": torch.tensor(dec_ids, dtype=torch.int64),
        "decode_logits": torch.stack(dec_logits).contiguous(),
        "final_hidden": final[0][0].float().contiguous(),
        "layer_outputs": torch.stack([o[0].float() for o in layer_outs]).contiguous(),
    }


def pick_seed(name: str, spec: dict, rescan: bool) -> int:
    """First seed whose greedy decode is varied and whose HF fp32 run stays close to fp64.

    Random tiny Gemma 4 models are close to chaotic (rounding error grows per layer); a seed whose
    own fp32-vs-fp64 drift is large would make any fp32 port fail a 2e-3 tolerance through no
    fault of its own, so such seeds are skipped.
    """
    seeds = range(SEED_START, SEED_START + SEED_TRIES) if rescan else [spec["seed"]]
    for seed in seeds:
        model = build_model(spec, seed)
        model.set_attn_implementation("eager")
        ids = prompt_ids(spec, seed)
        g = run_golden(model, spec, ids)
        toks = g["decode_input_ids"].tolist()
        distinct = len(set(toks))
        run, longest = 1, 1
        for a, b in zip(toks, toks[1:]):
            run = run + 1 if a == b else 1
            longest = max(longest, run)
        if distinct < MIN_DISTINCT or longest > MAX_RUN:
            print(f"[{name}] seed {seed} rejected ({distinct} distinct, longest run {longest})")
            continue
        g64 = run_golden(model.double(), spec, ids)
        drift = max(
            (g64["logits"] - g["logits"]).abs().max().item(),
            (g64["decode_logits"] - g["decode_logits"]).abs().max().item(),
        )
        same_path = g64["decode_input_ids"].tolist() == toks
        if drift > spec.get("max_fp32_drift", MAX_FP32_DRIFT) or not same_path:
            print(f"[{name}] seed {seed} rejected (fp32 vs fp64 drift {drift:.2e}, same greedy path {same_path})")
            continue
        print(f"[{name}] seed {seed}: {distinct} distinct decode tokens of {spec['decode_steps']}, fp32 drift {drift:.2e}")
        return seed
    if not rescan:
        raise SystemExit(f"{name}: pinned seed {spec['seed']} fails the criteria; run with --rescan")
    raise SystemExit(f"{name}: no seed in {SEED_TRIES} tries gives a varied, numerically tame decode")


def check_palettizable(model: torch.nn.Module) -> None:
    for name, t in model.state_dict().items():
        if name.endswith(LINEAR_SUFFIXES) or name.endswith("embed_tokens.weight"):
            if name == "lm_head.weight":
                continue
            assert t.numel() > 2048, f"{name} has only {t.numel()} elements"
            assert t.shape[0] % 32 == 0, f"{name} output dim {t.shape[0]} not divisible by 32"


def word_list(n: int) -> list[str]:
    base = (
        "the of and to in is was it for on with as at by from this that be are or an not have"
        " one all but had we his her they she he you can more when there up out if about so"
        " what which their time some would like into them these two has make then could"
        " other do see him first over been now way people my me water long day did only get"
        " number sound no most find made may part cat dog sun moon tree river stone light"
        " house road city sea rain wind fire snow bird fish green blue red white black"
    ).split()
    words: list[str] = []
    for w in base:
        if w not in words:
            words.append(w)
    i = 0
    while len(words) < n:
        words.append(f"w{i}")
        i += 1
    return words[:n]


def write_tokenizer(out: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, decoders

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for w in word_list(vocab_size - len(specials)):
        vocab[w] = len(vocab)
    assert len(vocab) == vocab_size
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", BOS)]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.add_special_tokens(specials)
    tok.save(str(out / "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": 4096,
        "padding_side": "left",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def releaseify(out: Path, model: torch.nn.Module, spec: dict) -> None:
    """Make the saved ConditionalGeneration checkpoint look like Google's release files."""
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    tc = cfg["text_config"]
    tc.pop("per_layer_config", None)
    tc["head_dim"] = spec["text"]["head_dim"]
    tc["global_head_dim"] = spec["text"]["global_head_dim"]
    tc["num_global_key_value_heads"] = None
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    # add the unused k_proj / v_proj / k_norm of the KV-shared layers, as the release ships them
    st_path = out / "model.safetensors"
    sd = load_file(str(st_path))
    t = spec["text"]
    first_shared = t["num_hidden_layers"] - t["num_kv_shared_layers"]
    gen = torch.Generator().manual_seed(4242)
    for i in range(first_shared, t["num_hidden_layers"]):
        full = t["layer_types"][i] == "full_attention"
        d = t["global_head_dim"] if full else t["head_dim"]
        kv = t["num_key_value_heads"]
        pre = f"model.language_model.layers.{i}.self_attn."
        for k in ("k_proj", "v_proj"):
            key = pre + k + ".weight"
            assert key not in sd, key
            sd[key] = (torch.randn(kv * d, t["hidden_size"], generator=gen) * 0.1).to(torch.bfloat16)
        sd[pre + "k_norm.weight"] = (torch.rand(d, generator=gen) + 0.5).to(torch.bfloat16)
    save_file({k: v.contiguous() for k, v in sorted(sd.items())}, str(st_path), metadata={"format": "pt"})


def load_back(name: str, spec: dict, out: Path) -> torch.nn.Module:
    cls = Gemma4ForConditionalGeneration if spec["layout"] == "release" else Gemma4ForCausalLM
    model, info = cls.from_pretrained(
        str(out), dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    model.eval()
    assert not info["missing_keys"], f"{name}: missing keys on reload: {info['missing_keys']}"
    bad = [k for k in info["unexpected_keys"] if not any(s in k for s in ("k_proj", "v_proj", "k_norm"))]
    assert not bad, f"{name}: unexpected keys on reload: {bad}"
    return model


def make(name: str, rescan: bool) -> None:
    spec = SPECS[name]
    seed = pick_seed(name, spec, rescan)
    model = build_model(spec, seed)
    if spec.get("palettizable"):
        check_palettizable(model)
    out = MODELS / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    ref_sd = {k: v.clone() for k, v in model.state_dict().items()}
    saved = model.to(spec["save_dtype"])
    kw = {}
    if "shard_size" in spec:
        kw["max_shard_size"] = spec["shard_size"]
    saved.save_pretrained(str(out), **kw)
    gen_cfg = out / "generation_config.json"
    if gen_cfg.exists():
        gen_cfg.unlink()
    if spec["layout"] == "release":
        releaseify(out, model, spec)
    if spec["tokenizer"]:
        write_tokenizer(out, spec["text"]["vocab_size"])
    if "shard_size" in spec:
        assert (out / "model.safetensors.index.json").exists(), "expected a sharded checkpoint"
        shards = sorted(out.glob("model-*.safetensors"))
        assert len(shards) >= 2, shards
        print(f"[{name}] {len(shards)} shards")

    reloaded = load_back(name, spec, out)
    for k, v in reloaded.state_dict().items():
        if k == "lm_head.weight":
            assert torch.equal(v, text_layers(reloaded).embed_tokens.weight), f"{name}: lm_head not tied"
            continue
        assert torch.equal(v, ref_sd[k]), f"{name}: {k} changed through save/reload"
    ids = prompt_ids(spec, seed)
    g = run_golden(reloaded, spec, ids)
    rot = text_layers(reloaded).rotary_emb
    for lt in sorted(set(spec["text"]["layer_types"])):
        # extra keys (not in the golden contract): HF's RoPE inverse frequencies per layer type
        g[f"rope_inv_freq.{lt}"] = getattr(rot, f"{lt}_inv_freq").float().contiguous()

    meta = {
        "model": name,
        "seed": str(seed),
        "generator": "scripts/make_fixtures.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "dtype": "float32",
        "attn_implementation": "eager",
        "class": type(reloaded).__name__,
    }
    GOLDENS.mkdir(parents=True, exist_ok=True)
    out_path = GOLDENS / f"{name}.safetensors"
    save_sorted(g, out_path, meta)
    back = load_file(str(out_path))
    assert all(torch.equal(back[k], g[k]) for k in g), "golden round trip"
    lg = g["logits"]
    print(
        f"[{name}] golden: S={ids.shape[1]} N={len(g['decode_input_ids'])} "
        f"|logit| max {lg.abs().max():.2f} std {lg.std():.2f}; decode ids {g['decode_input_ids'].tolist()}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", default=list(SPECS), help=f"models to build (default all: {list(SPECS)})")
    p.add_argument(
        "--rescan",
        action="store_true",
        help=f"scan seeds {SEED_START}.. for the first that meets the criteria instead of using the pinned one",
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    for n in args.names:
        if n not in SPECS:
            sys.exit(f"unknown fixture {n}; known: {list(SPECS)}")
        make(n, args.rescan)


if __name__ == "__main__":
    main()
