#!/usr/bin/env bash
# Regenerate a published chunk set and diff it against the previous release: the same steps as
# .github/workflows/regenerate.yml, which runs them through this script (one job per `part`, then
# `finish`), so the workflow and a local run cannot drift apart.
#
#   scripts/regenerate.sh parts        print the --only parts of $VARIANT as a JSON list (the matrix)
#   scripts/regenerate.sh part NAME    build one part into $WORK/parts/NAME
#   scripts/regenerate.sh finish       assemble $WORK/parts/* into $WORK/set, verify it, publish it
#                                      into $WORK/published, compare with $PREVIOUS
#   scripts/regenerate.sh all          every part in turn, then finish
#
# Settings (environment):
#   MODEL          checkpoint directory, or an HF repo id with a binary built with --features hub
#                  (needed by `part` and `all`)
#   VARIANT        swa4, merged (default: the app's default downloader entry) or stateful3
#   CTX            context length (default 2048)
#   NBITS          palettization bits (default 4)
#   FUNCTIONS      --functions (default decode,prefill:1024 for swa4 / merged, as the app's published
#                  sets; decode,prefill_b:8 for stateful3)
#   WORK           work directory (default target/regenerate); only gemma-convert's outputs in it
#                  are ever replaced
#   PREVIOUS       the previous release's published directory; unset or empty: no comparison
#   HF_REPO        owner/name: the published manifest carries download URLs for it
#   GEMMA_CONVERT  the gemma-convert binary (default target/release/gemma-convert, built if absent)
#
# Exit status: 0 done (and identical to $PREVIOUS when given), 1 the published set differs from
# $PREVIOUS or a check failed, 2 bad input (from gemma-convert, or a bad setting here). The
# comparison report is $WORK/compare.json.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VARIANT="${VARIANT:-merged}"
CTX="${CTX:-2048}"
NBITS="${NBITS:-4}"
WORK="${WORK:-$root/target/regenerate}"
PREVIOUS="${PREVIOUS:-}"
HF_REPO="${HF_REPO:-}"
GEMMA_CONVERT="${GEMMA_CONVERT:-$root/target/release/gemma-convert}"

die() {
    echo "regenerate: $*" >&2
    exit 2
}

parts_of() {
    case "$1" in
        swa4) echo "chunk1 chunk2 chunk3 chunk4 side" ;;
        merged) echo "chunk1 chunk2_3way chunk3_3way side" ;;
        stateful3) echo "chunk_1 chunk_2 chunk_3 side" ;;
        *) die "VARIANT=$1: publish has a layout for swa4, merged and stateful3 only" ;;
    esac
}

default_functions() {
    case "$1" in
        stateful3) echo "decode,prefill_b:8" ;;
        *) echo "decode,prefill:1024" ;;
    esac
}
FUNCTIONS="${FUNCTIONS:-$(default_functions "$VARIANT")}"
parts_of "$VARIANT" >/dev/null # a bad VARIANT stops here, in this shell

gc() {
    if [ ! -x "$GEMMA_CONVERT" ]; then
        if [ "$GEMMA_CONVERT" = "$root/target/release/gemma-convert" ]; then
            echo "regenerate: building $GEMMA_CONVERT" >&2
            (cd "$root" && cargo build --release -p gemma-convert --quiet)
        else
            die "GEMMA_CONVERT=$GEMMA_CONVERT is not an executable"
        fi
    fi
    "$GEMMA_CONVERT" "$@"
}

cmd_parts() {
    local first=1
    printf '['
    for p in $(parts_of "$VARIANT"); do
        [ $first = 1 ] || printf ','
        printf '"%s"' "$p"
        first=0
    done
    printf ']\n'
}

cmd_part() {
    local name="${1:-}"
    [ -n "$name" ] || die "part: which part? ($(parts_of "$VARIANT"))"
    case " $(parts_of "$VARIANT") " in
        *" $name "*) ;;
        *) die "part $name: not a part of $VARIANT ($(parts_of "$VARIANT"))" ;;
    esac
    [ -n "${MODEL:-}" ] || die "MODEL is not set (a checkpoint directory or an HF repo id)"
    mkdir -p "$WORK/parts"
    echo "== part $name ($VARIANT, ctx $CTX, nbits $NBITS, functions $FUNCTIONS)"
    gc --model "$MODEL" --variant "$VARIANT" --ctx "$CTX" --nbits "$NBITS" \
        --functions "$FUNCTIONS" --format mlmodelc --only "$name" \
        --out "$WORK/parts/$name" --force --quiet
}

cmd_finish() {
    local parts=()
    for d in "$WORK"/parts/*/; do
        [ -d "$d" ] && parts+=("${d%/}")
    done
    [ ${#parts[@]} -gt 0 ] || die "no parts in $WORK/parts (run \`$0 part NAME\` first)"
    echo "== assemble (${#parts[@]} parts)"
    gc assemble --out "$WORK/set" --force "${parts[@]}"
    echo "== verify"
    gc verify "$WORK/set"
    echo "== publish"
    local repo=()
    [ -z "$HF_REPO" ] || repo=(--hf-repo "$HF_REPO")
    gc publish "$WORK/set" --out "$WORK/published" --force "${repo[@]}"
    rm -f "$WORK/compare.json"
    if [ -z "$PREVIOUS" ]; then
        echo "== compare: skipped (no PREVIOUS release given)"
        return 0
    fi
    [ -d "$PREVIOUS" ] || die "PREVIOUS=$PREVIOUS is not a directory"
    echo "== compare with $PREVIOUS"
    local status=0
    gc compare "$PREVIOUS" "$WORK/published" --json >"$WORK/compare.json" || status=$?
    case $status in
        0) echo "identical to the previous release" ;;
        1) echo "the regenerated set differs from the previous release (report: $WORK/compare.json)" ;;
        *) return $status ;;
    esac
    return $status
}

case "${1:-}" in
    parts) cmd_parts ;;
    part) cmd_part "${2:-}" ;;
    finish) cmd_finish ;;
    all)
        for p in $(parts_of "$VARIANT"); do
            cmd_part "$p"
        done
        cmd_finish
        ;;
    *) die "usage: $0 parts | part NAME | finish | all (settings: see the head of this script)" ;;
esac
