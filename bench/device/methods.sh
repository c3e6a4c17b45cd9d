#!/usr/bin/env bash
# On the GPU machine: the attention methods measured for issue 9, in one call.
#   1. each method's attention at the Wan2.1-1.3B shape against cuDNN dense (bench/method_attention.cpp)
#   2. end-to-end denoising, 50 steps at the 1.3B shape, recipes against ditkit dense (bench/denoise_time.cpp)
#   3. quality on the shipped model: dit-ab of each recipe against dense, same prompts and seeds
# Builds what it needs into $BUILD_DIR (configure as build_and_test.sh does). carry: [".deps"]
#   bash bench/device/methods.sh <commit>   -> $OUT/methods-h100.jsonl, denoise-h100.jsonl, ab/<n>/report.json
# PARTS="attention denoise quality" picks the parts to run.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${OUT:-$ROOT/out/device}"
BUILD="${BUILD_DIR:-$ROOT/build-device}"
PARTS="${PARTS:-attention denoise quality}"
mkdir -p "$OUT"
commit="${1:-unknown}"
has() { [[ " $PARTS " == *" $1 "* ]]; }

cutlass="$(bash "$ROOT/bench/device/unpack_cutlass.sh" "$BUILD")" || exit 1
# Benches on explicitly: a build dir train.sh or adherence.sh configured keeps their cached OFF otherwise.
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDITKIT_FFMPEG=OFF -DDITKIT_OPENCV=OFF \
  -DDITKIT_BENCH=ON -DDITKIT_CUTLASS_DIR="$cutlass" -DDITKIT_GTEST_SOURCE="$ROOT/.deps/googletest" \
  -DDITKIT_EXTRA_INCLUDE="$ROOT/.deps/include" >/dev/null || exit 1
cmake --build "$BUILD" -j "$(nproc)" --target method_attention denoise_time dit-ab || exit 1

# Per-method recipes at the 1.3B shape: key blocks of 128 (the kernel's faster tile), densities
# near 10% and 5% where the method has a knob for it.
if has attention; then
  "$BUILD/bench/method_attention" --commit "$commit" --out "$OUT/methods-h100.jsonl" \
    "dense:kernel=cudnn" "dense" \
    "topk:k=26:kblock=128" "topk:k=13:kblock=128" \
    "svg:kblock=128" "svg:frame_window=0:kblock=128" \
    "draft:density=0.1:kblock=128" "draft:density=0.05:kblock=128" "draft:density=0.05" "draft:density=0.02" \
    "window3d:t=1:h=6:w=8:kblock=128" \
    "paro:order=hwf:k=13:kblock=128" "paro:order=hwf.whf.fhw.wfh.hfw.fwh.hwf.whf.fhw.wfh.hfw.fwh:k=13:kblock=128" \
    "sla:keep=0.05:kblock=128" "sla:keep=0.1:kblock=128" "sla:keep=0.05" \
    "topk:k=64:kblock=128" "svg:frame_window=2:kblock=128" "draft:density=0.25" \
    "paro:order=hwf.whf.fhw.wfh.hfw.fwh.hwf.whf.fhw.wfh.hfw.fwh:k=64:kblock=128" \
    ${EXTRA_METHODS:-} \
    "reuse:every=5:inner=(topk:k=13:kblock=128)" "reuse:every=5:inner=(svg:frame_window=0:kblock=128)" \
    "reuse:every=5:inner=(draft:density=0.05)"
fi

if has denoise; then
  "$BUILD/bench/denoise_time" --commit "$commit" --out "$OUT/denoise-h100.jsonl" \
    "dense@steps<1,reuse:every=10:inner=(topk:k=13:kblock=128)" \
    "dense@steps<2,reuse:every=10:inner=(topk:k=10:kblock=128)" \
    "dense@steps<2,reuse:every=10:inner=(svg:frame_window=0:kblock=128)" \
    "dense@steps<2,reuse:every=10:inner=(draft:density=0.05)" \
    "dense@steps<10%,svg:kblock=128" \
    ${EXTRA_DENOISE:-}
fi

# The shipped model: 8x16x16 = 2,048 tokens, 16 query blocks x 32 key blocks of 64, so the
# densities differ from the 1.3B shape's; each report.json says the density that ran.
if has quality; then
  prompts=(-p "a red circle moves left on a blue background"
           -p "a green square moves right on a black background"
           -p "a yellow triangle moves up on a white background"
           -p "a blue circle moves down on a gray background")
  n=0
  mkdir -p "$OUT/ab"
  # The calibrated paro recipe with a fixed number of key blocks instead of its mass.
  paro="$ROOT/assets/default-model/paro.recipe.json"
  for k in 2 4 8; do sed "s/\"mass\":0.9/\"k\":$k/" "$paro" >"/tmp/paro_k$k.json"; done
  for recipe in "topk:k=2" "topk:k=4" "topk:k=8" "topk:k=16" "topk:mass=0.9" "topk:mass=0.95" \
                "svg" "svg:frame_window=0" "svg:frame_window=2" \
                "draft:density=0.1" "draft:density=0.05" "draft:density=0.25" "window3d" \
                "reuse:every=5:inner=(topk:k=4)" "dense@steps<10%,topk:k=4" \
                "dense@steps<2,reuse:every=10:inner=(svg:frame_window=0)" \
                "$paro" /tmp/paro_k2.json /tmp/paro_k4.json /tmp/paro_k8.json "paro:order=wfh:k=4" \
                "sla:keep=0.0625" "sla:keep=0.25" \
                "dense@steps<1,reuse:every=10:inner=(topk:k=2)" "dense@steps<1,reuse:every=10:inner=(topk:k=13)" \
                ${EXTRA_QUALITY:-}; do
    n=$((n + 1))
    echo "== quality $n: $recipe"
    "$BUILD/tools/dit-ab" --recipe "$recipe" "${prompts[@]}" --device cuda --out "$OUT/ab/$n" >"$OUT/ab/$n.log" 2>&1 \
      || { echo "dit-ab failed:"; tail -5 "$OUT/ab/$n.log"; }
    rm -f "$OUT"/ab/$n/side_by_side_*.y4m  # too large to bring back; report.json and the charts stay
  done
  python3 "$ROOT/bench/device/ab_table.py" "$OUT"/ab/*/report.json | tee "$OUT/quality-table.md"
  # The device tool brings back a limited number of files: one archive instead of many.
  tar czf "$OUT/ab.tgz" -C "$OUT" ab && rm -rf "$OUT/ab"
fi
