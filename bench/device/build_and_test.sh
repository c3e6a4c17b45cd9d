#!/usr/bin/env bash
# On the GPU machine (device tool): configure and build with the machine's torch, FFmpeg and
# OpenCV off, run every test binary (the CUDA tests run there), then compute-sanitizer memcheck
# over the CUDA tests. Logs go to $OUT. Needs .deps (scripts/pack_device_deps.sh) carried.
#   run: bash bench/device/build_and_test.sh      carry: [".deps"]
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${OUT:-$ROOT/out/device}"
BUILD="${BUILD_DIR:-$ROOT/build-device}"
mkdir -p "$OUT"
t0=$(date +%s)
status=0
step() { echo "== $* ($(( $(date +%s) - t0 )) s)"; }

{
  step "machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  nvcc --version | tail -1

  step "configure"
  cutlass="$(bash "$ROOT/bench/device/unpack_cutlass.sh" "$BUILD")" || exit 1
  # Tests and benches on explicitly: a build dir another script configured (adherence.sh, train.sh
  # turn them off) keeps its cached OFF otherwise, and there would be no ditkit_tests to run.
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDITKIT_TESTS=ON -DDITKIT_BENCH=ON \
    -DDITKIT_FFMPEG=OFF -DDITKIT_OPENCV=OFF -DDITKIT_CUTLASS_DIR="$cutlass" \
    -DDITKIT_GTEST_SOURCE="$ROOT/.deps/googletest" -DDITKIT_EXTRA_INCLUDE="$ROOT/.deps/include" || exit 1
  step "build"
  cmake --build "$BUILD" -j "$(nproc)" || exit 1

  step "tests"
  "$BUILD/tests/ditkit_tests" --gtest_output="xml:$OUT/tests.xml" || status=1
  step "compute-sanitizer memcheck (CUDA tests)"
  compute-sanitizer --tool memcheck --error-exitcode 3 "$BUILD/tests/ditkit_tests" --gtest_filter='*Cuda*' || status=1
  step "done, status $status"
  exit "$status"
} 2>&1 | tee "$OUT/build_and_test.log"
exit "${PIPESTATUS[0]}"
