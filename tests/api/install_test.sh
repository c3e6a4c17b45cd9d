#!/usr/bin/env bash
# What an app developer does with an installed ditkit: install into a fresh prefix, build the C
# example against it through find_package(ditkit) and through pkg-config, compile a C++ file
# against ditkit.h without torch, and generate a PNG with the installed example.
#   install_test.sh BUILD_DIR [MODEL_DIR]   (without a model folder, nothing is generated)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="$1"
MODEL="${2:-}"
WORK="$BUILD/install_test"
PREFIX="$WORK/prefix"
rm -rf "$WORK"
mkdir -p "$WORK"

cmake --install "$BUILD" --prefix "$PREFIX" > "$WORK/install.log"
"$PREFIX/bin/dit-gen" --help > /dev/null  # the installed tool finds LibTorch through its run path

cmake -S "$ROOT/examples" -B "$WORK/examples" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PREFIX" \
  > "$WORK/examples-configure.log"
cmake --build "$WORK/examples" > "$WORK/examples-build.log"

PKG_CONFIG_PATH="$(dirname "$(find "$PREFIX" -name ditkit.pc)")"
export PKG_CONFIG_PATH
read -r -a flags <<< "$(pkg-config --cflags --libs ditkit)"
cc -std=c99 -Wall -Werror "$ROOT/examples/generate_png.c" "${flags[@]}" -o "$WORK/generate_png_pkgconfig"
# The C++ header alone, with no torch on the include path.
printf '#include <ditkit/ditkit.h>\nint main() { return ditkit::version().empty(); }\n' > "$WORK/version.cpp"
c++ -std=c++17 -Wall -Werror "$WORK/version.cpp" "${flags[@]}" -o "$WORK/version_cpp"
LD_LIBRARY_PATH="$(pkg-config --variable=libdir ditkit)" "$WORK/version_cpp"

if [ -n "$MODEL" ]; then
  "$WORK/examples/generate_png" --model "$MODEL" --out "$WORK/frame.png" --size 32x48 --frames 5 --steps 2
  # A PNG: the 8-byte signature, then the IHDR chunk with width 32 and height 48.
  header="$(head -c 24 "$WORK/frame.png" | od -An -tx1 | tr -d ' \n')"
  if [ "$header" != "89504e470d0a1a0a0000000d494844520000002000000030" ]; then
    echo "install_test: $WORK/frame.png is not a 32x48 PNG (first bytes $header)" >&2
    exit 1
  fi
fi
echo "install_test: ok ($PREFIX)"
