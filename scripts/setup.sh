#!/usr/bin/env bash
# Installs what ditkit needs (Debian packages, LibTorch in .venv), then configures and builds.
# Idempotent: a second run only rebuilds what changed. Sourced by gen.sh and test.sh.
#   DITKIT_BUILD_DIR  build folder (default: build)
#   DITKIT_JOBS       parallel compile jobs (default: number of cores)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${DITKIT_BUILD_DIR:-$ROOT/build}"
JOBS="${DITKIT_JOBS:-$(nproc)}"
TORCH_VERSION="2.11.0"
CUTLASS_VERSION="4.2.0.0"

log() { printf '\033[1m[ditkit]\033[0m %s\n' "$*" >&2; }

# libgloo-dev: the Gloo headers that c10d's CPU backend header includes (sequence parallelism on
# CPU ranks, tested here; the library itself is inside libtorch_cpu).
APT_PACKAGES=(
  cmake ninja-build pkg-config ccache python3-venv
  libavformat-dev libavcodec-dev libavutil-dev libswscale-dev ffmpeg
  libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev libopencv-videoio-dev
  libsentencepiece-dev nlohmann-json3-dev libcli11-dev zlib1g-dev
  googletest libgtest-dev libbenchmark-dev clang libclang-rt-14-dev
  libgloo-dev
)

install_debian_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

install_libtorch() {
  local py="$ROOT/.venv/bin/python"
  if [ -x "$py" ] && "$py" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    return 0
  fi
  # The wheels are downloaded whole before they are installed: ~3 GB of downloads plus ~5 GB installed.
  local need_gb=8 free_gb
  free_gb=$(df -Pk "$ROOT" | awk 'NR == 2 { print int($4 / 1048576) }')
  if [ "$free_gb" -lt "$need_gb" ]; then
    log "error: installing torch==$TORCH_VERSION needs about $need_gb GB free on $(df -P "$ROOT" | awk 'NR == 2 { print $6 }'); only $free_gb GB is free"
    exit 1
  fi
  log "installing torch==$TORCH_VERSION into .venv (LibTorch for the C++ build; ~3 GB with its CUDA runtime wheels)"
  [ -x "$py" ] || python3 -m venv "$ROOT/.venv"
  "$ROOT/.venv/bin/pip" install -q --no-cache-dir --upgrade pip
  # No wheel cache: it would keep another ~3 GB on disk after the install.
  "$ROOT/.venv/bin/pip" install -q --no-cache-dir "torch==$TORCH_VERSION"
}

# CUTLASS/CuTe headers for the Hopper attention kernel (header-only; the wheel is ~6 MB).
install_cutlass() {
  local py="$ROOT/.venv/bin/python"
  "$py" -c "import cutlass_library" 2>/dev/null && return 0
  log "installing nvidia-cutlass==$CUTLASS_VERSION into .venv (CUTLASS/CuTe headers)"
  "$ROOT/.venv/bin/pip" install -q --no-cache-dir --no-deps "nvidia-cutlass==$CUTLASS_VERSION"
}

configure_and_build() {
  export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
  export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"
  if [ ! -f "$BUILD_DIR/build.ninja" ]; then
    log "configuring into $BUILD_DIR"
    cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
  fi
  log "building (${JOBS} jobs)"
  cmake --build "$BUILD_DIR" -j "$JOBS"
}

setup_start=$(date +%s)
install_debian_packages
install_libtorch
install_cutlass
configure_and_build "$@"
log "set-up and build took $(( $(date +%s) - setup_start )) s"
