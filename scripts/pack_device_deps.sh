#!/usr/bin/env bash
# Fills .deps/ (git-ignored) with the source-only dependencies the GPU machine lacks and cannot
# download: GoogleTest's sources and the nlohmann/json and CLI11 headers, taken from this
# machine's Debian packages, and the CUTLASS/CuTe headers from .venv's nvidia-cutlass wheel
# (compressed: 26 MB of headers are 1 MB; bench/device/build_and_test.sh unpacks them). Pass
# `.deps` in the device tool's carry list.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/.deps"
for f in /usr/src/googletest /usr/include/nlohmann /usr/include/CLI; do
  [ -e "$f" ] || { echo "missing $f: run scripts/setup.sh first" >&2; exit 1; }
done
rm -rf "$DEPS"
mkdir -p "$DEPS/include"
cp -r /usr/src/googletest "$DEPS/googletest"
cp -r /usr/include/nlohmann /usr/include/CLI "$DEPS/include/"
cutlass="$("$ROOT/.venv/bin/python" -c "import cutlass_library, os; print(os.path.dirname(cutlass_library.__file__))")"
tar -cJf "$DEPS/cutlass-include.tar.xz" -C "$cutlass/source" include
du -sh "$DEPS"
