#!/usr/bin/env bash
# Issue #5 frontier: KV bytes vs quality (ppl change, KL, top-1, passkey) of
# the quantized-cache, eviction and retrofit schemes on SmolLM2-135M and
# Gemma-3-270M, two Debian texts, against the f16 cache and llama.cpp's q4_0
# KV cache on the same tokens (llama-perplexity from scripts/setup_peers.sh,
# through scripts/llamacpp_kv_ppl.py: its default rotated cache and the plain
# one, with KL against its own f16 run). Writes one JSON file per run to $OUT
# (default build/frontier) and prints markdown tables (scripts/eval_table.py --md).
# Slow (hours on 2 cores): run parts with the env knobs.
#
# usage: scripts/quality_frontier.sh [THREADS]
#   PARTS="pk ppl ctx8k retro"  which parts (default all):
#     pk     memory-barriers ppl/KL at -c 2048 (1 chunk) + passkey at $PK, the same run
#     ppl    GPL-3 ppl/KL at -c 2048 (1 chunk) + llama.cpp f16/q8_0/q4_0 (rotated and not) on both texts
#     ctx8k  both models at -c 8192 (1 chunk of memory-barriers) + passkey at 4k and 8k
#     retro  compressed files (kvslim compress) : ppl + passkey
#     b35    <= 3.5 bits per element at -c 8192, all three models (Qwen2.5-Coder-1.5B too),
#            memory-barriers.txt and reporting-issues.rst, + llama.cpp f16/q4_0 on each (not in
#            the default PARTS: add it by name)
#   ONLY=smollm2|gemma|qwen   one model;  PK=1k,2k  passkey lengths (8k needs -c 8192:
#   PKCTX=8192);  TRIALS=2;  LLAMACPP=0 skip llama.cpp
# Texts: /usr/share/common-licenses/GPL-3 and linux-doc's memory-barriers.txt
# (apt install linux-doc).
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-2}
K=${BUILD:-build}/kvslim
OUT=${OUT:-build/frontier}; mkdir -p "$OUT"
[ "${LLAMACPP:-1}" = 0 ] || bash scripts/setup_peers.sh --quiet
PARTS=${PARTS:-pk ppl ctx8k retro}
PK=${PK:-1k,2k}; PKCTX=${PKCTX:-2048}; TRIALS=${TRIALS:-2}
L=/usr/share/common-licenses
MB=$OUT/memory-barriers.txt
[ -s "$MB" ] || zcat /usr/share/doc/linux-doc-6.1/Documentation/memory-barriers.txt.gz > "$MB"
SMOL_M=models/smollm2-135m-instruct-q4_1.gguf
GEMMA_M=models/gemma-3-270m-q4_k_m.gguf
QWEN_M=models/qwen2.5-coder-1.5b-instruct.gguf
has() { [[ " $PARTS " == *" $1 "* ]]; }
want() { [ -z "${ONLY:-}" ] || [ "$ONLY" = "$1" ]; }

# SmolLM2: 30 layers, all full attention. f16 = 23040 B/token; at 2048
# tokens 4x fewer = 5760, q4_0's bytes = 6480, 8x fewer = 2880.
SMOL=(q8_0 q4_0 "q4k4v,group=64,clip,rotate=v" "q4k3v,group=64,clip,rotate=v"
      "q3k3v,group=64,clip,rotate=v,first=4" "snapkv=256+32")
# Gemma 3: layers 5, 11, 17 global (full cache), the others a 512-token
# window; bytes count every layer's KV at the context (windows hold 512).
G3="5:q4k3v,group=64,clip;11:q4k3v,group=64,clip;17:q4k3v,group=64,clip"
GEMMA=(q8_0 q4_0 "q4_0,rotate=kv;$G3" "snapkv=256+32")

kvargs() { KVA=(); for s in "$@"; do KVA+=(--kv "$s"); done; }
run_eval() { # out model ctx text extra-args... -- schemes...
  local out=$1 model=$2 ctx=$3 text=$4; shift 4
  local extra=(); while [ "$1" != -- ]; do extra+=("$1"); shift; done; shift
  kvargs "$@"
  nice -n 10 "$K" eval -m "$model" -c "$ctx" --chunks 1 -t "$T" --json --gen 0 -f "$text" "${extra[@]}" "${KVA[@]}" > "$OUT/$out.json"
  echo "== $out: $model, $(basename "$text"), -c $ctx ${extra[*]}"; python3 scripts/eval_table.py --md "$OUT/$out.json"
}
llamacpp() { # out model text
  [ "${LLAMACPP:-1}" = 0 ] && return 0
  python3 scripts/llamacpp_kv_ppl.py "$2" "$3" --ctx 2048 --chunks 1 --types f16,q8_0,q4_0 --unrotated \
      --threads "$T" | tee "$OUT/$1.json"
}
PKA=(--passkey "$PK" --trials "$TRIALS")

if has pk; then
  want smollm2 && run_eval smollm2.mb.pk "$SMOL_M" "$PKCTX" "$MB" "${PKA[@]}" -- "${SMOL[@]}"
  want gemma && run_eval gemma3.mb.pk "$GEMMA_M" "$PKCTX" "$MB" "${PKA[@]}" -- "${GEMMA[@]}"
fi
if has ppl; then
  want smollm2 && { run_eval smollm2.gpl3 "$SMOL_M" 2048 $L/GPL-3 -- "${SMOL[@]}"
                    llamacpp smollm2.gpl3.llamacpp "$SMOL_M" $L/GPL-3; llamacpp smollm2.mb.llamacpp "$SMOL_M" "$MB"; }
  want gemma && { run_eval gemma3.gpl3 "$GEMMA_M" 2048 $L/GPL-3 -- "${GEMMA[@]}"
                  llamacpp gemma3.gpl3.llamacpp "$GEMMA_M" $L/GPL-3; llamacpp gemma3.mb.llamacpp "$GEMMA_M" "$MB"; }
fi
if has ctx8k; then
  # -c 8192 (SmolLM2's trained length) with passkey at 4k and 8k: the per-channel layouts' f16
  # buffer costs 4x less per token than at 2048, so 4x fewer bytes leaves more bits.
  PK8=(--passkey 4k,8k --trials "$TRIALS")
  want smollm2 && run_eval smollm2.mb.c8192 "$SMOL_M" 8192 "$MB" "${PK8[@]}" -- q8_0 q4_0 \
      "q4k4v,group=64,clip,rotate=v,first=4" "q4k3v,group=64,clip,rotate=v,first=4" \
      "q3k3v,group=64,clip,rotate=v,first=4" "q2k2v,group=64,clip,rotate=v,first=4" "snapkv=1024+32"
  g() { echo "q4_0,rotate=kv;5:$1;11:$1;17:$1"; }
  want gemma && run_eval gemma3.mb.c8192 "$GEMMA_M" 8192 "$MB" --format raw "${PK8[@]}" -- "q4_0,rotate=kv" \
      "$(g q4k3v,group=64,clip,rotate=v,first=4)" "$(g q3k3v,group=64,clip,rotate=v,first=4)" \
      "$(g q2k2v,group=64,clip,rotate=v,first=4)" "snapkv=1024+32"
fi
if has b35; then
  # Everything counted (f16 sinks, the f16 group buffer, scales, pages). Keys carry the error, so
  # the bits go to them: 4-bit per-channel keys, 2-bit symmetric values (vsym); on SmolLM2 the
  # 64-element heads pay 0.25 bits more for the same scales, so the keys of the layer(s) least
  # sensitive in kv_mix.py's probes on GPL-2 (29, then 0 1 6 7 11 27 28) drop to 3 bits.
  RI=$OUT/reporting-issues.rst
  [ -s "$RI" ] || zcat /usr/share/doc/linux-doc-6.1/Documentation/admin-guide/reporting-issues.rst.gz > "$RI"
  B="group=128,clip,rotate=v,first=4"
  g() { echo "$1;5:$2;11:$2;17:$2"; }
  # SmolLM2's best: the 64 newest tokens kept in f16 (recent=64, groups of 64), 3-bit keys but
  # layer 18's at 4 (the most sensitive in kv_mix.py's GPL-2 probes), 3-bit values but 2 in the
  # nine layers 0 1 6 7 11 26-29
  R="group=64,clip,rotate=v,first=4,recent=64,vsym"
  S35="0-1:q3k2v,$R;2-5:q3k3v,$R;6-7:q3k2v,$R;8-10:q3k3v,$R;11:q3k2v,$R;12-17:q3k3v,$R;18:q4k3v,$R"
  S35="$S35;19-25:q3k3v,$R;26-29:q3k2v,$R"
  for text in "$MB" "$RI"; do
    tn=$(basename "$text" | cut -d. -f1)
    want smollm2 && run_eval "smollm2.$tn.b35" "$SMOL_M" 8192 "$text" -- q4_0 "q4k2v,$B" "q4k2v,$B,vsym;29:q3k2v,$B,vsym" \
        "q4k2v,$B;0-1:q3k2v,$B;6-7:q3k2v,$B;11:q3k2v,$B;27-29:q3k2v,$B" "$S35"
    want qwen && run_eval "qwen.$tn.b35" "$QWEN_M" 8192 "$text" --passkey 4k,8k -- q4_0 "q4k2v,$B,vsym"
    want gemma && run_eval "gemma3.$tn.b35" "$GEMMA_M" 8192 "$text" --format raw --passkey 4k,8k -- q4_0 \
        "$(g q4_0 "q3k2v,$B,vsym")" "$(g q4_0 "q4k2v,$B,vsym")"
    for m in smollm2:$SMOL_M qwen:$QWEN_M gemma:$GEMMA_M; do
      want "${m%%:*}" && [ "${LLAMACPP:-1}" != 0 ] && python3 scripts/llamacpp_kv_ppl.py "${m#*:}" "$text" --ctx 8192 \
          --chunks 1 --types f16,q4_0 --threads "$T" | tee "$OUT/${m%%:*}.$tn.b35.llamacpp.json"
    done
  done
fi
if has retro; then
  # Retrofits (docs/compress.md): calibration on four licenses + two
  # linux-doc process pages, never the evaluation texts.
  CAL=(--calib $L/GPL-2 --calib $L/LGPL-2.1 --calib $L/MPL-2.0 --calib $L/Artistic)
  for p in howto submitting-patches; do
    [ -s "$OUT/$p.rst" ] || zcat "/usr/share/doc/linux-doc-6.1/Documentation/process/$p.rst.gz" > "$OUT/$p.rst"
    CAL+=(--calib "$OUT/$p.rst")
  done
  if want smollm2; then
    [ -s "$OUT/s_r192_q4.gguf" ] || "$K" compress -m "$SMOL_M" "${CAL[@]}" --calib-tokens 8192 --latent r=192 --kv q4_0 \
        --center --weights attn -o "$OUT/s_r192_q4.gguf"
    # the file's rules are q4_0 rows; --ref f16 = the same latent layers with f16 rows
    run_eval smollm2.retro.mb.pk "$OUT/s_r192_q4.gguf" "$PKCTX" "$MB" "${PKA[@]}" -- q4_0
  fi
  if want gemma; then
    [ -s "$OUT/g_r256.gguf" ] || "$K" compress -m "$GEMMA_M" "${CAL[@]}" --calib-tokens 2048 --calib-ctx 1024 --latent r=256 \
        --kv f16 --center --weights attn -o "$OUT/g_r256.gguf"
    [ -s "$OUT/g_b768.gguf" ] || "$K" compress -m "$GEMMA_M" "${CAL[@]}" --calib-tokens 2048 --calib-ctx 1024 --latent budget=768 \
        --kv q4_0 --center --weights attn -o "$OUT/g_b768.gguf"
    run_eval gemma3.retro_r256.mb.pk "$OUT/g_r256.gguf" "$PKCTX" "$MB" "${PKA[@]}" -- "5:q4_0;11:q4_0;17:q4_0"
    run_eval gemma3.retro_b768.mb.pk "$OUT/g_b768.gguf" "$PKCTX" "$MB" "${PKA[@]}" -- "0-4:f16;6-10:f16;12-16:f16"
  fi
fi
exit 0
