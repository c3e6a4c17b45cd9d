#!/usr/bin/env bash
# Fuzzes the safetensors header parser with libFuzzer, AddressSanitizer and UBSan.
#   tests/fuzz/run.sh [seconds=30] [build folder, default $BUILD_DIR or <repo>/build-fuzz]
# Exits non-zero when the fuzzer finds a bug; the reproducing input (crash-*) is left in the
# build folder: rerun it with  <build>/fuzz_safetensors_header <crash file>.
set -euo pipefail

seconds="${1:-30}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="$(mkdir -p "${2:-${BUILD_DIR:-$root/build-fuzz}}" && cd "${2:-${BUILD_DIR:-$root/build-fuzz}}" && pwd)"

# -fno-sanitize-recover: UBSan findings abort like crashes instead of only printing.
"${CXX:-clang++}" -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$root" "$root/tests/fuzz/fuzz_safetensors_header.cpp" "$root/dit/safetensors_header.cpp" \
  -o "$build/fuzz_safetensors_header"

# The committed seeds stay untouched; the corpus the fuzzer grows lives in the build folder.
corpus="$build/corpus/safetensors_header"
mkdir -p "$corpus"
cp "$root/tests/fuzz/corpus/safetensors_header/"* "$corpus/"

# Tokens of the format, so that mutations reach deep into the validation.
cat > "$build/safetensors_header.dict" <<'DICT'
"\"dtype\""
"\"shape\""
"\"data_offsets\""
"\"__metadata__\""
"\"F64\""
"\"F32\""
"\"F16\""
"\"BF16\""
"\"I64\""
"\"I32\""
"\"I16\""
"\"I8\""
"\"U8\""
"\"BOOL\""
"\"F8_E4M3\""
"\"F8_E5M2\""
"18446744073709551615"
"9223372036854775807"
"-1"
DICT

cd "$build"  # where libFuzzer writes crash-* files
"$build/fuzz_safetensors_header" -max_total_time="$seconds" -dict="$build/safetensors_header.dict" \
  -print_final_stats=1 "$corpus"
