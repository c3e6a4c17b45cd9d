#!/usr/bin/env bash
# On the GPU machine, after build_and_test.sh: plan-building cost against cuDNN dense attention
# at the Wan2.1-1.3B shape (1x12x32760x128, bf16), 10% of the 128x64 blocks kept.
#   bash bench/device/plan_cost.sh [commit]     -> $OUT/plan-h100.jsonl
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${OUT:-$ROOT/out/device}"
BUILD="${BUILD_DIR:-$ROOT/build-device}"
mkdir -p "$OUT"
"$BUILD/bench/plan_cost" --tokens 32760 --heads 12 --density 0.10 --commit "${1:-unknown}" --out "$OUT/plan-h100.jsonl"
