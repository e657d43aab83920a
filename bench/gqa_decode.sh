#!/usr/bin/env bash
# GQA decode speed by KV layout (issue 3): attention alone over DRAM-resident
# caches at depths 8K/16K/32K (us/call, process CPU us/call, fraction of the
# read bandwidth probed in the same run), then whole-model SmolLM2 decode at
# depth 8192. With two or more binaries it alternates them run by run
# (old/new A/B on a busy machine: compare the cpu figures, take medians).
#
# usage: bench/gqa_decode.sh [kvslim-binary ...]   (default build/kvslim)
# env:   THREADS (2), REPS (1), MODEL (models/smollm2-135m-instruct-q4_1.gguf),
#        ATTN_KV, DECODE_KV (layout lists), DEPTHS (8192,16384,32768), SKIP_DECODE=1
set -u
MODEL=${MODEL:-models/smollm2-135m-instruct-q4_1.gguf}
THREADS=${THREADS:-2}
REPS=${REPS:-1}
ATTN_KV=${ATTN_KV-"f16 q8_0 q4_0 q4k4v q2k2v"}
DECODE_KV=${DECODE_KV-"f16 q8_0 q4_0 q4k4v q4k2v q2k2v"}
DEPTHS=${DEPTHS:-8192,16384,32768}
[ $# -gt 0 ] || set -- build/kvslim
for b in "$@"; do [ -x "$b" ] || { echo "gqa_decode.sh: $b is not executable" >&2; exit 2; }; done
[ -f "$MODEL" ] || { echo "gqa_decode.sh: model $MODEL missing" >&2; exit 2; }
for r in $(seq "$REPS"); do
  for kv in $ATTN_KV; do
    for b in "$@"; do
      "$b" bench -m "$MODEL" -t "$THREADS" --attn --kv "$kv" --attn-depths "$DEPTHS" --json |
        sed "s|^{|{\"bin\": \"$b\", \"kv\": \"$kv\", \"rep\": $r, |"
    done
  done
  [ "${SKIP_DECODE:-0}" = 1 ] && continue
  for kv in $DECODE_KV; do
    for b in "$@"; do
      "$b" bench -m "$MODEL" -t "$THREADS" -d 8192 -p 0 -n 32 -r 2 --kv "$kv" --fill-random --json |
        sed "s|^{|{\"bin\": \"$b\", \"kv\": \"$kv\", \"rep\": $r, |"
    done
  done
done
