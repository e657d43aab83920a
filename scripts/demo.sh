#!/usr/bin/env bash
# The main job on the default model: generate text, then show what the KV
# cache costs and what compressed schemes would save at the full context.
set -euo pipefail
cd "$(dirname "$0")/.."
K=${BUILD:-build}/kvslim
M=models/smollm2-135m-instruct-q4_1.gguf
echo "== model"
$K info -m "$M"
echo
echo "== generation (chat template, greedy)"
$K run -m "$M" --chat --temp 0 -n 96 -p "Explain in two sentences why long contexts need a lot of memory."
echo
echo "== KV cache at the model's full 8K context: what each scheme would hold"
$K plan -m "$M" --ctx 8k --compare f16,q8_0,q4k2v,window=1024+4,latent:r=64/q8_0
