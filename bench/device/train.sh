#!/usr/bin/env bash
# On the GPU machine: build dit-train, train the shipped model ("shapes" preset) for what is left
# of the call's 10 minutes, continuing the run when one exists, and export the shipped folder.
#   run: bash bench/device/train.sh      carry: [".deps"] (and "out/bin", see below)
#
# The run folder ($RUN, under the git-ignored out/) stays on the machine while it is warm, and so
# does the build, so a call made right after the last one continues the run without rebuilding.
# Back in $OUT: train.log, loss.jsonl, settings.json, shipped-model.tar (assets/default-model
# layout, EMA weights in bf16; in parts shipped-model.tar.part-* when over 15 MiB) and, when it fits what a call may return, the checkpoint split in
# parts (checkpoint.safetensors.part-*; `cat` them into out/train-shapes/checkpoint.safetensors
# and carry out/train-shapes to continue on a fresh machine). The shapes preset's checkpoint
# (~124 MB) does not fit. To go on from an export on a fresh machine instead (fresh optimiser
# moments and schedule, not an exact resume): unpack shipped-model.tar under out/init/, carry
# "out/init", and set TRAIN_ARGS="--init-from out/init/default-model --seed 1" (another seed,
# other clips) with a TRAIN_RUN folder of its own.
#
# Settings (environment): TRAIN_STEPS (4000: the cosine schedule's length; a call trains as many
# as fit, later calls go on), TRAIN_WARMUP (200), TRAIN_BATCH (32), TRAIN_SEED (0), TRAIN_LR (3e-4),
# TRAIN_ARGS (more dit-train flags; later flags win), CALL_LIMIT_S (600: the device call's limit),
# MARGIN_S (75: left for start-up, export and copying), TRAIN_CONTINUE (set it on a call meant to
# continue: it stops at once if the machine went cold and the run is gone). If training fails
# before its first checkpoint it is tried again with --precision fp32; a later failure exports
# the last checkpoint.
set -uo pipefail
t0=$(date +%s)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${OUT:-$ROOT/out/device}"
BUILD="${BUILD_DIR:-$ROOT/build-device-train}"
RUN="${TRAIN_RUN:-$ROOT/out/train-shapes}"
mkdir -p "$OUT" "$RUN"
step() { echo "== $* ($(( $(date +%s) - t0 )) s)"; }

{
  step "machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  git -C "$ROOT" log -1 --format='commit %h %s' 2>/dev/null

  if [ -n "${TRAIN_CONTINUE:-}" ] && [ ! -f "$RUN/checkpoint.safetensors" ]; then
    echo "TRAIN_CONTINUE is set but $RUN holds no checkpoint (a fresh machine): not starting the run over"
    exit 3
  fi
  # A dit-train built elsewhere and carried in saves the build (minutes of the call): build it
  # from the commit being trained, `cp build/tools/dit-train out/bin/`, and carry "out/bin" too.
  # It needs only LibTorch and the CUDA runtime, found here through LD_LIBRARY_PATH.
  BIN="$BUILD/tools/dit-train"
  carried="${TRAIN_BIN:-$ROOT/out/bin/dit-train}"
  if [ -x "$carried" ]; then
    torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
    export LD_LIBRARY_PATH="$torch_lib:/usr/local/cuda/lib64:/usr/local/cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    if "$carried" --help >/dev/null 2>&1; then
      BIN="$carried"
      step "using the carried $carried"
    else
      echo "the carried $carried does not start here:"; "$carried" --help 2>&1 | tail -3
    fi
  fi
  if [ "$BIN" = "$BUILD/tools/dit-train" ]; then
    step "configure and build dit-train"
    cutlass="$(bash "$ROOT/bench/device/unpack_cutlass.sh" "$BUILD")" || exit 1
    cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DDITKIT_FFMPEG=OFF -DDITKIT_OPENCV=OFF -DDITKIT_TESTS=OFF -DDITKIT_BENCH=OFF -DDITKIT_CUTLASS_DIR="$cutlass" \
      -DDITKIT_EXTRA_INCLUDE="$ROOT/.deps/include" >"$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
    cmake --build "$BUILD" -j "$(nproc)" --target dit-train || exit 1
  fi

  # What is left of the call, less the margin, in minutes.
  minutes_left() { awk -v s="$(( ${CALL_LIMIT_S:-600} - ($(date +%s) - t0) - ${MARGIN_S:-75} ))" 'BEGIN { printf "%.2f", s / 60 }'; }
  train() {  # extra dit-train flags
    # shellcheck disable=SC2086  # TRAIN_ARGS is a list of flags
    "$BIN" --model-config shapes --device cuda --out "$RUN" --resume \
      --steps "${TRAIN_STEPS:-4000}" --warmup "${TRAIN_WARMUP:-200}" --batch "${TRAIN_BATCH:-32}" \
      --seed "${TRAIN_SEED:-0}" --lr "${TRAIN_LR:-3e-4}" --export "$RUN/default-model" "$@" ${TRAIN_ARGS:-}
  }
  step "train for at most $(minutes_left) minutes"
  train --max-minutes "$(minutes_left)"
  status=$?
  if (( status != 0 )) && [ ! -f "$RUN/checkpoint.safetensors" ]; then
    # Nothing saved: most likely the bf16 path failed on this GPU; fp32 is slower but has run on the CPU.
    step "failed before a checkpoint; again in fp32 for at most $(minutes_left) minutes"
    train --max-minutes "$(minutes_left)" --precision fp32
    status=$?
  elif (( status != 0 )); then
    step "failed; exporting the EMA of the last checkpoint"
    train --steps 0
  fi

  step "collect"
  for f in loss.jsonl settings.json; do [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"; done
  if [ -d "$RUN/default-model" ] && tar -C "$RUN" -cf "$OUT/shipped-model.tar" default-model; then
    du -h "$OUT/shipped-model.tar"
    # A returned file holds at most 16 MiB: a larger export (9 layers: ~22 MB) comes back in parts.
    if (( $(stat -c %s "$OUT/shipped-model.tar") > 15 * 1024 * 1024 )); then
      split -b 15M -d "$OUT/shipped-model.tar" "$OUT/shipped-model.tar.part-" && rm "$OUT/shipped-model.tar"
      echo "export returned in parts: cat shipped-model.tar.part-* > shipped-model.tar"
    fi
  fi
  # What comes back: at most 8 files of 16 MiB, 64 MiB in all (the log and the files above included).
  ckpt="$RUN/checkpoint.safetensors"
  if [ -f "$ckpt" ]; then
    size=$(stat -c %s "$ckpt")
    if (( size <= 3 * 15 * 1024 * 1024 )); then
      split -b 15M -d "$ckpt" "$OUT/checkpoint.safetensors.part-"
      echo "checkpoint ($size bytes) returned in parts"
    else
      echo "checkpoint ($size bytes) is too large to return; it stays in $RUN while the machine is warm"
    fi
  fi
  step "done, dit-train status $status"
  exit "$status"
} 2>&1 | tee "$OUT/train.log"
exit "${PIPESTATUS[0]}"
