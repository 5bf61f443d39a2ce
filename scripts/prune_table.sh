#!/usr/bin/env bash
# The digits CNN pruned at several ratios, with and without repair, float and int8: top-1 on the
# held-out split (kiln eval), MACs and weight bytes (kiln compile --report json) and Cortex-M4
# instructions for one inference (kiln verify). Prints a Markdown table.
#
# Usage: scripts/prune_table.sh [RATIO...]     (default: 0.1 0.25 0.5)
#        ROUND_TO=4 scripts/prune_table.sh       (adds --prune-round-to 4)
# Needs a built kiln (target/release/kiln, or $KILN), jq, and the toolchains of
# scripts/setup-toolchains.sh for kiln verify.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-target/release/kiln}
command -v jq >/dev/null || { echo "prune_table.sh needs jq" >&2; exit 2; }
[ -x "$KILN" ] || { echo "no kiln at $KILN: cargo build --release first" >&2; exit 2; }
M=tests/models/digits_cnn/model.onnx
D=tests/models/data
CALIB=$D/digits_calib_x.npy
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
RATIOS=("$@")
[ ${#RATIOS[@]} -gt 0 ] || RATIOS=(0.1 0.25 0.5)

row() { # ratio repair(yes|no|-) int8(yes|no)
    local ratio=$1 repair=$2 int8=$3 flags=()
    [ "$ratio" = 0 ] || flags+=(--prune "channels=$ratio" --prune-round-to "${ROUND_TO:-1}")
    if [ "$int8" = yes ]; then
        flags+=(--quantize int8 --calibrate "$CALIB")
        [ "$repair" = no ] && flags+=(--no-repair)
    elif [ "$repair" = yes ]; then
        flags+=(--calibrate "$CALIB")
    fi
    local top1 report macs wbytes insns
    top1=$("$KILN" eval "$M" --data $D/digits_test_x.npy --labels $D/digits_test_y.npy --json "${flags[@]}" 2>/dev/null | jq -r '.top1 * 10000 | round / 100')
    rm -rf "$OUT/c"
    "$KILN" compile "$M" -o "$OUT/c" --report json "${flags[@]}" >/dev/null 2>&1
    report=$OUT/c/model.report.json
    macs=$(jq -r .macs "$report")
    wbytes=$(jq -r .weight_bytes "$report")
    insns=$("$KILN" verify "$M" --target cortex-m4 --input tests/models/digits_cnn/input_0.npy --json "${flags[@]}" 2>/dev/null | jq -r 'if .passed then .instructions else "FAIL" end')
    printf '| %s | %s | %s | %s%% | %s | %s | %s |\n' "$ratio" "$repair" "$int8" "$top1" "$macs" "$wbytes" "$insns"
}

echo "| ratio | repair | int8 | top-1 | MACs | weight bytes | Cortex-M4 instructions |"
echo "|---|---|---|---|---|---|---|"
row 0 - no
row 0 - yes
for r in "${RATIOS[@]}"; do
    for int8 in no yes; do
        for repair in no yes; do
            row "$r" "$repair" "$int8"
        done
    done
done
