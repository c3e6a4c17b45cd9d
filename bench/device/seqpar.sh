#!/usr/bin/env bash
# On a machine of several GPUs (nvidia-h200-x2 / -x4), after build_and_test.sh: denoising speed of
# the Wan2.1-T2V-14B DiT at 720p (random weights) on one GPU, then split over all visible GPUs by
# sequence parallelism, dense and with a sparse recipe; the goal is >= 1.8x on 2 GPUs and >= 3.4x
# on 4 (docs/multi_gpu.md).
#   bash bench/device/seqpar.sh [commit]    -> $OUT/seqpar-h200.jsonl
# NVLink multicast stays off in this shell and in every rank (seqpar_time and launch_ranks set it
# again): on the shared hosts a program that uses it can take every GPU out of service.
set -euo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${OUT:-$ROOT/out/device}"
BUILD="${BUILD_DIR:-$ROOT/build-device}"
COMMIT="${1:-unknown}"
mkdir -p "$OUT"
gpus=$(nvidia-smi --list-gpus | wc -l)
recipes=(--recipe dense --recipe 'dense@steps<20%,svg')
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
"$BUILD/bench/seqpar_time" --gpus 1 "${recipes[@]}" --baseline /tmp/seqpar-one-gpu.json --iters 3
n=2
while [ "$n" -le "$gpus" ]; do
  "$BUILD/bench/seqpar_time" --gpus "$n" "${recipes[@]}" --baseline /tmp/seqpar-one-gpu.json --iters 3 \
    --out "$OUT/seqpar-h200.jsonl" --commit "$COMMIT"
  n=$((n * 2))
done
