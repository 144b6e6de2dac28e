#!/usr/bin/env python3
"""Write the palettization test vectors of crates/palettize into fixtures/palettize/.

Run by hand (the output is committed; tests never run Python):

    /work/pyenv/bin/python scripts/palettize_vectors.py [--pal4-npz PATH] [--out fixtures/palettize]

Needs coremltools 9.0, numpy and scikit-learn. For every case the weight is palettized by
coremltools' own blockwise palettizer (`palettize_weights.blockwise_compress(W, "KMEANS", nbits,
[group_size, 0])`, the function `cto.palettize_weights` calls for
`OpPalettizerConfig(mode="kmeans", granularity="per_grouped_channel", group_size=...)`), and the
indices are packed by coremltools' blob writer (`_BlobStorageWriter.write_uintN_data`), so
`*.idx.bin` holds exactly the bytes coremltools puts into weight.bin.

Files (all raw little-endian, described by manifest.json):
  <case>.weight.f16   fp16 weight, row-major
  <case>.lut.f16      fp16 LUT, row-major over lut_shape ([G, 1, ..., 2^nbits, 1])
  <case>.idx.bin      packed indices (weight.bin payload bytes)
  manifest.json       shapes, nbits, group size, which coremltools path ran (kmeans1d / sklearn),
                      per-group MSE of coremltools' result (float64), index blob metadata.
Plus one INT8 per-row case (numpy implementation of the reference runtime's recipe):
  int8_rows.weight.f32, int8_rows.q8.bin, int8_rows.scales.f16
"""

import argparse
import json
import os
import tempfile

import numpy as np

WRITERS = {1: "write_uint1_data", 2: "write_uint2_data", 3: "write_uint3_data",
           4: "write_uint4_data", 6: "write_uint6_data", 8: "write_uint8_data"}


def blob_payload(indices_u8, nbits):
    """Pack with coremltools' BlobWriter and return (payload bytes, metadata dict)."""
    from coremltools.libmilstoragepython import _BlobStorageWriter

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "weight.bin")
        writer = _BlobStorageWriter(path)
        offset = getattr(writer, WRITERS[nbits])(np.ascontiguousarray(indices_u8.ravel()))
        del writer
        raw = open(path, "rb").read()
    meta = raw[offset:offset + 64]
    sentinel, dtype = np.frombuffer(meta[:8], dtype="<u4")
    size, data_offset, padding = np.frombuffer(meta[8:32], dtype="<u8")
    assert sentinel == 0xDEADBEEF
    payload = raw[int(data_offset):int(data_offset) + int(size)]
    return payload, {"blob_dtype": int(dtype), "size": int(size), "padding_bits": int(padding)}


def group_mse(weight, lut, indices, group_size):
    """Per-group MSE (float64) of lut[g][indices] against the fp16 weight."""
    o = weight.shape[0]
    gs = o if group_size == 0 or group_size >= o else group_size
    groups = o // gs
    w = weight.astype(np.float64).reshape(groups, -1)
    idx = indices.astype(np.int64).reshape(groups, -1)
    table = lut.astype(np.float64).reshape(groups, -1)
    deq = np.take_along_axis(table, idx, axis=1)
    return [float(x) for x in ((deq - w) ** 2).mean(axis=1)]


def coremltools_case(out, manifest, name, weight, nbits, group_size):
    from coremltools.optimize.coreml._quantization_passes import palettize_weights

    assert weight.dtype == np.float16
    gs = weight.shape[0] if group_size == 0 else group_size
    params = palettize_weights.blockwise_compress(weight, "KMEANS", nbits, [gs] + [0] * (weight.ndim - 1))
    lut = np.asarray(params.lut, dtype=np.float16)
    indices = np.asarray(params.indices).astype(np.uint8)
    per_group = weight.size // (weight.shape[0] // gs)
    path = "kmeans1d" if per_group >= 10_000 else "sklearn"
    payload, meta = blob_payload(indices, nbits)
    weight.astype("<f2").tofile(os.path.join(out, f"{name}.weight.f16"))
    lut.astype("<f2").tofile(os.path.join(out, f"{name}.lut.f16"))
    open(os.path.join(out, f"{name}.idx.bin"), "wb").write(payload)
    mses = group_mse(weight, lut, indices, gs)
    manifest["cases"].append({
        "name": name,
        "shape": list(weight.shape),
        "nbits": nbits,
        "group_size": group_size,
        "coremltools_path": path,
        "lut_shape": list(lut.shape),
        "index_blob": meta,
        "group_mse": mses,
        "mse": float(np.mean(mses)),
    })
    print(f"{name}: shape {weight.shape} nbits {nbits} gs {group_size} path {path} mse {np.mean(mses):.6e}")


def pal4_case(out, manifest, npz_path):
    """The shared vector samples/pal4_vector.npz (coremltools 9.0, 4-bit, group 32)."""
    d = np.load(npz_path)
    weight, lut, indices = d["weight"], d["lut"], d["indices"].astype(np.uint8)
    payload, meta = blob_payload(indices, 4)
    name = "pal4_vector"
    weight.astype("<f2").tofile(os.path.join(out, f"{name}.weight.f16"))
    lut.astype("<f2").tofile(os.path.join(out, f"{name}.lut.f16"))
    open(os.path.join(out, f"{name}.idx.bin"), "wb").write(payload)
    mses = group_mse(weight, lut, indices, 32)
    assert abs(np.mean(mses) - float(d["mse"])) <= 1e-12, (np.mean(mses), float(d["mse"]))
    manifest["cases"].append({
        "name": name,
        "shape": list(weight.shape),
        "nbits": 4,
        "group_size": 32,
        "coremltools_path": "kmeans1d",
        "lut_shape": list(lut.shape),
        "index_blob": meta,
        "group_mse": mses,
        "mse": float(d["mse"]),
        "source": "samples/pal4_vector.npz",
    })
    print(f"{name}: mse {float(d['mse']):.6e}")


def int8_case(out, manifest):
    """Per-row INT8: s = max|row| as fp16; q = round(w*127/s16) clamped to +-127 (float32)."""
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((16, 96)) * 0.05).astype(np.float32)
    w[3] = 0.0  # all-zero row
    w[5, 7] = np.float32(1.0 + 2.0 ** -11)  # max rounds down in fp16 -> clamp path
    s = np.abs(w).max(axis=1)
    s16 = s.astype(np.float16)
    sf = s16.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(sf[:, None] > 0, np.round((w * np.float32(127)) / sf[:, None]), 0)
    q = np.clip(q, -127, 127).astype(np.int8)
    w.astype("<f4").tofile(os.path.join(out, "int8_rows.weight.f32"))
    q.tofile(os.path.join(out, "int8_rows.q8.bin"))
    s16.astype("<f2").tofile(os.path.join(out, "int8_rows.scales.f16"))
    manifest["int8_rows"] = {"rows": 16, "cols": 96, "weight": "int8_rows.weight.f32",
                             "q8": "int8_rows.q8.bin", "scales": "int8_rows.scales.f16"}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "..", "fixtures", "palettize"))
    ap.add_argument("--pal4-npz", default="/work/shared/samples/pal4_vector.npz")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    import coremltools
    import sklearn

    manifest = {
        "generator": "scripts/palettize_vectors.py",
        "coremltools": coremltools.__version__,
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "cases": [],
    }
    f16 = np.float16
    g = np.random.default_rng(2)
    # 4-bit group 32, kmeans1d path (32*512 = 16384 elements per group).
    coremltools_case(args.out, manifest, "gauss_4bit_g32",
                     (g.standard_normal((128, 512)) * 0.02).astype(np.float32).astype(f16), 4, 32)
    # Heavy tails (Student t, 3 dof), 3-bit group 32, kmeans1d path (12288 per group).
    coremltools_case(args.out, manifest, "student_3bit_g32",
                     (g.standard_t(3, (64, 384)) * 0.01).astype(np.float32).astype(f16), 3, 32)
    # 8-bit per-tensor (group_size 0), kmeans1d path, 256 clusters.
    coremltools_case(args.out, manifest, "gauss_8bit_tensor",
                     (g.standard_normal((64, 256)) * 0.05).astype(np.float32).astype(f16), 8, 0)
    # 2-bit group 16 on a conv-like [O, I, 1, 1] weight, kmeans1d path (16*640 = 10240).
    coremltools_case(args.out, manifest, "conv_2bit_g16",
                     (g.laplace(0.0, 0.02, (32, 640, 1, 1))).astype(np.float32).astype(f16), 2, 16)
    # 6-bit group 32, sklearn path (32*96 = 3072 elements per group < 10000).
    coremltools_case(args.out, manifest, "gauss_6bit_g32_sklearn",
                     (g.standard_normal((64, 96)) * 0.02).astype(np.float32).astype(f16), 6, 32)
    # 1-bit group 8, sklearn path.
    coremltools_case(args.out, manifest, "gauss_1bit_g8_sklearn",
                     (g.standard_normal((32, 200)) * 0.02).astype(np.float32).astype(f16), 1, 8)
    # Fewer distinct values than 2^nbits: 9 distinct values, 4-bit, group 32 (kmeans1d path,
    # n_clusters = 9, unused LUT slots stay 0.0).
    levels = np.array([-0.5, -0.25, -0.125, 0.0, 0.0625, 0.125, 0.25, 0.5, 1.0], dtype=f16)
    coremltools_case(args.out, manifest, "few_distinct_4bit_g32",
                     levels[g.integers(0, len(levels), (64, 320))], 4, 32)
    # Odd element counts: non-zero padding bits; per-tensor 6-bit (kmeans1d, 11011 elements) and
    # 3-bit with one channel per group (sklearn; group bit size not a multiple of 8).
    coremltools_case(args.out, manifest, "odd_6bit_tensor",
                     (g.standard_normal((11, 1001)) * 0.03).astype(np.float32).astype(f16), 6, 0)
    coremltools_case(args.out, manifest, "odd_3bit_g1_sklearn",
                     (g.standard_normal((3, 3335)) * 0.03).astype(np.float32).astype(f16), 3, 1)
    pal4_case(args.out, manifest, args.pal4_npz)
    int8_case(args.out, manifest)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(args.out, p)) for p in os.listdir(args.out))
    print(f"wrote {args.out} ({total} bytes)")


if __name__ == "__main__":
    main()
