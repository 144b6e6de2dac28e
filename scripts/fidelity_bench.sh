#!/usr/bin/env bash
# The fp16 fidelity benchmark over fixtures × variants × weights (docs/FIDELITY.md): builds each
# chunk set with the release binary, makes (or reuses) the fp64 / HF-fp16 reference of its checkpoint
# with scripts/fidelity_reference.py, runs `gemma-convert fidelity --json` and prints one markdown
# table row per set.
#
#   scripts/fidelity_bench.sh                      # every fixture, every variant, fp16 and INT4
#   MODELS=tiny-pal VARIANTS=swa4 NBITS=0 NUMERICS="norm-gain=multiply default" scripts/fidelity_bench.sh
#
# Environment (defaults in brackets): MODELS [tiny-e2b tiny-e2b-release tiny-gqa tiny-pal],
# VARIANTS [swa4 merged merged2 merged1 wfa flash lite], NBITS [0 4], NUMERICS [default] (values of
# the hidden build flag --numerics), N [200] sequences of S [48] tokens, SEED [0],
# PYTHON [/work/pyfix/bin/python: torch 2.15.0 + transformers 5.24.0, scripts/requirements-fixtures.txt],
# WORK [target/fidelity], BIN [a fresh `cargo build --release` binary], RESUME [unset; 1 = reuse the
# JSON reports already in WORK]. wfa is built with --fw CTX/2, flash with --flash-block 16. INT4 sets are measured twice: against the original checkpoint
# (quantisation + fp16 error) and against their own graph weights (`gemma-convert graph-weights`:
# the fp16 error alone, paired with HF fp16 on the same dequantised weights).
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${MODELS:-"tiny-e2b tiny-e2b-release tiny-gqa tiny-pal"}
VARIANTS=${VARIANTS:-"swa4 merged merged2 merged1 wfa flash lite"}
NBITS=${NBITS:-"0 4"}
NUMERICS=${NUMERICS:-default}
N=${N:-200}
S=${S:-48}
SEED=${SEED:-0}
PYTHON=${PYTHON:-/work/pyfix/bin/python}
WORK=${WORK:-target/fidelity}
CTX=64
if (( S > CTX )); then CTX=$S; fi

if [ -z "${BIN:-}" ]; then
    cargo build --release -q -p gemma-convert
    BIN=target/release/gemma-convert
fi
mkdir -p "$WORK/ref" "$WORK/sets" "$WORK/json"

reference() { # model dir → reference file path (made once per key)
    "$PYTHON" scripts/fidelity_reference.py --model "$1" --sequences "$N" --length "$S" --seed "$SEED" \
        --out "$WORK/ref" ${2:+--name "$2"} 2>/dev/null | tail -1 | sed -e 's/^cached: //' -e 's/: N=.*$//'
}

row() { # label json
    python3 - "$1" "$2" <<'EOF'
import json, sys
label, path = sys.argv[1], sys.argv[2]
j = json.load(open(path))
o, h, r = j["ours"], j["hf_fp16"], j["kl_ratio"]
g = j["kl_ratio_per_sequence"]
ci = lambda e, k=1.0, f="{:.5f}": f"{f.format(e['mean']*k)} ± {f.format((e['hi']-e['lo'])/2*k)}"
print(f"| {label} | {ci(o['kl'])} | {ci(h['kl'])} | ×{r['ratio']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}] "
      f"| ×{g['ratio']:.3f} [{g['lo']:.3f}, {g['hi']:.3f}] | {o['mean_abs']['mean']:.4f} / {h['mean_abs']['mean']:.4f} "
      f"| {o['top1']['mean']*100:.1f} % / {h['top1']['mean']*100:.1f} % |")
EOF
}

echo "| set | mean KL ours | mean KL HF fp16 | KL ratio (paired) | per sequence | mean abs Δlogit ours / HF | top-1 ours / HF |"
echo "|---|---|---|---|---|---|---|"
for m in $MODELS; do
    model=fixtures/models/$m
    ref=$(reference "$model")
    for v in $VARIANTS; do
        for nb in $NBITS; do
            for num in $NUMERICS; do
                tag="$m-$v-int$nb-${num//[=,]/_}"
                set_dir="$WORK/sets/$tag"
                label="$m $v $( ((nb == 0)) && echo fp16 || echo "INT$nb fp16")$([ "$num" = default ] || echo " ($num)")"
                if [ -n "${RESUME:-}" ] && [ -s "$WORK/json/$tag.json" ] \
                    && { ((nb == 0)) || [ -s "$WORK/json/$tag-graph.json" ]; }; then
                    row "$label vs original" "$WORK/json/$tag.json"
                    ((nb == 0)) || row "$label vs its graph weights" "$WORK/json/$tag-graph.json"
                    continue
                fi
                extra=()
                case $v in
                    wfa) extra=(--fw $((CTX / 2))) ;;
                    flash) extra=(--flash-block 16) ;;
                esac
                "$BIN" --model "$model" --variant "$v" --nbits "$nb" --ctx "$CTX" --out "$set_dir" \
                    --force --quiet --numerics "$num" "${extra[@]}"
                "$BIN" fidelity --model "$model" --chunks "$set_dir" --reference "$ref" --json \
                    >"$WORK/json/$tag.json"
                row "$label vs original" "$WORK/json/$tag.json"
                if ((nb > 0)); then
                    gw="$WORK/graph-weights/$tag"
                    rm -rf "$gw"
                    mkdir -p "$(dirname "$gw")"
                    "$BIN" graph-weights --model "$model" --chunks "$set_dir" --out "$gw" >/dev/null
                    gref=$(reference "$gw" "$m-int$nb-graph")
                    "$BIN" fidelity --model "$gw" --chunks "$set_dir" --reference "$gref" --json \
                        >"$WORK/json/$tag-graph.json"
                    row "$label vs its graph weights" "$WORK/json/$tag-graph.json"
                fi
            done
        done
    done
done
