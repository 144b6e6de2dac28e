#!/usr/bin/env bash
# Palettization benchmark: coremltools 9.0 vs crates/palettize on the same fp16 [2048, 1536]
# weight (4-bit, group 32), in one session, and print the ratios.
#
#   scripts/bench_palettize.sh            # anchor weight only (~1 min)
#   scripts/bench_palettize.sh --all      # + E2B layer set and int8 rows (~3 min)
#
# Env: PYTHON with coremltools (default $GEMMA_CONVERT_PYTHON, else <repo>/.venv/bin/python as
#      scripts/setup-python.sh installs it, like bench_e2b.sh), CARGO_TARGET_DIR (default <repo>/target),
#      CARGO_BENCH_FLAGS (extra cargo flags, e.g. --manifest-path).
# The summary gives criterion's mean and its fastest sample (robust to a shared, noisy machine;
# coremltools is reported as its best of 3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-${GEMMA_CONVERT_PYTHON:-$ROOT/.venv/bin/python}}"
if [[ ! -x "$PYTHON" ]]; then
  echo "bench_palettize.sh: no Python at $PYTHON; run scripts/setup-python.sh (or set PYTHON)" >&2
  exit 2
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
FILTER='pal4_g32_2048x1536'
if [[ "${1:-}" == "--all" ]]; then
  FILTER=''
fi
# Drop results of earlier runs so the summary only shows this session.
for g in pal4_g32_2048x1536 e2b_layers int8_rows_8192x1536; do
  rm -rf "$CARGO_TARGET_DIR/criterion/$g"
done

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
WEIGHT="$TMP/w2048x1536.f16"

cd "$ROOT"
# Build first so compilation does not overlap the coremltools timing.
# shellcheck disable=SC2086
cargo bench -p palettize --bench palettize ${CARGO_BENCH_FLAGS:-} --no-run

echo "== coremltools (single thread) =="
"$PYTHON" "$ROOT/scripts/bench_coremltools_palettize.py" --repeat 3 \
  --write-weight "$WEIGHT" --json "$TMP/coremltools.json" 2>/dev/null

echo "== palettize (criterion) =="
# shellcheck disable=SC2086
PALETTIZE_BENCH_WEIGHT="$WEIGHT" cargo bench -p palettize --bench palettize \
  ${CARGO_BENCH_FLAGS:-} -- ${FILTER:+"$FILTER"}

"$PYTHON" - "$TMP/coremltools.json" "$CARGO_TARGET_DIR/criterion" <<'PYEOF'
import json, os, sys

ct = json.load(open(sys.argv[1]))
crit = sys.argv[2]

def times(group, threads):
    """(mean s, fastest sample s) per iteration, or None if the group did not run."""
    d = os.path.join(crit, group, "threads", str(threads), "new")
    if not os.path.exists(os.path.join(d, "estimates.json")):
        return None
    mean = json.load(open(os.path.join(d, "estimates.json")))["mean"]["point_estimate"] * 1e-9
    s = json.load(open(os.path.join(d, "sample.json")))
    fastest = min(t / i for t, i in zip(s["times"], s["iters"])) * 1e-9
    return mean, fastest

def elements(group):
    p = os.path.join(crit, group, "threads", "1", "new", "benchmark.json")
    return json.load(open(p))["throughput"]["Elements"]

n = 2048 * 1536
(m1, f1), (m2, f2) = times("pal4_g32_2048x1536", 1), times("pal4_g32_2048x1536", 2)
tc = ct["seconds_best"]
print()
print("== summary: fp16 [2048,1536], 4-bit, group 32 (criterion mean / fastest sample) ==")
print(f"coremltools 9.0, 1 thread : {tc:8.3f} s best of {len(ct['seconds_all'])}"
      f"  ({n / tc / 1e6:.2f} M weights/s)  MSE {ct['mse']:.6e}")
print(f"palettize,      1 thread  : {m1 * 1e3:8.2f} / {f1 * 1e3:.2f} ms"
      f"  ({n / m1 / 1e6:.1f} / {n / f1 / 1e6:.1f} M weights/s per core)")
print(f"palettize,      2 threads : {m2 * 1e3:8.2f} / {f2 * 1e3:.2f} ms"
      f"  ({n / m2 / 1e6:.1f} / {n / f2 / 1e6:.1f} M weights/s)")
print(f"speed-up per core vs coremltools : {tc / m1:6.1f}x / {tc / f1:.1f}x")
print(f"scaling 1 -> 2 threads           : {m1 / m2:6.2f}x / {f1 / f2:.2f}x")
for group in ("e2b_layers", "int8_rows_8192x1536"):
    a, b = times(group, 1), times(group, 2)
    if a and b:
        e = elements(group)
        print(f"{group} ({e / 1e6:.1f} M weights): 1 thread {a[0]:.3f} / {a[1]:.3f} s"
              f" ({e / a[0] / 1e6:.1f} / {e / a[1] / 1e6:.1f} M/s per core), 2 threads"
              f" {b[0]:.3f} / {b[1]:.3f} s, scaling {a[0] / b[0]:.2f}x / {a[1] / b[1]:.2f}x")
PYEOF
