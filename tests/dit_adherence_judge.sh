#!/usr/bin/env bash
# dit-adherence generating on one machine and judging on another, here in one: a run that keeps
# its videos, then --judge of the folder (no model loaded) must print the same verdicts and write
# the same per-prompt report, which lists what the checker saw of each object. Its measurements
# (fill, travel) move a little: --judge reads the videos back from 4:2:0 Y4M.
#   dit_adherence_judge.sh DIT_ADHERENCE WORK_DIR
set -euo pipefail
tool="$1" work="$2"
rm -rf "$work" && mkdir -p "$work"
"$tool" --count 2 --steps 2 --videos "$work" --out "$work/run.json" > "$work/run.txt"
"$tool" --judge "$work" --out "$work/judged.json" > "$work/judged.txt"
fail() { echo "FAIL: $*"; exit 1; }
grep '^\[' "$work/run.txt" > "$work/run.verdicts" || fail "no verdicts in run.txt"
grep '^\[' "$work/judged.txt" > "$work/judged.verdicts" || fail "no verdicts in judged.txt"
diff "$work/run.verdicts" "$work/judged.verdicts" || fail "verdicts differ"
# The reports' "prompts" lists (their run settings differ: only the run names a model), less the
# measurements.
prompts() { sed -n '/^  "prompts": \[/,/^  \]/p' "$1" | grep -v -E '"(fill|travel_x|travel_y|frames_found)":'; }
prompts "$work/run.json" > "$work/run.prompts"
prompts "$work/judged.json" > "$work/judged.prompts"
grep -q '"seen": \[' "$work/run.prompts" || fail "run.json lists no seen objects"
diff "$work/run.prompts" "$work/judged.prompts" || fail "the reports' prompts differ"
# Every object seen has its fill, a share of its bounding box.
seen=$(grep -c '"colour":' "$work/run.json" || true)
fills=$(awk '/"fill":/ { v = $2 + 0; if (v > 0 && v <= 1) n++ } END { print n + 0 }' "$work/run.json")
(( seen > 0 && fills == seen )) || fail "$seen objects seen, $fills with a fill in (0, 1]"
echo "PASS"
