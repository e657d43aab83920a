#!/usr/bin/env bash
# Issue #5 frontier: KV bytes vs quality of the quantized-cache schemes on
# SmolLM2-135M and Gemma-3-270M, two Debian texts, against the f16 cache and
# llama.cpp's q4_0 KV cache on the same tokens. Writes JSON lines per run to
# $OUT (default /tmp/kvs_frontier) and prints the merged tables
# (scripts/eval_table.py). Slow: one chunk of -c tokens per text and model.
#
# usage: scripts/quality_frontier.sh [CTX] [THREADS]
#   ONLY=smollm2|gemma   one model;  PASSKEY=0  skip the passkey runs;
#   LLAMACPP=0  skip llama.cpp (needs /work/venv-ref or PY with llama-cpp-python)
# Texts: /usr/share/common-licenses/GPL-3 and linux-doc's memory-barriers.txt
# (apt install linux-doc).
set -euo pipefail
cd "$(dirname "$0")/.."
C=${1:-2048}; T=${2:-2}
K=${BUILD:-build}/kvslim
OUT=${OUT:-/tmp/kvs_frontier}; mkdir -p "$OUT"
PY=${PY:-/work/venv-ref/bin/python}
MB=$OUT/memory-barriers.txt
[ -s "$MB" ] || zcat /usr/share/doc/linux-doc-6.1/Documentation/memory-barriers.txt.gz > "$MB"
TEXTS=(/usr/share/common-licenses/GPL-3 "$MB")

# SmolLM2: 30 layers, all full attention. f16 = 23040 B/token; at 2048
# tokens 4x fewer = 5760, q4_0's bytes = 6480, 8x fewer = 2880.
SMOL=(q8_0 q4_0 "q4_0,rotate=kv"
      "q4k4v,group=64,clip,rotate=v"
      "q4k3v,group=64" "q4k3v,group=64,clip,rotate=v" "q4k3v,group=64,clip,rotate=v,first=4"
      "q3k3v,group=64" "q3k3v,group=64,clip" "q3k3v,group=64,clip,rotate=v" "q3k3v,group=64,clip,rotate=v,first=4"
      "q4k2v,group=64,clip,rotate=v"
      "q2k2v,group=64,clip,rotate=v")
# Gemma 3: layers 5, 11, 17 global (full cache), the others a 512-token
# window; bytes count every layer's KV at the context (windows hold 512).
G3="5:q4k3v,group=64,clip;11:q4k3v,group=64,clip;17:q4k3v,group=64,clip"
GEMMA=(q8_0 q4_0 "q4_0,rotate=kv" "q4_0,rotate=kv;$G3" "q8_0;$G3")

eval_model() { # name model schemes...
  local name=$1 model=$2; shift 2
  local args=(); for s in "$@"; do args+=(--kv "$s"); done
  for f in "${TEXTS[@]}"; do
    local tag; tag=$(basename "$f" .txt)
    "$K" eval -m "$model" -c "$C" --chunks 1 -t "$T" --json --gen 0 -f "$f" "${args[@]}" > "$OUT/$name.$tag.json"
    echo "== $name, $tag, -c $C"; python3 scripts/eval_table.py "$OUT/$name.$tag.json"
    if [ "${LLAMACPP:-1}" != 0 ]; then
      "$PY" scripts/llamacpp_kv_ppl.py "$model" "$f" --ctx "$C" --chunks 1 --types f16,q8_0,q4_0 --threads "$T" \
        | tee "$OUT/$name.$tag.llamacpp.json"
    fi
  done
  if [ "${PASSKEY:-1}" != 0 ]; then
    "$K" eval -m "$model" -c "$C" --chunks 1 -t "$T" --json --gen 0 -f "${TEXTS[0]}" --passkey 1k,2k --trials 3 \
      "${args[@]}" > "$OUT/$name.passkey.json"
    echo "== $name passkey"; python3 scripts/eval_table.py "$OUT/$name.passkey.json"
  fi
}
[ "${ONLY:-smollm2}" = smollm2 ] && eval_model smollm2 models/smollm2-135m-instruct-q4_1.gguf "${SMOL[@]}"
[ "${ONLY:-gemma}" = gemma ] && eval_model gemma3 models/gemma-3-270m-q4_k_m.gguf "${GEMMA[@]}"
exit 0
