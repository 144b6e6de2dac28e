#!/usr/bin/env bash
# Full-size benchmark with random weights in the exact shapes of the released Gemma 4 E2B (or E4B):
#   1. `gemma-convert synth` writes an E2B-shaped bf16 checkpoint (9.3 GB; E4B ~16 GB) unless it
#      exists;
#   2. the INT4 swa4 conversion at ctx 2048 is timed (process wall and CPU time, the build's phase
#      table, peak anonymous memory); with --baseline BIN, BIN (an older gemma-convert) converts
#      the same checkpoint right before, and the ratios are printed (figures on a shared machine
#      are only comparable within one run);
#   3. coremltools 9.0 palettizes the anchor weight [2048, 1536] in the same run, and its time is
#      scaled to the number of weights this conversion palettized — the ratio printed is our whole
#      conversion against coremltools' palettization step alone (single-threaded, as it runs);
#   4. the CPU interpreter decodes a few tokens through the written set (--no-decode skips it).
# Usage: scripts/bench_e2b.sh [--e4b] [--baseline BIN] [--no-decode] [WORK_DIR]
#   (default WORK_DIR target/bench-e2b or target/bench-e4b; needs ~15 GB of disk, ~25 GB for E4B)
# Python with coremltools: $GEMMA_CONVERT_PYTHON, else .venv/bin/python (scripts/setup-python.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
model=e2b
baseline=""
decode=1
while [ $# -gt 0 ]; do
    case "$1" in
        --e4b) model=e4b; shift ;;
        --baseline) baseline="$2"; shift 2 ;;
        --no-decode) decode=0; shift ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
work="${1:-target/bench-$model}"
target="${CARGO_TARGET_DIR:-target}"
py="${GEMMA_CONVERT_PYTHON:-.venv/bin/python}"
cargo build --release -q -p gemma-convert
bin="$target/release/gemma-convert"
mkdir -p "$work"
if [ ! -f "$work/ckpt/config.json" ]; then
    "$bin" synth --config "fixtures/configs/gemma-4-$model.json" --out "$work/ckpt"
fi

# one conversion by binary $1 into $work/set, results in $work/$2.{json,time,peak}: the build's
# report, process wall / user / sys seconds, and the peak anonymous memory in KiB sampled every
# 0.1 s (file-backed mmap pages of the checkpoint excluded)
convert() {
    rm -rf "$work/set"
    /usr/bin/time -o "$work/$2.time" -f "%e %U %S" \
        "$1" --model "$work/ckpt" --variant swa4 --nbits 4 --ctx 2048 --out "$work/set" --json \
        > "$work/$2.json" &
    local tp=$! pid="" peak=0 a
    while [ -z "$pid" ] && kill -0 "$tp" 2>/dev/null; do pid=$(pgrep -P "$tp" || true); done
    while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do
        a=$(awk '/RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        if [ -n "$a" ] && [ "$a" -gt "$peak" ]; then peak=$a; fi
        sleep 0.1
    done
    wait "$tp"
    echo "$peak" > "$work/$2.peak"
}
rm -f "$work/baseline.json"
load0=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -n "$baseline" ]; then
    convert "$baseline" baseline
fi
convert "$bin" build
load1=$(cut -d' ' -f1-3 /proc/loadavg)

"$py" scripts/bench_coremltools_palettize.py --repeat 1 --json "$work/coremltools.json" > /dev/null

rm -f "$work/decode.json"
if [ "$decode" = 1 ]; then
    "$bin" bench --chunks "$work/set" --tokens 16 --warmup 2 --json > "$work/decode.json"
fi

"$py" - "$work" "$model" "$load0" "$load1" <<'PY'
import json, os, sys
work, model, load0, load1 = sys.argv[1:5]
def run(label):
    b = json.load(open(f"{work}/{label}.json"))
    wall, user, sys_ = map(float, open(f"{work}/{label}.time").read().split())
    return b, wall, user + sys_, int(open(f"{work}/{label}.peak").read()) / 2**20
b, wall, cpu, peak = run("build")
m = json.load(open(f"{work}/set/manifest.json"))
c = json.load(open(f"{work}/coremltools.json"))
d = json.load(open(f"{work}/decode.json")) if os.path.exists(f"{work}/decode.json") else None
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
print(f"{model.upper()}-shaped INT4 swa4 ctx 2048: {n/1e9:.2f} G weights palettized; load average {load0} before, {load1} after the conversions")
def table(label, b, wall, cpu, peak):
    print(f"  {label}: whole conversion (process) {wall:6.1f} s wall, {cpu:6.1f} s CPU; peak anonymous memory {peak:.2f} GiB")
    print("    phases: " + ", ".join(f"{p['name']} {p['seconds']:.1f} s" for p in b["phases"]))
table("gemma-convert", b, wall, cpu, peak)
print(f"  coremltools 9.0, palettization only (measured {c['seconds_best']:.2f} s on [2048,1536], scaled): {ct_est:7.1f} s")
print(f"  ratio: {ct_est/wall:.1f}x (coremltools palettization alone / our whole conversion)")
if os.path.exists(f"{work}/baseline.json"):
    bb, bwall, bcpu, bpeak = run("baseline")
    table("baseline binary", bb, bwall, bcpu, bpeak)
    print(f"  against the baseline: wall {wall/bwall:.2f}x, CPU {cpu/bcpu:.2f}x, peak anonymous memory {peak/bpeak:.2f}x")
print(f"  peak RSS incl. mapped checkpoint pages {b['peak_rss_bytes']/2**30:.2f} GiB")
print(f"  weight.bin per chunk: " + ", ".join(f"{p['name']} {p['weight_bytes']:,}" for p in b["packages"]))
if d:
    print(f"  CPU interpreter decode: {d['tokens_per_second']:.2f} tokens/s; ms per chunk call: " + ", ".join(f"{x['chunk']} {x['ms']:.0f}" for x in d["ms_per_chunk_call"]))
PY
