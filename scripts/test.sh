#!/usr/bin/env bash
# README's second command (and CI's): set up, build, fuzz the safetensors header parser for a
# fixed time, then run the whole test suite (ctest's summary is the last thing printed).
#   DITKIT_FUZZ_SECONDS  fuzzing time (default 30; 0 skips it)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${DITKIT_BUILD_DIR:-$ROOT/build}"
bash "$ROOT/scripts/setup.sh"
fuzz_seconds="${DITKIT_FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" -gt 0 ]; then
  BUILD_DIR="$BUILD_DIR/fuzz" bash "$ROOT/tests/fuzz/run.sh" "$fuzz_seconds"
fi
start=$(date +%s)
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "${DITKIT_JOBS:-$(nproc)}"
echo "[ditkit] tests took $(( $(date +%s) - start )) s" >&2
