#!/usr/bin/env bash
# On the GPU machine, after build_and_test.sh: the block-sparse kernel against cuDNN dense and
# FlexAttention at the Wan2.1 1.3B and 14B attention shapes, densities 100..5%, balanced and
# imbalanced rows; then ncu on one 10% call.
#   bash bench/device/attention.sh [commit]     -> $OUT/kernel-h100.jsonl, $OUT/ncu-*.txt
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${OUT:-$ROOT/out/device}"
BUILD="${BUILD_DIR:-$ROOT/build-device}"
mkdir -p "$OUT"
commit="${1:-unknown}"
for shape in "32760 12" "75600 40"; do
  set -- $shape
  "$BUILD/bench/attention_kernel" --tokens "$1" --heads "$2" --dim 128 --kblock 128 --commit "$commit" \
    --out "$OUT/kernel-h100.jsonl"
done
"$BUILD/bench/attention_kernel" --tokens 32760 --heads 12 --dim 128 --kblock 64 --commit "$commit" \
  --out "$OUT/kernel-h100.jsonl"
if [ "${SKIP_FLEX:-0}" != 1 ]; then
  for shape in "32760 12" "75600 40"; do
    set -- $shape
    python3 "$ROOT/bench/device/attention_flex.py" --tokens "$1" --heads "$2" --dim 128 --kblock 128 \
      --commit "$commit" --out "$OUT/kernel-h100.jsonl" 2>&1 | grep -v "^{" | tail -5
  done
fi
if [ "${SKIP_NCU:-0}" != 1 ]; then
  ncu --kernel-name regex:block_sparse_attention_kernel --launch-count 1 --section SpeedOfLight \
    --section Occupancy --section LaunchStats --section WarpStateStats \
    "$BUILD/bench/attention_kernel" --tokens 32760 --heads 12 --profile 0.10 >"$OUT/ncu-kernel-d010.txt" 2>&1
  tail -60 "$OUT/ncu-kernel-d010.txt"
fi
