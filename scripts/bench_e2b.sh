#!/usr/bin/env bash
# Full-size benchmark with random weights in the exact shapes of the released Gemma 4 E2B:
#   1. `gemma-convert synth` writes an E2B-shaped bf16 checkpoint (9.3 GB) unless it exists;
#   2. the INT4 swa4 conversion at ctx 2048 is timed (wall time, phases, peak anonymous memory);
#   3. coremltools 9.0 palettizes the anchor weight [2048, 1536] in the same run, and its time is
#      scaled to the number of weights this conversion palettized — the ratio printed is our whole
#      conversion against coremltools' palettization step alone (single-threaded, as it runs);
#   4. the CPU interpreter decodes a few tokens through the written set.
# Usage: scripts/bench_e2b.sh [WORK_DIR]   (default target/bench-e2b; needs ~15 GB of disk)
# Python with coremltools: $GEMMA_CONVERT_PYTHON, else .venv/bin/python (scripts/setup-python.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-target/bench-e2b}"
target="${CARGO_TARGET_DIR:-target}"
py="${GEMMA_CONVERT_PYTHON:-.venv/bin/python}"
cargo build --release -q -p gemma-convert
bin="$target/release/gemma-convert"
mkdir -p "$work"
if [ ! -f "$work/ckpt/config.json" ]; then
    "$bin" synth --config fixtures/configs/gemma-4-e2b.json --out "$work/ckpt"
fi
rm -rf "$work/set"

# conversion, sampling the peak anonymous memory (file-backed mmap pages of the checkpoint excluded)
"$bin" --model "$work/ckpt" --variant swa4 --nbits 4 --ctx 2048 --out "$work/set" --json > "$work/build.json" &
pid=$!
peak=0
while kill -0 "$pid" 2>/dev/null; do
    a=$(awk '/RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    if [ -n "$a" ] && [ "$a" -gt "$peak" ]; then peak=$a; fi
    sleep 0.2
done
wait "$pid"

"$py" scripts/bench_coremltools_palettize.py --repeat 1 --json "$work/coremltools.json" > /dev/null

"$bin" bench --chunks "$work/set" --tokens 16 --warmup 2 --json > "$work/decode.json"

"$py" - "$work" "$peak" <<'PY'
import json, sys
work, peak_kb = sys.argv[1], int(sys.argv[2])
b = json.load(open(f"{work}/build.json"))
m = json.load(open(f"{work}/set/manifest.json"))
c = json.load(open(f"{work}/coremltools.json"))
d = json.load(open(f"{work}/decode.json"))
# palettized weights, counted from the uint4 index blobs of the packages (2 weights per byte)
import struct
n = 0
for ch in m["build"]["chunks"]:
    wb = f"{work}/set/{ch['name']}.mlpackage/Data/com.apple.CoreML/weights/weight.bin"
    data = open(wb, "rb").read()
    off = 64
    while off + 64 <= len(data):
        sentinel, code, size, doff, pad = struct.unpack_from("<IIQQQ", data, off)
        if code == 11:  # uint4 indices
            n += size * 2
        off = (doff + size + 63) // 64 * 64
ct_per_weight = c["seconds_best"] / (2048 * 1536)
ct_est = ct_per_weight * n
ours = b["seconds"]
phases = {p["name"]: p["seconds"] for p in b["phases"]}
print(f"E2B-shaped INT4 swa4 ctx 2048: {n/1e9:.2f} G weights palettized")
print(f"  gemma-convert, whole conversion: {ours:6.1f} s  (emit+palettize {phases.get('emit',0):.1f} s, side files {phases.get('side files',0):.1f} s)")
print(f"  coremltools 9.0, palettization only (measured {c['seconds_best']:.2f} s on [2048,1536], scaled): {ct_est:7.1f} s")
print(f"  ratio: {ct_est/ours:.1f}x")
print(f"  peak anonymous memory {peak_kb/1024/1024:.2f} GiB (peak RSS incl. mapped checkpoint pages {b['peak_rss_bytes']/2**30:.2f} GiB)")
print(f"  weight.bin per chunk: " + ", ".join(f"{p['name']} {p['weight_bytes']:,}" for p in b["packages"]))
print(f"  CPU interpreter decode: {d['tokens_per_second']:.2f} tokens/s; ms per chunk call: " + ", ".join(f"{x['chunk']} {x['ms']:.0f}" for x in d["ms_per_chunk_call"]))
PY
