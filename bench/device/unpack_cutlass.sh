#!/usr/bin/env bash
# Unpacks the CUTLASS/CuTe headers carried in .deps (scripts/pack_device_deps.sh) into
# BUILD/cutlass and prints the include folder, for -DDITKIT_CUTLASS_DIR.
#   usage: bash bench/device/unpack_cutlass.sh BUILD
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$1/cutlass"
[ -f "$1/cutlass/include/cute/tensor.hpp" ] || tar -xJf "$ROOT/.deps/cutlass-include.tar.xz" -C "$1/cutlass"
echo "$1/cutlass/include"
