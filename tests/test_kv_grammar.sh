#!/usr/bin/env bash
# One KV rule grammar everywhere: every setting kvslim.h lists in
# KVS_KV_SETTINGS is named in docs/kv.md and in the CLI help, and is accepted
# by `--kv` in info, run, ppl and bench and by eval's `--kv`, which all hand
# the text to the library's one parser; quantized rows are rotated by
# default and rotate=none turns that off.
set -u
K=${BUILD:-build}/kvslim
M=models/smollm2-135m-instruct-q4_1.gguf
[ -x "$K" ] || { echo "test_kv_grammar.sh: $K not built"; exit 1; }
pass=0; fail=0
ok() { pass=$((pass+1)); }
bad() { echo "FAIL $*"; fail=$((fail+1)); }
settings=$(sed -n '/#define KVS_KV_SETTINGS/,/^$/p' include/kvslim.h | grep -o '"[^"]*"' | tr -d '"' | tr ' ' '\n' | grep -v '^$')
[ "$(echo "$settings" | wc -l)" -ge 20 ] && ok || bad "KVS_KV_SETTINGS: found only: $settings"
help=$("$K" run --help 2>&1)
# a concrete rule for each setting (some need a companion setting or a range)
example() {
  case $1 in
    qXkYv) echo q4k3v ;;
    tqB) echo tq2 tq2.5 tq3 tq3.5 tq4 ;;
    tqXkYv) echo tq4k3v tq3.5k2.5v ;;
    group=G) echo q4k3v,group=64 ;;
    recent=R) echo q4k3v,group=32,recent=64 ;;
    first=S) echo q4k3v,first=4 ;;
    clip) echo q4k3v,clip ;;
    vsym) echo q4k2v,vsym,rotate=v ;;
    'rotate[=k|v|kv|none]') echo q4_0,rotate=k q4_0,rotate=v q4_0,rotate=kv q4_0,rotate=none q4_0,rotate ;;
    'center[=none]') echo q4_0,center q4_0,center=none tq4,center=none ;;
    'window=W[+S]') echo window=64 window=64+4 ;;
    sinks=S) echo window=64,sinks=4 ;;
    page=P) echo page=64 ;;
    shared=L) echo 1-29:shared=0 ;;
    'h2o=B[+R]') echo h2o=256 h2o=256+32 ;;
    'snapkv=B[+W]') echo snapkv=256 snapkv=256+16 ;;
    noevict) echo h2o=256,noevict ;;
    *) echo "$1" ;;
  esac
}
for s in $settings; do
  name=${s%%[=[]*}
  grep -q -- "$name" docs/kv.md && ok || bad "docs/kv.md does not name '$name'"
  echo "$help" | grep -q -- "$name" && ok || bad "kvslim run --help does not name '$name'"
  if [ -f "$M" ]; then
    for r in $(example "$s"); do
      if "$K" info -m "$M" --kv "$r" >/dev/null 2>&1; then ok; else bad "info --kv $r: $("$K" info -m "$M" --kv "$r" 2>&1 | tail -1)"; fi
    done
  fi
done
if [ -f "$M" ]; then
  d=$("$K" info -m "$M" --kv q4_0); echo "$d" | grep -q "q4_0 rotated v-rotated" && ok || bad "q4_0 is not rotated by default: $d"
  d=$("$K" info -m "$M" --kv q8_0); echo "$d" | grep -q "q8_0 rotated v-rotated" && ok || bad "q8_0 is not rotated by default"
  d=$("$K" info -m "$M" --kv q4_0,rotate=none); echo "$d" | grep -q "rotated" && bad "rotate=none still rotates: $d" || ok
  d=$("$K" info -m "$M" --kv f16); echo "$d" | grep -q "rotated" && bad "f16 rotated: $d" || ok
  d=$("$K" info -m "$M" --kv q4_0); echo "$d" | grep -q "centered" && ok || bad "q4_0 keys are not centered by default: $d"
  d=$("$K" info -m "$M" --kv q4_0,center=none); echo "$d" | grep -q "centered" && bad "center=none still centers: $d" || ok
  d=$("$K" info -m "$M" --kv f16,center); echo "$d" | grep -q "centered" && bad "f16 rows centered: $d" || ok
  d=$("$K" info -m "$M" --kv q4_0 --kv-layer 0-3:rotate=v); echo "$d" | grep -q "layers 0-3 .*q4_0 v-rotated" && ok || bad "per-layer rotate=v: $d"
  T=$(mktemp); trap 'rm -f "$T"' EXIT
  head -c 3000 /usr/share/common-licenses/GPL-3 > "$T"
  "$K" run -m "$M" -t 2 -p hi -n 1 --temp 0 --kv q4_0,rotate=kv >/dev/null 2>&1 && ok || bad "run --kv q4_0,rotate=kv"
  "$K" ppl -m "$M" -t 2 -f "$T" -c 64 --kv q4_0,rotate=kv >/dev/null 2>&1 && ok || bad "ppl --kv q4_0,rotate=kv"
  "$K" bench -m "$M" -t 2 -p 8 -n 2 -d 0 -r 1 --kv q4_0,rotate=kv >/dev/null 2>&1 && ok || bad "bench --kv q4_0,rotate=kv"
  "$K" eval -m "$M" -t 2 -c 64 --chunks 1 --gen 0 -f "$T" --kv q4_0,rotate=kv --kv 0-3:h2o=32+8 >/dev/null 2>&1 && ok || bad "eval --kv q4_0,rotate=kv"
  out=$("$K" info -m "$M" --kv q4_0,rotat 2>&1); [ $? -ne 0 ] && echo "$out" | grep -q "cannot use 'rotat'" && ok || bad "a misspelt setting: $out"
else
  [ "${KVS_REQUIRE_MODELS:-0}" = 1 ] && bad "model $M missing" || echo "test_kv_grammar.sh: SKIPPED the model checks ($M absent)"
fi
echo "test_kv_grammar.sh: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
