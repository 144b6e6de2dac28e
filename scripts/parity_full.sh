#!/usr/bin/env bash
# Full-size parity without goldens: a chunk set built from a random-weight checkpoint with the real
# shapes (`gemma-convert synth`, well-conditioned weights) against our streamed reference forward.
#
#   scripts/parity_full.sh MODEL VARIANT [PRECISION] [WORK_DIR]
#     MODEL      e2b | e4b               (fixtures/configs/gemma-4-<model>.json; CONFIG=path overrides)
#     VARIANT    swa4 | merged | stateful | …  (any --variant; stateful sets are built with
#                prefill_b:16 and their prompt goes in 16-row batches, as the engine sends it)
#     PRECISION  fp32 (default) | fp16   (--nbits 0 either way)
#     WORK_DIR   default target/parity-full
#
# What it runs, in one go:
#   1. synth the checkpoint into WORK_DIR/ckpt-MODEL unless it exists (E2B 9.3 GB, E4B 15 GB);
#   2. build VARIANT at ctx 1024 with --functions decode,prefill:576 (timed);
#   3. the streamed reference alone (`gemma-convert run`) on the prompt + 16 greedy tokens, sampling
#      its peak anonymous memory;
#   4. `gemma-convert parity --prefill` on a 640-token prompt (BOS + deterministic ids): positions
#      0–575 in one batched prefill call per chunk (compared at 575, past the 512-key window), the
#      K/V written back into the decode caches, positions 576–639 through decode_q1, then 16 greedy
#      decode steps — 81 compared positions; peak anonymous memory sampled;
#   5. a summary: max |Δlogit|, top-1 and mean KL per position range.
# The set is deleted afterwards (KEEP_SET=1 keeps it); the checkpoint is kept for the next variant
# (delete WORK_DIR when done). Disk: checkpoint + 2 × the set's weights (decode and prefill packages
# each hold them: E2B fp32 2 × 9.1 GB, E4B fp32 2 × 18.7 GB; fp16 half of that) + the int8 side
# tables (2.8 / 3.5 GB; `parity` verifies the whole set first, so they stay although the run reads
# the checkpoint's exact embeddings, `--embeddings checkpoint`).
# Heavy on a 2-core machine: it runs under `nice`.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:?usage: scripts/parity_full.sh e2b|e4b VARIANT [fp32|fp16] [WORK_DIR]}"
variant="${2:?usage: scripts/parity_full.sh e2b|e4b VARIANT [fp32|fp16] [WORK_DIR]}"
precision="${3:-fp32}"
work="${4:-target/parity-full}"
config="${CONFIG:-fixtures/configs/gemma-4-$model.json}"
target="${CARGO_TARGET_DIR:-target}"
py="${GEMMA_CONVERT_PYTHON:-python3}"
prompt_len=640
prefill=576
decode=16
ctx=1024

cargo build --release -q -p gemma-convert
bin="$target/release/gemma-convert"
mkdir -p "$work"
ckpt="$work/ckpt-$model"
set_dir="$work/$model-$variant-$precision"
tag="$model-$variant-$precision"

# peak RssAnon (kB) of a command, written to $2
sample() {
    local out=$1
    shift
    "$@" &
    local pid=$! peak=0 a
    while kill -0 "$pid" 2>/dev/null; do
        a=$(awk '/RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        if [ -n "$a" ] && [ "$a" -gt "$peak" ]; then peak=$a; fi
        sleep 0.2
    done
    local rc=0
    wait "$pid" || rc=$?
    echo "$peak" > "$out"
    return $rc
}

if [ ! -f "$ckpt/config.json" ]; then
    nice "$bin" synth --config "$config" --out "$ckpt"
fi
vocab=$("$py" -c "import json,sys; c=json.load(open(sys.argv[1])); print((c.get('text_config') or c)['vocab_size'])" "$config")
ids=$("$py" -c "import sys; n,v=int(sys.argv[1]),int(sys.argv[2]); print(','.join(['2']+[str(3+(i*7919+13)%(v-3)) for i in range(n-1)]))" "$prompt_len" "$vocab")

case $variant in
    stateful*) functions="decode,prefill_b:16" ;;
    *) functions="decode,prefill:$prefill" ;;
esac

rm -rf "$set_dir"
t0=$(date +%s.%N)
nice "$bin" --model "$ckpt" --variant "$variant" --nbits 0 --precision "$precision" --ctx $ctx \
    --functions "$functions" --out "$set_dir" --quiet
t1=$(date +%s.%N)
# the reference alone does not depend on the set: one run per checkpoint (kept in WORK_DIR)
if [ ! -s "$work/$model.run.json" ]; then
    sample "$work/$model.run.peak" nice "$bin" run --model "$ckpt" --ids "$ids" --max-new-tokens $decode \
        --json > "$work/$model.run.json.tmp"
    mv "$work/$model.run.json.tmp" "$work/$model.run.json"
fi
t2=$(date +%s.%N)
rc=0
sample "$work/$tag.parity.peak" nice "$bin" parity --model "$ckpt" --chunks "$set_dir" --ids "$ids" \
    --decode-tokens $decode --prefill --embeddings checkpoint --json > "$work/$tag.parity.json" || rc=$?
t3=$(date +%s.%N)

"$py" - "$work" "$tag" "$prefill" "$prompt_len" "$t0" "$t1" "$t2" "$t3" "$(du -sb "$set_dir" | cut -f1)" <<'PY'
import json, sys
work, tag, n, p = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t0, t1, t2, t3 = map(float, sys.argv[5:9])
set_bytes = int(sys.argv[9])
r = json.load(open(f"{work}/{tag}.parity.json"))
model = tag.split("-")[0]
run = json.load(open(f"{work}/{model}.run.json"))
peak_run = int(open(f"{work}/{model}.run.peak").read()) / 2**20
peak_par = int(open(f"{work}/{tag}.parity.peak").read()) / 2**20
per = r["per_position"]
stateful = tag.split("-")[1].startswith("stateful")
ranges = [
    (f"prompt 0..{p-1} in prefill_b16 batches (every row compared)", lambda q: q < p),
    (f"greedy decode {p}..{p+15}", lambda q: q >= p),
] if stateful else [
    (f"prefill, position {n-1} (one batched call over 0..{n-1})", lambda q: q == n - 1),
    (f"prompt {n}..{p-1} via decode_q1 (written-back caches, past the window)", lambda q: n <= q < p),
    (f"greedy decode {p}..{p+15}", lambda q: q >= p),
]
print(f"{tag}: set {set_bytes/1e9:.1f} GB built in {t1-t0:.0f} s; reference alone {f'{t2-t1:.0f} s' if t2-t1 > 1 else 'reused'}, "
      f"peak anon {peak_run:.2f} GiB; parity {t3-t2:.0f} s, peak anon {peak_par:.2f} GiB")
print(f"  overall: {r['positions']} positions, max |Δlogit| {r['max_abs_logit_diff']:.3e}, "
      f"top-1 {100*r['top1_agreement']:.1f} %, mean KL {r['mean_kl']:.2e}, "
      f"token_id = argmax {r['token_id_is_argmax']} → {'PASS' if r['pass'] else 'FAIL'} ({r['tolerance']})")
for name, f in ranges:
    sel = [x for x in per if f(x["position"])]
    if not sel:
        continue
    mx = max(x["max_abs"] for x in sel)
    t1p = 100 * sum(x["top1_agree"] for x in sel) / len(sel)
    kl = sum(x["kl"] for x in sel) / len(sel)
    print(f"  {name}: {len(sel)} positions, max |Δlogit| {mx:.3e}, top-1 {t1p:.1f} %, mean KL {kl:.2e}")
print(f"  reference greedy ids (first 8): {run['generated_ids'][:8]}")
PY
if [ "${KEEP_SET:-0}" != 1 ]; then rm -rf "$set_dir"; fi
exit $rc
