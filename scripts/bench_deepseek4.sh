#!/usr/bin/env bash
# Decode speed vs KV depth: a DeepSeek V4-shaped random fixture (compressed
# attention: 128-token raw window + top-512 CSA entries + all HCA entries)
# next to a plain GQA llama fixture of similar size (full KV: attention cost
# grows with the depth T). Fixtures are generated into build/bench-data/
# (git-ignored) by scripts/gen_fixture_deepseek4.py (needs python3 with gguf
# and numpy; PY=... to choose the interpreter).
#
# Each (model, depth) is one `kvslim bench` run: prefill to the depth, then
# N_GEN single-token decode steps timed. ROUNDS > 1 alternates the two models
# per depth and repeats (take medians: the machine is shared and noisy).
#
#   scripts/bench_deepseek4.sh                       # defaults below
#   DEPTHS_V4=8192,65536 DEPTHS_GQA=8192 THREADS=2 ROUNDS=3 scripts/bench_deepseek4.sh
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-python3}
KVSLIM=${KVSLIM:-build/kvslim}
OUT=${OUT:-build/bench-data}
DEPTHS_V4=${DEPTHS_V4:-8192,16384,32768,65536}
DEPTHS_GQA=${DEPTHS_GQA:-8192,16384,32768}
THREADS=${THREADS:-2}
N_GEN=${N_GEN:-16}
ROUNDS=${ROUNDS:-1}
CTX=${CTX:-70k}
mkdir -p "$OUT"
V4="$OUT/deepseek4_bench.gguf"
GQA="$OUT/llama_gqa_bench.gguf"
[ -f "$V4" ] || "$PY" scripts/gen_fixture_deepseek4.py "$V4" --shape bench
[ -f "$GQA" ] || "$PY" scripts/gen_fixture_deepseek4.py "$GQA" --shape gqa
[ -x "$KVSLIM" ] || { echo "build kvslim first (make)"; exit 1; }

run() { # model depth -> "tok/s"
  "$KVSLIM" bench -m "$1" -c "$CTX" -p 1 -n "$N_GEN" -d "$2" -r 1 --bw-gib 0 -t "$THREADS" --json |
    sed -n 's/.*"test": "tg[0-9]*@d\([0-9]*\)", "tok_s": \([0-9.]*\).*/\2/p'
}
echo "# $(date -u +%FT%TZ) threads=$THREADS n_gen=$N_GEN rounds=$ROUNDS load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$KVSLIM" info -m "$V4" | sed -n '3p;9,13p' | sed 's/^/# v4:  /'
"$KVSLIM" info -m "$GQA" | sed -n '3p;9,10p' | sed 's/^/# gqa: /'
echo "model depth tok_s kv_bytes_at_depth"
all=$(echo "$DEPTHS_V4,$DEPTHS_GQA" | tr ',' '\n' | sort -n | uniq)
for r in $(seq 1 "$ROUNDS"); do
  for d in $all; do
    for m in v4 gqa; do
      if [ $m = v4 ]; then f=$V4; list=$DEPTHS_V4; else f=$GQA; list=$DEPTHS_GQA; fi
      case ",$list," in *",$d,"*) ;; *) continue ;; esac
      tps=$(run "$f" "$d")
      kv=$("$KVSLIM" info -m "$f" -c "$d" 2>/dev/null | sed -n 's/.* at [0-9]* tokens (\([0-9]*\) bytes).*/\1/p')
      echo "$m $d $tps ${kv:-?}"
    done
  done
done
