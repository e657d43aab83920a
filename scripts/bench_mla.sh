#!/usr/bin/env bash
# MLA decode benchmark: a DeepSeek-V2-Lite-shaped deepseek2 fixture (27
# layers, hidden 2048, 16 heads, latent 512 + rope 64, nope 128, value 128,
# dense SwiGLU FFN of 1408 in every layer, Q4_0 weights, random values) is
# generated once into a git-ignored path, then `kvslim bench` decodes at KV
# depths 0, 1024 and 4096 with 2 threads; with PEER=1 llama.cpp
# (llama-bench from scripts/setup_peers.sh, through scripts/bench_llamacpp.py)
# runs the same file, tests and threads right after, for a ratio on the same
# machine state.
#
# usage: scripts/bench_mla.sh            env: PY (python with numpy+gguf),
#        PEER=1 scripts/bench_mla.sh     PEER_FA (llama.cpp flash-attention modes, default "0 1": both),
#        THREADS (2), DEPTHS (0,1024,4096), NGEN (32), REPS (2), KV (f16, or q8_0:
#        the int8 latent path), FILL=1 (reach each depth with random cache
#        rows instead of a prefill: same decode work, no prefill cost),
#        KVSLIM (binary, default build/kvslim: e.g. an older build for A/B),
#        JSON=1 (kvslim's --json lines, with CPU ms per token)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-build/fixtures/deepseek2-v2lite-shape-q4_0.gguf}
THREADS=${THREADS:-2}
DEPTHS=${DEPTHS:-0,1024,4096}
NGEN=${NGEN:-32}
REPS=${REPS:-2}
KV=${KV:-f16}
MAXD=$(echo "$DEPTHS" | tr ',' '\n' | sort -n | tail -1)
CTX=$((MAXD + NGEN + 600))
if [ ! -f "$OUT" ]; then
    mkdir -p "$(dirname "$OUT")"
    echo "generating $OUT (about 340 MB)..." >&2
    "$PY" scripts/gen_fixture_deepseek2.py --config bench -o "$OUT"
fi
KVSLIM=${KVSLIM:-build/kvslim}
[ -x "$KVSLIM" ] || make -j2 >&2
EXTRA=()
PREFILL=512
if [ "${FILL:-0}" = 1 ]; then EXTRA+=(--fill-random); PREFILL=0; fi
if [ "${JSON:-0}" = 1 ]; then EXTRA+=(--json); fi
set -x
"$KVSLIM" bench -m "$OUT" -t "$THREADS" -c "$CTX" --kv "$KV" -p "$PREFILL" -n "$NGEN" -d "$DEPTHS" -r "$REPS" \
    --bw-gib 0 "${EXTRA[@]}"
if [ "${PEER:-0}" = 1 ]; then
    for fa in ${PEER_FA:-0 1}; do
        python3 scripts/bench_llamacpp.py "$OUT" -t "$THREADS" -p "$PREFILL" -n "$NGEN" \
            -d "$DEPTHS" -r "$REPS" --flash-attn "$fa"
    done
fi
