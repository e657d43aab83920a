#!/usr/bin/env bash
# Under memory pressure every failure names itself: `kvslim run` under a
# range of address-space limits (ulimit -v) either succeeds or exits
# non-zero with a message on stderr, never silently and never by a signal.
# The limits step by 1000 KiB through the range where loading, the session,
# the sampler, the logits and the first KV pages run out in turn (a silent
# exit once hid in a 1 MiB window there). ASan reserves terabytes of address
# space, so a sanitizer build cannot run under ulimit -v: skipped there.
set -u
BUILD=${BUILD:-build}
K=$BUILD/kvslim
G=models/gemma-3-270m-q4_k_m.gguf
S=models/smollm2-135m-instruct-q4_1.gguf
case "$BUILD" in *san*) echo "skip test_oom_cli.sh: $BUILD is a sanitizer build (ASan cannot run under ulimit -v)"; exit 0;; esac
[ -x "$K" ] || { echo "test_oom_cli.sh: $K not built"; exit 1; }
if [ ! -f "$G" ] || [ ! -f "$S" ]; then
  if [ "${KVS_REQUIRE_MODELS:-0}" = 1 ]; then echo "FAIL test_oom_cli.sh: $G or $S missing (make models)"; exit 1; fi
  echo "skip test_oom_cli.sh: $G or $S absent (run: make models)"; exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
n=0; fail=0; failed_runs=0
# try MODEL LIMIT_KIB
try() {
  local model=$1 lim=$2
  ( ulimit -v "$lim"; exec "$K" run -m "$model" -p hi -n 2 -t 1 --temp 0 ) >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  n=$((n+1))
  if [ "$rc" -ge 128 ]; then
    echo "FAIL $model at ulimit -v $lim: killed by signal $((rc-128))"; fail=$((fail+1))
  elif [ "$rc" -ne 0 ]; then
    failed_runs=$((failed_runs+1))
    if ! grep -q '[^[:space:]]' "$tmp/err"; then
      echo "FAIL $model at ulimit -v $lim: exit $rc with nothing on stderr"; fail=$((fail+1))
    fi
  fi
}
for lim in $(seq 262000 1000 300000); do try "$G" "$lim"; done
for lim in $(seq 110000 10000 200000); do try "$S" "$lim"; done
echo "test_oom_cli.sh: $n runs under ulimit -v, $failed_runs ran out of memory, $fail without a message"
# vacuous if nothing ran out of memory
[ "$failed_runs" -gt 0 ] || { echo "FAIL test_oom_cli.sh: no run ran out of memory: lower the limits"; fail=$((fail+1)); }
[ "$failed_runs" -lt "$n" ] || echo "note: every run ran out of memory (this machine needs more): raise the limits"
[ "$fail" -eq 0 ]
