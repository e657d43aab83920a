#!/usr/bin/env bash
# CLI behaviour on good and bad input: clear message, non-zero exit (2 for
# usage errors, 1 for failures), never a crash (exit >= 128).
set -u
K=${BUILD:-build}/kvslim
M=models/smollm2-135m-instruct-q4_1.gguf
[ -x "$K" ] || { echo "test_cli.sh: $K not built"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
# expect NAME EXIT PATTERN -- CMD...
expect() {
  local name=$1 want=$2 pat=$3; shift 4
  "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  if [ "$rc" -ne "$want" ] || ! grep -qiE -- "$pat" "$tmp/out" "$tmp/err"; then
    echo "FAIL $name: exit $rc (want $want), pattern '$pat'"; sed 's/^/    /' "$tmp/err" | head -5; fail=$((fail+1))
  else pass=$((pass+1)); fi
}
expect no-args       2 "usage"                   -- "$K"
expect unknown-cmd   2 "unknown command"         -- "$K" frobnicate
expect help          0 "commands"                -- "$K" --help
expect run-no-prompt 2 "give a prompt"           -- "$K" run
expect run-bad-flag  2 "unknown option"          -- "$K" run --bogus
expect run-bad-t     2 "bad thread count"        -- "$K" run -t abc -p hi
expect run-bad-temp  2 "bad value"               -- "$K" run --temp x -p hi
expect run-nan-temp  2 "bad value 'nan' for --temp: want a finite" -- "$K" run --temp nan -p hi
expect run-inf-temp  2 "bad value 'inf' for --temp"  -- "$K" run --temp inf -p hi
expect run-neg-temp  2 "bad value '-1' for --temp"   -- "$K" run --temp -1 -p hi
expect run-nan-top-p 2 "bad value 'nan' for --top-p" -- "$K" run --top-p nan -p hi
expect run-nan-min-p 2 "bad value 'nan' for --min-p" -- "$K" run --min-p nan -p hi
expect run-inf-rpen  2 "bad value 'inf' for --repeat-penalty" -- "$K" run --repeat-penalty inf -p hi
expect no-model      1 "cannot load model.*nonexistent" -- "$K" run -m /nonexistent.gguf -p hi
expect not-gguf      1 "cannot load model"       -- "$K" info -m README.md
expect ppl-no-file   1 "cannot open"             -- "$K" ppl -f /nonexistent.txt
expect bench-bad-d   2 "bad value"               -- "$K" bench -d 1,x
expect kv-badtype    1 "cannot use 'q5_1'"       -- "$K" run --kv q5_1 -p hi
if [ -f "$M" ]; then
  head -c 100000 "$M" > "$tmp/trunc.gguf"
  expect truncated   1 "cannot load model"       -- "$K" info -m "$tmp/trunc.gguf"
  expect ctx-full    1 "exceed the context"      -- "$K" run -m "$M" -p "Once upon a time" -c 8 -n 16
  printf 'too short' > "$tmp/short.txt"
  expect ppl-short   1 "fewer than one chunk"    -- "$K" ppl -m "$M" -f "$tmp/short.txt" -c 512
  expect run-ok      0 "generated: 8 tokens"     -- "$K" run -m "$M" -p "Once upon a time" -n 8 --temp 0 --ignore-eos -t 2
  expect chat-ok     0 "prompt: [0-9]+ tokens"   -- "$K" run -m "$M" --chat -p "Hi" -n 4 --temp 0 -t 2
  expect info-ok     0 "23040 bytes/token"       -- "$K" info -m "$M"
  expect bench-ok    0 "decode @ 16"             -- "$K" bench -m "$M" -p 16 -d 16 -n 2 -r 1 --bw-gib 0 -t 2
  expect kv-kivi     0 "generated: 8 tokens"     -- "$K" run -m "$M" -p "Once upon a time" -n 8 --temp 0 --ignore-eos --kv q4k4v -t 2
  expect kv-info     0 "layers 10-29 +shared"    -- "$K" info -m "$M" -c 64 --kv-layer 10-29:shared=9 --kv-layer 0-8:window=16+4
  expect kv-badrule  1 "kv rule"                 -- "$K" run -m "$M" -p hi --kv-layer 5:shared=7
  expect kv-budget   1 "budget"                  -- "$K" run -m "$M" -p "Once upon a time" -n 8 --kv-page 16 --kv-budget 100K
else
  echo "test_cli.sh: default model absent; model cases skipped"
  [ "${KVS_REQUIRE_MODELS:-0}" = 1 ] && fail=$((fail+1))
fi
echo "test_cli.sh: $pass/$((pass+fail)) passed"
[ "$fail" -eq 0 ]
