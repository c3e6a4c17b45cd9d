#!/usr/bin/env bash
# On the GPU machine, after build_and_test.sh: decode 81 frames at 480x832 with the real Wan2.1
# VAE configuration (random weights), bf16, default chunking: time and peak GPU memory.
#   bash bench/device/vae.sh [commit]    -> $OUT/vae-h100.jsonl
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${OUT:-$ROOT/out/device}"
BUILD="${BUILD_DIR:-$ROOT/build-device}"
mkdir -p "$OUT"
"$BUILD/bench/vae_decode" --commit "${1:-unknown}" --out "$OUT/vae-h100.jsonl"
