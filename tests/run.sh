#!/usr/bin/env bash
# Runs every built test binary; model-dependent tests skip (loudly) when the
# default model is absent, unless KVS_REQUIRE_MODELS=1, where they fail.
set -u
BUILD=${BUILD:-build}
fail=0; n=0
for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] || continue
  n=$((n+1))
  if ! "$t"; then echo "FAILED: $t"; fail=$((fail+1)); fi
done
for t in tests/test_*.sh; do
  [ -f "$t" ] || continue
  n=$((n+1))
  if ! BUILD="$BUILD" bash "$t"; then echo "FAILED: $t"; fail=$((fail+1)); fi
done
echo "$((n-fail))/$n test programs passed"
[ "$fail" -eq 0 ]
