#!/usr/bin/env bash
# dit-train --init-from keeps the folder's caption encoder setting, shift and depth unless the
# command gives them: export a tiny model without token mixing at shift 7 with 3 layers (the
# preset has 2), start two runs from it (one with its own --shift), and read what their exports say.
#   dit_train_init_from.sh DIT_TRAIN WORK_DIR
set -euo pipefail
train=("$1" --model-config tiny --device cpu --threads 1 --batch 2 --steps 1)
work="$2"
rm -rf "$work"
"${train[@]}" --out "$work/a" --no-caption-mixing --shift 7 --layers 3 --export "$work/A"
"${train[@]}" --out "$work/b" --init-from "$work/A" --export "$work/B"
"${train[@]}" --out "$work/c" --init-from "$work/A" --shift 5 --export "$work/C"
expect() {  # file, text it must hold
  grep -q "$2" "$1" || { echo "FAIL: $1 lacks '$2':"; cat "$1"; exit 1; }
}
expect "$work/B/caption_encoder/config.json" '"token_mixing": false'
expect "$work/B/model_index.json" '"shift": 7.0'
expect "$work/C/caption_encoder/config.json" '"token_mixing": false'
expect "$work/C/model_index.json" '"shift": 5.0'
expect "$work/B/transformer/config.json" '"num_layers": 3'
expect "$work/C/transformer/config.json" '"num_layers": 3'
echo "PASS"
