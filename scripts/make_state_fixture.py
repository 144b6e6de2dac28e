#!/usr/bin/env python3
"""Make `fixtures/coreml/tiny_state_multi.mlpackage`: a multi-function stateful package written by
coremltools 9.0 from torch, in the shape of the reference pipeline's stateful KV chunks (run by hand,
results committed).

The torch module keeps two fp16 buffers converted to Core ML states, laid out like the reference's
`kv_cache_sliding` (2, 1, W, D) and `kv_cache_full` (2, 1, C, D) (K at slot 0, V at slot 1), and
writes them with Python slice assignment at runtime positions, exactly as
`conversion/models/gemma4_swa_stateful_chunks.py` does:

    kv_cache_sliding[0:1, :, ring_pos:ring_pos+T, :] = k      # ring write
    kv_cache_full[0:1, :, current_pos:current_pos+T, :] = k2  # linear write

coremltools lowers each assignment to `read_state -> slice_update(begin = concat(.., pos, ..),
end = concat(.., pos + T, ..)) -> write_state -> read_state` (its `coreml_update_state`). The module
is converted for T = 1 and T = 2 and merged with `save_multifunction` into `infer` (default, T = 1)
and `prefill_b2`, which share the states (one MLState serves every function of a package).

`tiny_state_multi.io.safetensors` holds a sequence of calls run in torch on one pair of buffers
(the state carried across calls and across functions): for call i, `call{i}.input.{x,current_pos,
ring_pos}` and `call{i}.output.{out,ring}`; the metadata key `calls` lists the function of each call
(comma-separated); `final.kv_cache_sliding` / `final.kv_cache_full` are the states after the last
call. Inputs are multiples of 1/4 in [-2, 2] and the 4x4 projection `proj` (the package's one
blob) holds 0, ±1/2 and ±1, so every fp16 product and sum in the graph is exact.

Usage: python scripts/make_state_fixture.py [--out fixtures/coreml]
Requires torch, coremltools==9.0, numpy, safetensors (this file was made with torch 2.15.0, which
coremltools 9.0 warns it has not been tested with; the conversion of these few ops is exact).
"""
import argparse
import os
import shutil
import tempfile
import warnings

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import coremltools as ct  # noqa: E402
from coremltools.models.utils import MultiFunctionDescriptor, save_multifunction  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W, C, D = 4, 12, 4
CALLS = [("infer", 0), ("prefill_b2", 1), ("infer", 3), ("prefill_b2", 4), ("infer", 6),
         ("infer", 7), ("prefill_b2", 8)]
T_OF = {"infer": 1, "prefill_b2": 2}


class Cache(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.t = t
        self.register_buffer("kv_cache_sliding", torch.zeros(2, 1, W, D, dtype=torch.float16))
        self.register_buffer("kv_cache_full", torch.zeros(2, 1, C, D, dtype=torch.float16))
        # a 16-element projection (stored in weight.bin: coremltools writes >= 10 elements there)
        m = torch.tensor([[1.0, 0.5, 0.0, -1.0], [0.0, 1.0, 0.5, 0.0], [-0.5, 0.0, 1.0, 0.5],
                          [0.0, -1.0, 0.0, 1.0]], dtype=torch.float16)
        self.proj = nn.Parameter(m, requires_grad=False)

    def forward(self, x, current_pos, ring_pos):
        t = self.t
        k = torch.matmul(x, self.proj).view(1, 1, t, D)
        v = (x * 0.5 + 1.0).view(1, 1, t, D)
        self.kv_cache_sliding[0:1, :, ring_pos:ring_pos + t, :] = k
        self.kv_cache_sliding[1:2, :, ring_pos:ring_pos + t, :] = v
        self.kv_cache_full[0:1, :, current_pos:current_pos + t, :] = k * 2.0
        self.kv_cache_full[1:2, :, current_pos:current_pos + t, :] = v
        ks = self.kv_cache_sliding[0:1, :, :, :]
        vs = self.kv_cache_sliding[1:2, :, :, :]
        kf = self.kv_cache_full[0:1, :, :, :]
        vf = self.kv_cache_full[1:2, :, :, :]
        out = ks.sum(dim=2) + vs.sum(dim=2) + kf.sum(dim=2) - vf.sum(dim=2)
        return out, ks.clone()


def convert(t, path):
    m = Cache(t).eval()
    example = (torch.zeros(1, t, D, dtype=torch.float16), torch.zeros(1, dtype=torch.int32),
               torch.zeros(1, dtype=torch.int32))
    traced = torch.jit.trace(m, example, check_trace=False, strict=False)
    mlmodel = ct.convert(
        traced,
        inputs=[ct.TensorType(name="x", shape=(1, t, D), dtype=np.float16),
                ct.TensorType(name="current_pos", shape=(1,), dtype=np.int32),
                ct.TensorType(name="ring_pos", shape=(1,), dtype=np.int32)],
        outputs=[ct.TensorType(name="out", dtype=np.float16),
                 ct.TensorType(name="ring", dtype=np.float16)],
        states=[ct.StateType(wrapped_type=ct.TensorType(shape=(2, 1, W, D), dtype=np.float16),
                             name="kv_cache_sliding"),
                ct.StateType(wrapped_type=ct.TensorType(shape=(2, 1, C, D), dtype=np.float16),
                             name="kv_cache_full")],
        minimum_deployment_target=ct.target.iOS18,
        compute_precision=ct.precision.FLOAT16,
        skip_model_load=True,
    )
    mlmodel.save(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "fixtures", "coreml"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    try:
        convert(1, os.path.join(tmp, "t1.mlpackage"))
        convert(2, os.path.join(tmp, "t2.mlpackage"))
        desc = MultiFunctionDescriptor()
        desc.add_function(os.path.join(tmp, "t1.mlpackage"), src_function_name="main",
                          target_function_name="infer")
        desc.add_function(os.path.join(tmp, "t2.mlpackage"), src_function_name="main",
                          target_function_name="prefill_b2")
        desc.default_function_name = "infer"
        dest = os.path.join(args.out, "tiny_state_multi.mlpackage")
        if os.path.exists(dest):
            shutil.rmtree(dest)
        save_multifunction(desc, dest)
    finally:
        shutil.rmtree(tmp)

    # the reference sequence: one pair of buffers shared by both functions
    mods = {name: Cache(t).eval() for name, t in T_OF.items()}
    shared = mods["infer"]
    for m in mods.values():
        m._buffers["kv_cache_sliding"] = shared.kv_cache_sliding
        m._buffers["kv_cache_full"] = shared.kv_cache_full
    rng = np.random.default_rng(7)
    io = {}
    for i, (fn, pos) in enumerate(CALLS):
        t = T_OF[fn]
        x = (rng.integers(-8, 9, size=(1, t, D)) / 4.0).astype(np.float16)
        cur = np.array([pos], np.int32)
        ring = np.array([pos % W], np.int32)
        assert pos % W + t <= W, "a batch must not wrap the ring"
        with torch.no_grad():
            out, ks = mods[fn](torch.from_numpy(x), torch.from_numpy(cur), torch.from_numpy(ring))
        io[f"call{i}.input.x"] = x.astype(np.float32)
        io[f"call{i}.input.current_pos"] = cur
        io[f"call{i}.input.ring_pos"] = ring
        io[f"call{i}.output.out"] = out.numpy().astype(np.float32)
        io[f"call{i}.output.ring"] = ks.numpy().astype(np.float32)
    io["final.kv_cache_sliding"] = shared.kv_cache_sliding.numpy().astype(np.float32)
    io["final.kv_cache_full"] = shared.kv_cache_full.numpy().astype(np.float32)
    save_file(io, os.path.join(args.out, "tiny_state_multi.io.safetensors"),
              metadata={"calls": ",".join(fn for fn, _ in CALLS)})
    print("wrote", dest)


if __name__ == "__main__":
    main()
