#!/usr/bin/env bash
# Perplexity of the default model under each KV layout, with its KV bytes per
# token, on one text and context (the issue-3 quality table).
# usage: scripts/kv_quality.sh [TEXT] [CTX] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
F=${1:-/usr/share/common-licenses/GPL-3}; C=${2:-2048}; T=${3:-2}
K=${BUILD:-build}/kvslim
M=${MODEL:-models/smollm2-135m-instruct-q4_1.gguf}
printf "%-28s %14s %14s %10s %9s\n" layout "KV B/token@ctx" "KV MiB @ctx" ppl "vs f16"
base=""
run() {
  local name=$1; shift
  local ppl bytes
  ppl=$("$K" ppl -m "$M" -f "$F" -c "$C" -t "$T" --json "$@" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])')
  bytes=$("$K" info -m "$M" -c "$C" "$@" | sed -n 's/^KV cache:.*(\([0-9]*\) bytes)$/\1/p')
  [ -z "$base" ] && base=$ppl
  printf "%-28s %14.0f %14.2f %10.4f %+8.2f%%\n" "$name" "$(python3 -c "print($bytes/$C)")" \
    "$(python3 -c "print($bytes/1048576)")" "$ppl" \
    "$(python3 -c "print(100*($ppl/$base-1))")"
}
run "f16"                      --kv f16
run "f32"                      --kv f32
run "bf16"                     --kv bf16
run "q8_0"                     --kv q8_0
run "q4_0"                     --kv q4_0
run "window 1024 + 4 sinks"    --kv-window 1024 --kv-sinks 4
run "window 512 + 4 sinks"     --kv-window 512 --kv-sinks 4
run "window 512, no sinks"     --kv-window 512
run "window 256 + 4 sinks"     --kv-window 256 --kv-sinks 4
