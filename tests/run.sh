#!/usr/bin/env bash
# Runs every built test binary; model-dependent tests skip (loudly) when the
# default model is absent, unless KVS_REQUIRE_MODELS=1, where they fail.
# Each program's output is also kept, and a failing program's failure lines
# ("CHECK failed", "FAIL", "FAILED") are repeated at the end, so a log cut to
# its last lines still names the checks that failed.
set -u
BUILD=${BUILD:-build}
fail=0; n=0
errs=$(mktemp -d)
trap 'rm -rf "$errs"' EXIT
summary=()
run_one() { # name, command...
  local name=$1; shift
  n=$((n+1))
  local log="$errs/$n.log"
  "$@" 2>&1 | tee "$log"
  if [ "${PIPESTATUS[0]}" -ne 0 ]; then
    echo "FAILED: $name"; fail=$((fail+1))
    summary+=("FAILED: $name")
    while IFS= read -r line; do summary+=("  $line"); done < <(grep -E 'CHECK failed|FAIL|Error|error:' "$log" | head -20)
  fi
}
for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] || continue
  run_one "$t" "$t"
done
for t in tests/test_*.sh; do
  [ -f "$t" ] || continue
  run_one "$t" env BUILD="$BUILD" bash "$t"
done
if [ "$fail" -gt 0 ]; then
  echo "failures:"
  printf '%s\n' "${summary[@]}"
fi
echo "$((n-fail))/$n test programs passed"
[ "$fail" -eq 0 ]
