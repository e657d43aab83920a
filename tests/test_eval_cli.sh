#!/usr/bin/env bash
# `kvslim eval` on good and bad input: usage errors exit 2, runtime failures
# exit 1, each with a message naming the problem; a small real run on the
# default model (-c 64, so it takes seconds) checks the table, the JSON and
# the SVG plot, and that the reference compared with itself changes nothing.
set -u
K=${BUILD:-build}/kvslim
M=models/smollm2-135m-instruct-q4_1.gguf
[ -x "$K" ] || { echo "test_eval_cli.sh: $K not built"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
expect() {
  local name=$1 want=$2 pat=$3; shift 4
  "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  if [ "$rc" -ne "$want" ] || ! grep -qiE -- "$pat" "$tmp/out" "$tmp/err"; then
    echo "FAIL $name: exit $rc (want $want), pattern '$pat'"; sed 's/^/    /' "$tmp/err" | head -5; fail=$((fail+1))
  else pass=$((pass+1)); fi
}
T=README.md
expect help         0 "usage: kvslim eval"          -- "$K" eval --help
expect no-kv        2 "at least one --kv"           -- "$K" eval -f "$T"
expect no-file      2 "text file with -f"           -- "$K" eval --kv q8_0
expect bad-flag     2 "unknown option"              -- "$K" eval --kv q8_0 -f "$T" --bogus
expect bad-passkey  2 "bad value 'x1k'"             -- "$K" eval --kv q8_0 -f "$T" --passkey x1k
expect pk-over-ctx  2 "passkey length 2048 exceeds the context -c 1024" -- "$K" eval --kv q8_0 -f "$T" -c 1024 --passkey 2k
expect bad-depth    2 "bad value '0.5,1.5' for --depths"             -- "$K" eval --kv q8_0 -f "$T" --depths 0.5,1.5
expect kv-window    2 "give each scheme whole"      -- "$K" eval --kv q8_0 --kv-window 64 -f "$T"
expect missing-text 1 "cannot open '/nonexistent.txt'" -- "$K" eval --kv q8_0 -f /nonexistent.txt
if [ -f "$M" ]; then
  printf 'too short' > "$tmp/short.txt"
  expect unknown-scheme 2 "scheme 'q5_9'.*cannot use 'q5_9'" -- "$K" eval -m "$M" --kv q5_9 -f "$T" -c 64
  expect bad-evict    2 "scheme 'h2o=8\+16'.*window \(16\) must not exceed the budget \(8\)" -- "$K" eval -m "$M" --kv h2o=8+16 -f "$T" -c 64
  expect evict-mixed  2 "different settings"          -- "$K" eval -m "$M" --kv "0-3:h2o=64;4-29:h2o=32" -f "$T" -c 64
  LONG=$(printf 'q4_0,%.0s' $(seq 100))
  expect long-rule    2 "kv rule too long"            -- "$K" eval -m "$M" --kv "$LONG" -f "$T" -c 64
  expect evict-kivi   2 "scheme 'q4k4v,h2o=64\+16'.*no layer can evict" -- "$K" eval -m "$M" --kv q4k4v,h2o=64+16 -f "$T" -c 64
  expect text-short   1 "fewer than one chunk of 64" -- "$K" eval -m "$M" --kv q8_0 -f "$tmp/short.txt" -c 64
  expect ctx-train    2 "exceeds the 8192 tokens"    -- "$K" eval -m "$M" --kv q8_0 -f "$T" -c 16k
  expect pk-short     2 "passkey length 64 is too short" -- "$K" eval -m "$M" --kv q8_0 -f "$T" -c 64 --passkey 64
  # a real run: f16 against the f16 reference must change nothing
  expect run-table    0 "^\*?f16 .* 0\.00000 .* 100\.00" -- "$K" eval -m "$M" -t 2 -c 64 --chunks 1 -f "$T" --kv f16 --kv q4_0 --kv h2o=32+8 --gen 2 --plot "$tmp/p.svg"
  grep -q "</svg>" "$tmp/p.svg" && grep -q "h2o=32+8" "$tmp/p.svg" && pass=$((pass+1)) || { echo "FAIL plot: no SVG"; fail=$((fail+1)); }
  # one rule per layer (30 rules, ~1100 characters) fits in a scheme
  PERLAYER=$(for i in $(seq 0 29); do printf '%d:q4k3v,group=64,clip,rotate=v,first=4;' "$i"; done)
  expect per-layer    0 "^\*?0:q4k3v"                 -- "$K" eval -m "$M" -t 2 -c 64 --chunks 1 -f "$T" --kv "$PERLAYER" --gen 0
  expect run-json     0 '"scheme": "q8_0".*"kl_mean"' -- "$K" eval -m "$M" -t 2 -c 256 --chunks 1 -f "$T" --kv q8_0 --passkey 256 --depths 0.5 --json
  n=$(grep -c '^{' "$tmp/out"); [ "$n" -eq 2 ] && pass=$((pass+1)) || { echo "FAIL json: $n objects, want 2 (reference + one scheme)"; fail=$((fail+1)); }
  grep -q '"passkey": {"256": ' "$tmp/out" && pass=$((pass+1)) || { echo "FAIL json: no passkey result"; fail=$((fail+1)); }
fi
echo "test_eval_cli.sh: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
