#!/usr/bin/env bash
# README's first command: set up, build, and generate a video with the shipped model.
#   scripts/gen.sh [dit-gen flags...]   (default: a sample prompt into out/clip.mp4)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
BUILD_DIR="${DITKIT_BUILD_DIR:-$ROOT/build}"
if [ $# -eq 0 ]; then
  mkdir -p "$ROOT/out"
  set -- --prompt "a red circle moves slowly left on a blue background" --out "$ROOT/out/clip.mp4"
fi
exec "$BUILD_DIR/tools/dit-gen" "$@"
