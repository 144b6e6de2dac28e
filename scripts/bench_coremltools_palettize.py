#!/usr/bin/env python3
"""Time coremltools 9.0 k-means palettization of the anchor weight (single thread).

    /work/pyenv/bin/python scripts/bench_coremltools_palettize.py [--repeat 3]
        [--write-weight PATH] [--json PATH]

Weight: np.random.default_rng(0).standard_normal((2048, 1536)) * 0.02 -> float32 -> float16
(spec/coreml-format.md §5.4). Timed call: palettize_weights.blockwise_compress(W, "KMEANS", 4,
[32, 0]) — what cto.palettize_weights runs for OpPalettizerConfig(nbits=4,
granularity="per_grouped_channel", group_size=32) (num_kmeans_workers=1, i.e. one process).
--write-weight stores the weight as raw little-endian fp16 so the Rust bench times the very same
values (PALETTIZE_BENCH_WEIGHT). Prints and optionally writes JSON: best/median seconds, MSE.
"""

import argparse
import json
import os
import statistics
import time

# One thread for every numeric library, before numpy is imported.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write-weight")
    ap.add_argument("--json")
    args = ap.parse_args()

    from coremltools.optimize.coreml._quantization_passes import palettize_weights
    import coremltools

    w = (np.random.default_rng(0).standard_normal((2048, 1536)) * 0.02).astype(np.float32).astype(np.float16)
    if args.write_weight:
        w.astype("<f2").tofile(args.write_weight)
    times = []
    params = None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        params = palettize_weights.blockwise_compress(w, "KMEANS", 4, [32, 0])
        times.append(time.perf_counter() - t0)
    lut = np.asarray(params.lut, dtype=np.float64).reshape(64, 16)
    idx = np.asarray(params.indices).astype(np.int64).reshape(64, -1)
    deq = np.take_along_axis(lut, idx, axis=1)
    mse = float(((deq - w.astype(np.float64).reshape(64, -1)) ** 2).mean())
    out = {
        "coremltools": coremltools.__version__,
        "shape": [2048, 1536],
        "nbits": 4,
        "group_size": 32,
        "seconds_best": min(times),
        "seconds_median": statistics.median(times),
        "seconds_all": times,
        "mse": mse,
    }
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
