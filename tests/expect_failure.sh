#!/usr/bin/env bash
# expect_failure.sh MESSAGE COMMAND [ARGS...]: passes when COMMAND exits with a non-zero status
# and its output contains MESSAGE (a fixed string), so ctest can check a tool's error messages.
message="$1"
shift
output="$("$@" 2>&1)"
status=$?
printf '%s\n' "$output"
if [ "$status" -eq 0 ]; then
  echo "expect_failure: the command succeeded; expected a failure saying: $message" >&2
  exit 1
fi
if ! grep -qF -- "$message" <<<"$output"; then
  echo "expect_failure: the output lacks: $message" >&2
  exit 1
fi
