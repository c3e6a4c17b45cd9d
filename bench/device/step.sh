#!/usr/bin/env bash
# On the GPU machine, after build_and_test.sh: one Wan2.1-1.3B denoising step, ditkit against
# diffusers eager and torch.compile'd, same random weights, same run.
#   carry: [".deps", ".whl"]   (.whl: the diffusers and importlib_metadata wheels, see README)
#   bash bench/device/step.sh [commit]    -> $OUT/step-h100.jsonl
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${OUT:-$ROOT/out/device}"
BUILD="${BUILD_DIR:-$ROOT/build-device}"
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$ROOT"/.whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 "$ROOT/bench/device/step_diffusers.py" /tmp/wan13b /tmp/diffusers_step.json "$OUT/step-diffusers-kernels.txt"
"$BUILD/bench/step_time" --model /tmp/wan13b --diffusers /tmp/diffusers_step.json --commit "${1:-unknown}" \
  --out "$OUT/step-h100.jsonl" --trace /tmp/step-trace.json
python3 "$ROOT/bench/device/kernel_table.py" /tmp/step-trace.json 40 | tee "$OUT/step-kernels.txt"
