#!/usr/bin/env bash
# CLI checks for `kvslim plan`: published figures in --json/--csv output,
# --plot writes an SVG, and bad input exits non-zero with a clear message.
set -u
BUILD=${BUILD:-build}
BIN="$BUILD/kvslim"
if [ ! -x "$BIN" ]; then
  echo "skip test_plan_cli.sh: $BIN not built (the CLI main is not there yet)"
  exit 0
fi
fail=0; n=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ok()   { n=$((n+1)); }
bad()  { n=$((n+1)); fail=$((fail+1)); echo "FAIL: $*"; }

expect_out() { # desc, pattern, cmd...
  local desc=$1 pat=$2; shift 2
  local out; out=$("$@" 2>&1); local rc=$?
  if [ $rc -eq 0 ] && printf '%s' "$out" | grep -q -- "$pat"; then ok; else bad "$desc (rc=$rc): $out" ; fi
}
expect_err() { # desc, pattern, cmd...
  local desc=$1 pat=$2; shift 2
  local out; out=$("$@" 2>&1); local rc=$?
  if [ $rc -ne 0 ] && printf '%s' "$out" | grep -qi -- "$pat"; then ok; else bad "$desc (rc=$rc): $out"; fi
}

expect_out "dsv3 70272 B/token" '"kv_bytes_per_token": 70272' "$BIN" plan --preset deepseek-v3 --ctx 128k --json
expect_out "405b 516096 B/token" '"kv_bytes_per_token": 516096' "$BIN" plan --preset llama-3.1-405b --json
expect_out "8b 131072 B/token" ',131072.0,' "$BIN" plan --preset llama-3.1-8b --csv
expect_out "text table" 'max context after weights' "$BIN" plan --preset qwen3-8b --ctx 4k,32k --hw h200
expect_out "does not fit" 'DOES NOT FIT' "$BIN" plan --preset deepseek-v3 --ctx 128k --hw h200
expect_out "compare" 'mla:r=512' "$BIN" plan --preset llama-3.1-8b --compare gqa,mla:r=512,q4k2v,window=4096 --plot "$tmp/kv.svg"
if grep -q '<svg' "$tmp/kv.svg" 2>/dev/null && grep -q 'polyline' "$tmp/kv.svg"; then ok; else bad "--plot wrote no SVG"; fi
expect_out "custom hw + what-if" 'latent:r=256,window=4096' "$BIN" plan --preset qwen2.5-7b --hw custom:mem=24G,bw=1000G,price=0.5 --what-if latent:r=256,window=4096
expect_out "help" 'usage: kvslim plan' "$BIN" plan --help
expect_out "list" 'deepseek-v4-pro' "$BIN" plan --list

printf '{"num_hidden_layers": 32, "num_attention_heads": 32,' > "$tmp/trunc.json"
printf '\x00\x01garbage' > "$tmp/garbage.json"
printf '{"model_type":"llama","hidden_size":4096,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8}' > "$tmp/ok.json"
expect_out "config.json" '131072 bytes/token' "$BIN" plan --config "$tmp/ok.json"
expect_err "unknown preset" "unknown preset" "$BIN" plan --preset no-such-model
expect_err "truncated config" "truncated" "$BIN" plan --config "$tmp/trunc.json"
expect_err "garbage config" "config.json" "$BIN" plan --config "$tmp/garbage.json"
expect_err "missing config" "cannot open" "$BIN" plan --config "$tmp/nope.json"
expect_err "impossible hw" "impossible memory" "$BIN" plan --preset llama-3.1-8b --hw custom:mem=0,bw=1T
expect_err "negative bw" "bandwidth" "$BIN" plan --preset llama-3.1-8b --hw custom:mem=24G,bw=-1G
expect_err "unknown hw" "unknown hardware" "$BIN" plan --preset llama-3.1-8b --hw tpu-v9
expect_err "bad ctx" "bad context" "$BIN" plan --preset llama-3.1-8b --ctx 4k,banana
expect_err "bad what-if" "unknown what-if" "$BIN" plan --preset llama-3.1-8b --what-if frobnicate
expect_err "no source" "exactly one" "$BIN" plan
expect_err "bad gguf" "" "$BIN" plan -m "$tmp/garbage.json"

echo "test_plan_cli.sh: $((n-fail))/$n passed"
[ "$fail" -eq 0 ]
