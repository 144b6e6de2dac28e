#!/usr/bin/env python3
"""Pool `gemma-convert fidelity --json` reports of independent sequence samples (e.g. seeds 0..3).

    python3 scripts/fidelity_pool.py target/fid/pool/json/tiny-pal-default-seed*.json

The sequences of all reports are taken as one sample (they must be different sequences of the same
model and set); prints mean KL of ours and HF fp16 with 95 % t intervals, the paired ratio of means
(delta-method interval, as `mil_runtime::fidelity::RatioEstimate::of_means`) and the geometric mean of
the per-sequence ratios. Standard library only.
"""

from __future__ import annotations

import json
import math
import statistics
import sys

Z = 1.959963984540054


def t975(df: int) -> float:
    """Cornish-Fisher t quantile (the reports' n is large; within 1e-3 of the table from df 30)."""
    n = float(df)
    return (
        Z
        + (Z**3 + Z) / (4 * n)
        + (5 * Z**5 + 16 * Z**3 + 3 * Z) / (96 * n * n)
        + (3 * Z**7 + 19 * Z**5 + 17 * Z**3 - 15 * Z) / (384 * n**3)
    )


def estimate(x: list[float]) -> tuple[float, float]:
    return statistics.fmean(x), t975(len(x) - 1) * statistics.stdev(x) / math.sqrt(len(x))


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    ours: list[float] = []
    base: list[float] = []
    for path in sys.argv[1:]:
        j = json.load(open(path))
        ours += [s["kl"] for s in j["per_sequence"]["ours"]]
        base += [s["kl"] for s in j["per_sequence"]["hf_fp16"]]
    n = len(ours)
    (mo, ho), (mb, hb) = estimate(ours), estimate(base)
    r = sum(ours) / sum(base)
    d = [o - r * b for o, b in zip(ours, base)]
    hr = t975(n - 1) * statistics.stdev(d) / math.sqrt(n) / mb
    logs = [math.log(o / b) for o, b in zip(ours, base)]
    ml, hl = estimate(logs)
    print(
        f"{n} sequences: mean KL ours {mo:.5f} ± {ho:.5f}, HF fp16 {mb:.5f} ± {hb:.5f}; "
        f"ratio ×{r:.3f} [{r - hr:.3f}, {r + hr:.3f}]; per sequence (geometric) "
        f"×{math.exp(ml):.3f} [{math.exp(ml - hl):.3f}, {math.exp(ml + hl):.3f}]"
    )


if __name__ == "__main__":
    main()
