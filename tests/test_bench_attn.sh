#!/usr/bin/env bash
# `kvslim bench --attn` and `--fill-random`: they run on the default model's
# schemes (f16 and a per-channel layout), print one well-formed JSON line per
# scheme and depth with positive timings (cold: several caches; --attn-hot:
# one), and reject bad option values with
# exit 2. Timings are not checked (shared, noisy machines).
set -u
K=${BUILD:-build}/kvslim
M=models/smollm2-135m-instruct-q4_1.gguf
[ -x "$K" ] || { echo "test_bench_attn.sh: $K not built"; exit 1; }
fail=0
bad() { echo "FAIL test_bench_attn.sh: $*"; fail=$((fail+1)); }
"$K" bench --attn --attn-depths 0 >/dev/null 2>&1; [ $? -eq 2 ] || bad "--attn-depths 0 not rejected with exit 2"
"$K" bench --attn --attn-time -1 >/dev/null 2>&1; [ $? -eq 2 ] || bad "--attn-time -1 not rejected with exit 2"
"$K" bench --help 2>&1 | grep -q -- "--attn-depths" || bad "--help does not describe --attn-depths"
if [ ! -f "$M" ]; then
  if [ "${KVS_REQUIRE_MODELS:-0}" = 1 ]; then bad "model $M missing"; else echo "skip test_bench_attn.sh model part: $M missing"; fi
else
  for kv in f16 q4k2v; do
    out=$("$K" bench -m "$M" -t 2 --attn --attn-depths 300,1000 --attn-time 0.02 --bw-gib 0 --kv $kv --json 2>&1)
    [ $? -eq 0 ] || bad "--attn --kv $kv failed: $out"
    n=$(printf '%s\n' "$out" | grep -cE '^\{"test": "attn@d(300|1000)", "scheme": "[^"]+", "layers": 30, "us_per_call": [0-9.]*[1-9]')
    [ "$n" -eq 2 ] || bad "--attn --kv $kv: want 2 JSON rows for 30 layers, got: $out"
    # cold by default: calls rotate over several caches (rows read from DRAM)
    printf '%s\n' "$out" | grep -qE '"cpu_us_per_call": [0-9.]*[1-9].*"caches": ([2-9]|[1-9][0-9]+)\}' || bad "--attn --kv $kv: no cpu time or one cache only: $out"
  done
  out=$("$K" bench -m "$M" -t 1 --attn --attn-hot --attn-depths 300 --attn-time 0.02 --bw-gib 0 --kv f16 --json 2>&1)
  printf '%s\n' "$out" | grep -qE '"test": "attn@d300".*"caches": 1\}' || bad "--attn-hot: want one cache: $out"
  out=$("$K" bench -m "$M" -t 1 -p 0 -d 600 -n 2 -r 1 --bw-gib 0 --kv q8_0 --fill-random --json 2>&1)
  printf '%s\n' "$out" | grep -qE '"test": "tg2@d600", "tok_s": [0-9.]*[1-9].*"fill": "random"' || bad "--fill-random: $out"
fi
[ $fail -eq 0 ] && echo "test_bench_attn.sh: ok"
[ $fail -eq 0 ]
