#!/usr/bin/env bash
# What `gemma-convert verify` (and the check `parity` / `bench` run first) costs on a set of E2B
# size, without building one: a tiny set gets one extra listed file of BYTES bytes (default
# 3.93 GB, the size of an E2B INT4 swa4 set at ctx 2048: weight.bin files 1.14 GB, int8 PLE table
# 2.35 GB, int8 embeddings 0.40 GB, projection and RoPE tables 0.04 GB), so verify reads and hashes
# as many bytes as it would there (the structural checks of a tiny set are cheap either way).
# Baseline in the same run: reading the same bytes with `cat` (page cache warm for both).
# Usage: scripts/bench_verify.sh [BYTES] [WORK_DIR]   (default WORK_DIR target/bench-verify; needs
# BYTES of free disk; removed at the end). GEMMA_CONVERT: the binary (default: the release build,
# built if absent).
set -euo pipefail
cd "$(dirname "$0")/.."
bytes="${1:-3930000000}"
work="${2:-target/bench-verify}"
target="${CARGO_TARGET_DIR:-target}"
bin="${GEMMA_CONVERT:-}"
if [ -z "$bin" ]; then
    cargo build --release -q -p gemma-convert
    bin="$target/release/gemma-convert"
fi
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
"$bin" --model fixtures/models/tiny-e2b --ctx 64 --out "$work/set" --quiet
head -c "$bytes" /dev/urandom > "$work/set/pad.bin"
python3 - "$work/set" <<'PY'
import hashlib, json, os, sys
d = sys.argv[1]
h = hashlib.sha256()
with open(os.path.join(d, "pad.bin"), "rb") as f:
    for b in iter(lambda: f.read(1 << 22), b""):
        h.update(b)
p = os.path.join(d, "manifest.json")
m = json.load(open(p))
m["files"].append({"path": "pad.bin", "size": os.path.getsize(os.path.join(d, "pad.bin")), "sha256": h.hexdigest()})
m["files"].sort(key=lambda e: e["path"])
open(p, "w").write(json.dumps(m, indent=2) + "\n")
PY
t0=$(date +%s.%N)
cat "$work/set/pad.bin" > /dev/null
t1=$(date +%s.%N)
"$bin" verify "$work/set" --json > "$work/verify.json"
python3 - "$work/verify.json" "$t0" "$t1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
read = float(sys.argv[3]) - float(sys.argv[2])
gb = r["hashed_bytes"] / 1e9
print(f"verify: pass={r['pass']}, {r['files']} files, sha256 of {gb:.2f} GB in {r['seconds']:.2f} s "
      f"({gb / r['seconds']:.2f} GB/s); reading the same bytes with cat: {read:.2f} s "
      f"({r['seconds'] / read:.1f}x the read)")
PY
