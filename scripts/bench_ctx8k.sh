#!/usr/bin/env bash
# Long contexts at full size (issue 13 item 4): E2B-shaped INT4 builds of `swa4` and `flash` at
# ctx 8192 (the reference project's 8K experiments), against `swa4` at ctx 2048 built in the same
# run as the baseline. Per build: wall time, peak anonymous memory, bytes on disk (packages and side
# files), and the bytes one decode step moves per chunk (weights as stored, KV caches in and out,
# other I/O; counted by `bench --estimate`, which also prints its device estimate).
#
#   scripts/bench_ctx8k.sh [WORK_DIR]      (default target/bench-ctx8k)
#
# The checkpoint is `gemma-convert synth` of fixtures/configs/gemma-4-e2b.json in WORK_DIR/ckpt
# (9.3 GB; CKPT=DIR reuses an existing one; BIN=path uses that binary instead of building one). One set at a time is on disk (~4 GB: packages + int8
# side tables); each is deleted after it is measured. Runs under `nice`.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-target/bench-ctx8k}"
target="${CARGO_TARGET_DIR:-target}"
py="${GEMMA_CONVERT_PYTHON:-python3}"
# BIN=path measures an already built binary instead of building the release one
if [ -z "${BIN:-}" ]; then
    cargo build --release -q -p gemma-convert
fi
bin="${BIN:-$target/release/gemma-convert}"
mkdir -p "$work"
ckpt="${CKPT:-$work/ckpt}"
if [ ! -f "$ckpt/config.json" ]; then
    nice "$bin" synth --config fixtures/configs/gemma-4-e2b.json --out "$ckpt"
fi

# one build: wall time (s) and peak RssAnon (kB) into $work/$tag.{build.json,peak,time}
build() {
    local tag=$1
    shift
    local set="$work/$tag"
    rm -rf "$set"
    local t0 t1 pid peak=0 a
    t0=$(date +%s.%N)
    nice "$bin" --model "$ckpt" "$@" --out "$set" --json > "$work/$tag.build.json" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        a=$(awk '/RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        if [ -n "$a" ] && [ "$a" -gt "$peak" ]; then peak=$a; fi
        sleep 0.2
    done
    wait "$pid"
    t1=$(date +%s.%N)
    echo "$peak" > "$work/$tag.peak"
    echo "$t0 $t1" > "$work/$tag.time"
    du -sb "$set" | cut -f1 > "$work/$tag.bytes"
    du -sb "$set"/*.mlpackage | awk '{s += $1} END {print s}' > "$work/$tag.pkg_bytes"
    "$bin" bench --chunks "$set" --estimate iphone17pro --json > "$work/$tag.estimate.json"
    rm -rf "$set"
}

build swa4-2048 --variant swa4 --nbits 4 --ctx 2048
build swa4-8192 --variant swa4 --nbits 4 --ctx 8192
build flash-8192 --variant flash --nbits 4 --ctx 8192

"$py" - "$work" <<'PY'
import json, sys
work = sys.argv[1]
rows = []
for tag in ["swa4-2048", "swa4-8192", "flash-8192"]:
    t0, t1 = map(float, open(f"{work}/{tag}.time").read().split())
    peak = int(open(f"{work}/{tag}.peak").read()) / 2**20
    total = int(open(f"{work}/{tag}.bytes").read())
    pkg = int(open(f"{work}/{tag}.pkg_bytes").read())
    e = json.load(open(f"{work}/{tag}.estimate.json"))
    ch = e["chunks"]
    w = sum(c["weight_bytes"] for c in ch)
    kv = sum(c["kv_bytes"] for c in ch)
    io = sum(c["other_io_bytes"] for c in ch)
    tok = e["estimates"][0]["tokens_per_second"]
    rows.append((tag, t1 - t0, peak, total, pkg, w, kv, io, tok, ch))
base = rows[0]
print("build        wall s (×base)   peak anon GiB   set GB (packages)   per decode step: weights / KV in+out / other I/O MB   iPhone 17 Pro estimate tok/s")
for tag, s, peak, total, pkg, w, kv, io, tok, _ in rows:
    print(f"{tag:<12} {s:6.1f} ({s/base[1]:.2f}×)   {peak:6.2f}          {total/1e9:5.2f} ({pkg/1e9:.2f})        "
          f"{w/1e6:8.1f} / {kv/1e6:7.1f} / {io/1e6:6.2f}                        {tok:5.1f}")
for tag, *_, ch in rows:
    print(f"  {tag} per chunk (weights / KV / other I/O, MB): " +
          "; ".join(f"{c['name']} {c['weight_bytes']/1e6:.1f} / {c['kv_bytes']/1e6:.1f} / {c['other_io_bytes']/1e6:.2f}" for c in ch))
PY
