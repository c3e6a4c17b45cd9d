#!/usr/bin/env bash
# On the GPU machine: generate the adherence videos of a shapes model, to be judged on a machine
# with OpenCV (the GPU machine has none):
#   run:  bash bench/device/adherence.sh [MODEL_DIR]        carry: [".deps"] (+ the model folder
#         when it is git-ignored, e.g. "out/run4")
#   then: tar -xzf adherence-<tag>.tgz && dit-adherence --judge <tag> --out <tag>.json   (here)
#
# MODEL_DIR defaults to the shipped model. Settings (environment): ADH_COUNT (40 prompts per run
# unless its flags give --count),
# ADH_RUNS (a list of "tag:dit-adherence flags" runs, default "held-out:" = held-out prompts at the
# model's own steps and guidance; e.g. ADH_RUNS='"g3:--guidance 3" "train:--split train --seed 1000"').
# Each run's videos and manifest come back as $OUT/adherence-<tag>.tgz (<tag>/NNN.y4m, prompts.json);
# keep a run to ~20 videos, as a returned file holds at most 16 MiB, and a call to 8 returned files.
set -uo pipefail
t0=$(date +%s)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${OUT:-$ROOT/out/device}"
BUILD="${BUILD_DIR:-$ROOT/build-device-adherence}"
MODEL="${1:-$ROOT/assets/default-model}"
WORK="$ROOT/out/adherence-videos"
mkdir -p "$OUT"
step() { echo "== $* ($(( $(date +%s) - t0 )) s)"; }

{
  step "machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  git -C "$ROOT" log -1 --format='commit %h %s' 2>/dev/null
  [ -d "$MODEL" ] || { echo "model folder $MODEL does not exist (carry it?)"; exit 2; }

  step "configure and build dit-adherence"
  cutlass="$(bash "$ROOT/bench/device/unpack_cutlass.sh" "$BUILD")" || exit 1
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DDITKIT_FFMPEG=OFF -DDITKIT_OPENCV=OFF -DDITKIT_TESTS=OFF -DDITKIT_BENCH=OFF -DDITKIT_CUTLASS_DIR="$cutlass" \
    -DDITKIT_EXTRA_INCLUDE="$ROOT/.deps/include" >"$OUT/adherence-configure.log" 2>&1 ||
    { tail -30 "$OUT/adherence-configure.log"; exit 1; }
  cmake --build "$BUILD" -j "$(nproc)" --target dit-adherence || exit 1

  rm -rf "$WORK" && mkdir -p "$WORK"
  runs=("held-out:")
  [ -n "${ADH_RUNS:-}" ] && eval "runs=($ADH_RUNS)"  # a quoted list, as written above
  status=0
  for run in "${runs[@]}"; do
    tag="${run%%:*}" flags="${run#*:}"
    step "generate '$tag' ($flags)"
    mkdir -p "$WORK/$tag"
    # A run's own --count wins over ADH_COUNT (dit-adherence takes the flag once).
    count=(--count "${ADH_COUNT:-40}")
    [[ " $flags " == *" --count "* ]] && count=()
    # shellcheck disable=SC2086  # flags is a list
    "$BUILD/tools/dit-adherence" --model "$MODEL" --device cuda "${count[@]}" \
      --videos "$WORK/$tag" $flags | tail -2 || status=1
  done
  step "collect"
  # One archive a run: a call returns files of at most 16 MiB (~0.65 MB a video gzipped).
  for run in "${runs[@]}"; do
    tag="${run%%:*}"
    tar -C "$WORK" -czf "$OUT/adherence-$tag.tgz" "$tag" && du -h "$OUT/adherence-$tag.tgz"
  done
  step "done, status $status"
  exit "$status"
} 2>&1 | tee "$OUT/adherence.log"
exit "${PIPESTATUS[0]}"
