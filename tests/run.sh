#!/usr/bin/env bash
# Runs every built test binary; model-dependent tests skip (loudly) when the
# default model is absent, unless KVS_REQUIRE_MODELS=1, where they fail.
# Each program's output is also kept, and a failing program's failure lines
# ("CHECK failed", "FAIL", "FAILED") are repeated at the end, so a log cut to
# its last lines still names the checks that failed. Each program's wall time
# is listed at the end, slowest first, to keep CI's time in view.
set -u
BUILD=${BUILD:-build}
fail=0; n=0
errs=$(mktemp -d)
trap 'rm -rf "$errs"' EXIT
summary=()
times=()
run_one() { # name, command...
  local name=$1; shift
  n=$((n+1))
  local log="$errs/$n.log"
  local t0=$SECONDS
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  times+=("$((SECONDS-t0)) $name")
  if [ "$rc" -ne 0 ]; then
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
echo "wall seconds per program (slowest first):"
printf '%s\n' "${times[@]}" | sort -rn | head -12 | sed 's/^/  /'
if [ "$fail" -gt 0 ]; then
  echo "failures:"
  printf '%s\n' "${summary[@]}"
fi
echo "$((n-fail))/$n test programs passed"
[ "$fail" -eq 0 ]
