#!/usr/bin/env bash
# The main job on the default model: generate text with the standard f16 KV
# cache and with compressed caches, then show what each scheme holds at the
# model's full 8K context (the planner's numbers are the allocator's).
set -euo pipefail
cd "$(dirname "$0")/.."
K=${BUILD:-build}/kvslim
M=models/smollm2-135m-instruct-q4_1.gguf
# a long prompt, so the caches differ: ~1,400 tokens of license text and a question
P=$(mktemp); trap 'rm -f "$P"' EXIT
{ head -c 6000 /usr/share/common-licenses/GPL-3; printf '\n\nIn one sentence: what does this license require when you distribute the software?'; } > "$P"
echo "== model"
$K info -m "$M"
echo
echo "== generation from a ~1,400-token prompt, f16 KV cache (greedy, chat template)"
$K run -m "$M" --chat --temp 0 -n 60 -f "$P"
echo
echo "== the same with keys 4 bits per channel, values 3 bits per token (group 64, Hadamard-rotated)"
$K run -m "$M" --chat --temp 0 -n 60 -f "$P" --kv-layer q4k3v,group=64,rotate
echo
echo "== the same with a 256-token window + 4 sink tokens"
$K run -m "$M" --chat --temp 0 -n 60 -f "$P" --kv-window 256 --kv-sinks 4
echo
echo "== KV cache at the full 8K context, per scheme (kvslim plan; perplexity costs: BENCHMARKS.md)"
$K plan -m "$M" --ctx 8k --compare f16,q8_0,q4k2v,window=1024+4,latent:r=64/q8_0
