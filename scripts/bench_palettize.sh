#!/usr/bin/env bash
# Palettization benchmark: coremltools 9.0 vs crates/palettize on the same fp16 [2048, 1536]
# weight (4-bit, group 32), in one session, and print the ratios.
#
#   scripts/bench_palettize.sh            # anchor weight only (~1 min)
#   scripts/bench_palettize.sh --all      # + E2B layer set and int8 rows (~3 min)
#
# Env: PYTHON (default /work/pyenv/bin/python), CARGO_TARGET_DIR (default <repo>/target),
#      CARGO_BENCH_FLAGS (extra cargo flags, e.g. --manifest-path).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-/work/pyenv/bin/python}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
FILTER='pal4_g32_2048x1536'
if [[ "${1:-}" == "--all" ]]; then
  FILTER=''
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
WEIGHT="$TMP/w2048x1536.f16"

echo "== coremltools (single thread) =="
"$PYTHON" "$ROOT/scripts/bench_coremltools_palettize.py" --repeat 3 \
  --write-weight "$WEIGHT" --json "$TMP/coremltools.json" 2>/dev/null

echo "== palettize (criterion) =="
cd "$ROOT"
# shellcheck disable=SC2086
PALETTIZE_BENCH_WEIGHT="$WEIGHT" cargo bench -p palettize --bench palettize \
  ${CARGO_BENCH_FLAGS:-} -- ${FILTER:+"$FILTER"}

"$PYTHON" - "$TMP/coremltools.json" "$CARGO_TARGET_DIR/criterion" <<'EOF'
import json, os, sys

ct = json.load(open(sys.argv[1]))
crit = sys.argv[2]

def mean_s(group, threads):
    p = os.path.join(crit, group, "threads", str(threads), "new", "estimates.json")
    if not os.path.exists(p):
        return None
    return json.load(open(p))["mean"]["point_estimate"] * 1e-9

n = 2048 * 1536
t1, t2 = mean_s("pal4_g32_2048x1536", 1), mean_s("pal4_g32_2048x1536", 2)
tc = ct["seconds_best"]
print()
print("== summary: fp16 [2048,1536], 4-bit, group 32 ==")
print(f"coremltools 9.0, 1 thread : {tc:8.3f} s  ({n / tc / 1e6:7.2f} M weights/s)  MSE {ct['mse']:.6e}")
print(f"palettize,      1 thread  : {t1:8.4f} s  ({n / t1 / 1e6:7.2f} M weights/s per core)")
print(f"palettize,      2 threads : {t2:8.4f} s  ({n / t2 / 1e6:7.2f} M weights/s, {n / t2 / 2e6:.2f} per core)")
print(f"speed-up per core vs coremltools : {tc / t1:6.1f}x")
print(f"scaling 1 -> 2 threads           : {t1 / t2:6.2f}x")
def elements(group):
    p = os.path.join(crit, group, "threads", "1", "new", "benchmark.json")
    return json.load(open(p))["throughput"]["Elements"]

for group in ("e2b_layers", "int8_rows_8192x1536"):
    a, b = mean_s(group, 1), mean_s(group, 2)
    if a and b:
        elems = elements(group)
        print(f"{group}: 1 thread {a:.3f} s ({elems / a / 1e6:.1f} M/s), "
              f"2 threads {b:.3f} s ({elems / b / 1e6:.1f} M/s), scaling {a / b:.2f}x")
EOF
