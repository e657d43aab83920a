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
  case "$name" in f16) ;; *) [ -n "${ONLY:-}" ] && [[ "$name" != *$ONLY* ]] && return 0;; esac
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
run "kivi k8 v8 (q8k8v)"        --kv q8k8v
run "kivi k4 v4 (q4k4v)"        --kv q4k4v
run "kivi k4 v4 + hadamard"     --kv-layer q4k4v,rotate
run "kivi k4 v4 g64"            --kv-layer q4k4v,group=64
run "kivi k4 v4 g64 + hadamard" --kv-layer q4k4v,group=64,rotate
run "kivi k4 v3 g64"            --kv-layer q4k3v,group=64
run "kivi k4 v3 g64 + hadamard" --kv-layer q4k3v,group=64,rotate
run "kivi k4 v2 (q4k2v)"        --kv q4k2v
run "kivi k3 v3 (q3k3v)"        --kv q3k3v
run "kivi k2 v2 (q2k2v)"        --kv q2k2v
run "kivi k2 v2 + hadamard"     --kv-layer q2k2v,rotate
run "q4_0 + hadamard"           --kv-layer q4_0,rotate
run "window 1024 + 4 sinks"    --kv-window 1024 --kv-sinks 4
run "window 512 + 4 sinks"     --kv-window 512 --kv-sinks 4
run "window 512, no sinks"     --kv-window 512
run "window 256 + 4 sinks"     --kv-window 256 --kv-sinks 4
