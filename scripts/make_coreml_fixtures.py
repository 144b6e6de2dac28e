#!/usr/bin/env python3
"""Make the coremltools-written `.mlpackage` fixtures in `fixtures/coreml/` (run by hand, committed).

A tiny torch module exercising the ops our exporter emits (embedding gather, layer_norm, linear,
attention with softmax and an additive mask, gelu(tanh), RMSNorm written by hand, split / reshape /
transpose / concat, a 1x1 conv) is traced and converted with coremltools 9.0 to iOS 18 ML programs:

  tiny_fp16.mlpackage      fp16 weights
  tiny_pal4.mlpackage      4-bit k-means palettized, per_grouped_channel, group 32 (constexpr_lut_to_dense)
  tiny_int4blk.mlpackage   int4 symmetric per_block(32) (constexpr_blockwise_shift_scale)
  tiny_multi.mlpackage     save_multifunction: `main` (T=8) + `decode` (T=1) sharing their weights
  tiny_state.mlpackage     an fp16 state (slice_update of a KV-cache-like buffer, read_state /
                           write_state) and an optional int32 input with a default value

Beside each package, `<name>.io.safetensors` holds the torch fp32 reference: `input.<name>` and
`output.<name>` tensors (the multi-function file prefixes them with `<function>.`). Inputs are
`input_ids` (int32 [1,T]) and `mask` (fp32 [1,1,T,T], causal, 0 / -1e4; the model takes it as fp16);
outputs are `hidden` [1,T,32] and `logits` [1,T,64] (the model returns fp16). For tiny_state the
inputs are `x` (fp32 [1,1,8]; fp16 in the model) and `pos` (int32 [1], unused, default 0), the state
`cache` starts as zeros (`state_in.cache`), and after one call the output is `output.out` [1,8] and
the state `state_out.cache` [1,4,8].

Usage: /work/pyenv/bin/python scripts/make_coreml_fixtures.py [--out fixtures/coreml]
Requires torch, coremltools==9.0, numpy, safetensors.
"""
import argparse
import os
import shutil
import sys
import tempfile
import warnings

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402

try:
    import torch  # noqa: E402
    import torch.nn as nn  # noqa: E402
    import torch.nn.functional as F  # noqa: E402
except ImportError:  # pragma: no cover
    sys.exit("torch is not installed in this Python (needed only to make the fixtures)")

import coremltools as ct  # noqa: E402
import coremltools.optimize.coreml as cto  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB, D, HEADS, FFN = 64, 32, 2, 64


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, D)
        self.ln = nn.LayerNorm(D)
        self.qkv = nn.Linear(D, 3 * D)
        self.o = nn.Linear(D, D, bias=False)
        self.rms_weight = nn.Parameter(1.0 + 0.1 * torch.randn(D))
        self.up = nn.Linear(D, FFN)
        self.down = nn.Linear(FFN, D)
        self.conv = nn.Conv2d(D, D, 1)
        self.head = nn.Linear(D, VOCAB, bias=False)

    def forward(self, input_ids, mask):
        hd = D // HEADS  # shapes are spelled with -1 so tracing records no shape arithmetic
        x = self.emb(input_ids)
        h = self.ln(x)
        q, k, v = self.qkv(h).split(D, dim=-1)
        q = q.reshape(1, -1, HEADS, hd).transpose(1, 2)
        k = k.reshape(1, -1, HEADS, hd).transpose(1, 2)
        v = v.reshape(1, -1, HEADS, hd).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-1, -2) * hd**-0.5 + mask, dim=-1)
        a = (att @ v).transpose(1, 2).reshape(1, -1, D)
        x = x + self.o(a)
        # RMSNorm by hand
        h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.rms_weight
        x = x + self.down(F.gelu(self.up(h), approximate="tanh"))
        # 1x1 conv over [B, C, T, 1]
        c = self.conv(x.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)
        x = torch.cat([x[..., : D // 2], c[..., D // 2 :]], dim=-1)
        return x, self.head(x)


class Stateful(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.register_buffer("cache", torch.zeros(1, 4, 8))

    def forward(self, x, pos):
        y = self.lin(x)
        self.cache[:, 1:2, :] = y
        return self.cache.sum(dim=1) + y[:, 0, :]


def make_stateful(out_dir):
    torch.manual_seed(3)
    model = Stateful().eval()
    x = torch.randn(1, 1, 8, generator=torch.Generator().manual_seed(4))
    pos = torch.zeros(1, dtype=torch.int32)
    traced = torch.jit.trace(model, (x, pos))
    with torch.no_grad():
        out = Stateful().eval()
        out.load_state_dict(model.state_dict())
        out.cache.zero_()  # tracing ran forward once and mutated the buffer
        y = out(x, pos)
    mlmodel = ct.convert(
        traced,
        inputs=[
            ct.TensorType("x", shape=(1, 1, 8), dtype=np.float16),
            ct.TensorType("pos", shape=(1,), dtype=np.int32, default_value=np.zeros(1, np.int32)),
        ],
        outputs=[ct.TensorType("out")],
        states=[ct.StateType(wrapped_type=ct.TensorType(shape=(1, 4, 8), dtype=np.float16),
                             name="cache")],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS18,
        compute_precision=ct.precision.FLOAT16,
    )
    save(mlmodel, out_dir, "tiny_state")
    save_file(
        {
            "input.x": x.numpy().astype(np.float32),
            "input.pos": pos.numpy(),
            "state_in.cache": np.zeros((1, 4, 8), np.float32),
            "output.out": y.detach().numpy().astype(np.float32),
            "state_out.cache": out.cache.numpy().astype(np.float32),
        },
        os.path.join(out_dir, "tiny_state.io.safetensors"),
    )


def reference_io(model, t, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (1, t), generator=g, dtype=torch.int32)
    mask = torch.triu(torch.full((t, t), -1e4), diagonal=1).reshape(1, 1, t, t)
    with torch.no_grad():
        hidden, logits = model(ids, mask)
    return {
        "input.input_ids": ids.numpy(),
        "input.mask": mask.numpy().astype(np.float32),
        "output.hidden": hidden.numpy().astype(np.float32),
        "output.logits": logits.numpy().astype(np.float32),
    }


def convert(model, t):
    ids = torch.zeros((1, t), dtype=torch.int32)
    mask = torch.zeros((1, 1, t, t))
    traced = torch.jit.trace(model, (ids, mask))
    mlmodel = ct.convert(
        traced,
        inputs=[
            ct.TensorType("input_ids", shape=(1, t), dtype=np.int32),
            ct.TensorType("mask", shape=(1, 1, t, t), dtype=np.float16),
        ],
        outputs=[ct.TensorType("hidden"), ct.TensorType("logits")],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS18,
        compute_precision=ct.precision.FLOAT16,
    )
    mlmodel.short_description = "gemma-convert test fixture (tiny torch module)"
    mlmodel.author = "gemma-convert scripts/make_coreml_fixtures.py"
    mlmodel.license = "MIT OR Apache-2.0"
    mlmodel.version = "1"
    mlmodel.user_defined_metadata["com.gemma-convert.fixture"] = "tiny"
    return mlmodel


def save(mlmodel, out_dir, name):
    path = os.path.join(out_dir, name + ".mlpackage")
    if os.path.exists(path):
        shutil.rmtree(path)
    mlmodel.save(path)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    print("wrote %s (%d bytes)" % (path, size))
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "fixtures", "coreml"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    torch.manual_seed(0)
    model = Tiny().eval()
    io8 = reference_io(model, 8, seed=1)
    io1 = reference_io(model, 1, seed=2)

    fp16 = convert(model, 8)
    save(fp16, args.out, "tiny_fp16")
    save_file(io8, os.path.join(args.out, "tiny_fp16.io.safetensors"))

    pal_cfg = cto.OptimizationConfig(
        global_config=cto.OpPalettizerConfig(
            mode="kmeans", nbits=4, granularity="per_grouped_channel", group_size=32,
            weight_threshold=512,
        )
    )
    pal = cto.palettize_weights(fp16, pal_cfg)
    save(pal, args.out, "tiny_pal4")
    save_file(io8, os.path.join(args.out, "tiny_pal4.io.safetensors"))

    blk_cfg = cto.OptimizationConfig(
        global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=32,
            weight_threshold=512,
        )
    )
    blk = cto.linear_quantize_weights(fp16, blk_cfg)
    save(blk, args.out, "tiny_int4blk")
    save_file(io8, os.path.join(args.out, "tiny_int4blk.io.safetensors"))

    with tempfile.TemporaryDirectory() as tmp:
        a = save(fp16, tmp, "main")
        b = save(convert(model, 1), tmp, "decode")
        desc = ct.utils.MultiFunctionDescriptor()
        desc.add_function(a, src_function_name="main", target_function_name="main")
        desc.add_function(b, src_function_name="main", target_function_name="decode")
        desc.default_function_name = "main"
        multi = os.path.join(args.out, "tiny_multi.mlpackage")
        if os.path.exists(multi):
            shutil.rmtree(multi)
        ct.utils.save_multifunction(desc, multi)
        print("wrote %s" % multi)
    multi_io = {"main." + k: v for k, v in io8.items()}
    multi_io.update({"decode." + k: v for k, v in io1.items()})
    save_file(multi_io, os.path.join(args.out, "tiny_multi.io.safetensors"))

    make_stateful(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
