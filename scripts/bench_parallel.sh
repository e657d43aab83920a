#!/usr/bin/env bash
# Many sequences in one engine: kvslim `bench --parallel` against llama.cpp's
# llama-batched-bench, side by side in one run (same model, threads, prompt and
# generation lengths), as aggregate decode tok/s (S_TG) and the ratio.
# usage: scripts/bench_parallel.sh [MODEL] [THREADS] [PARALLEL] [PROMPT] [GEN]
#   defaults: SmolLM2, 2 threads, 1,2,4,8,16 sequences, prompt 256, 32 generated
# env: R (2 reps for kvslim), LLAMA_BATCHED_BENCH (another build of the peer).
set -euo pipefail
cd "$(dirname "$0")/.."
M=${1:-models/smollm2-135m-instruct-q4_1.gguf}; T=${2:-2}; P=${3:-1,2,4,8,16}; PP=${4:-256}; TG=${5:-32}
R=${R:-2}
[ -x build/kvslim ] || make -j2 >&2
if [ -z "${LLAMA_BATCHED_BENCH:-}" ]; then
  bash scripts/setup_peers.sh --quiet
  LLAMA_BATCHED_BENCH=peers/llama.cpp/build/bin/llama-batched-bench
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
maxp=$(echo "$P" | tr ',' '\n' | sort -n | tail -1)
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
build/kvslim bench -m "$M" -t "$T" --parallel "$P" -p "$PP" -n "$TG" -r "$R" --json > "$out/kvslim.jsonl"
lcpp() {
  "$LLAMA_BATCHED_BENCH" -m "$M" -t "$T" -c $(( (PP + TG) * maxp + 64 )) -b 2048 -ub 512 -npp "$PP" -ntg "$TG" \
    -npl "$P" --output-format jsonl "$@" > "$out/lcpp.jsonl" 2> "$out/lcpp.log"
}
# killed by a signal with its repacking buffer types (0.3.36 on machines whose
# AMX tiles fault), the peer runs once more with weights in plain CPU buffers
rc=0; lcpp || rc=$?
if [ "$rc" -gt 128 ]; then
  echo "llama-batched-bench died of signal $((rc - 128)) with its repacking buffers; measuring with --no-repack" \
       "(PEER_AMX=OFF bash scripts/setup_peers.sh builds a peer without the AMX path that keeps them)"
  rc=0; lcpp --no-repack || rc=$?
fi
[ "$rc" = 0 ] || { cat "$out/lcpp.log" >&2; exit 1; }
python3 - "$out" "$PP" "$TG" <<'PYEOF'
import json, sys
d, pp, tg = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
k = {r["b"]: r for r in map(json.loads, open(f"{d}/kvslim.jsonl"))}
l = {}
for line in open(f"{d}/lcpp.jsonl"):
    line = line.strip()
    if line.startswith("{"):
        r = json.loads(line)
        if r.get("pp") == pp and r.get("tg") == tg: l[r["pl"]] = r
one = k.get(1, {}).get("s_tg")
print(f"prompt {pp}, {tg} generated; S_TG = generated tokens/s over all sequences")
print(f"{'B':>4}{'kvslim S_PP':>13}{'S_TG':>9}{'x own B=1':>11}{'llama.cpp S_PP':>16}{'S_TG':>9}{'ratio':>8}{'KV MiB':>9}")
for b in sorted(k):
    r, p = k[b], l.get(b, {})
    ratio = r["s_tg"] / p["speed_tg"] if p.get("speed_tg") else 0
    print(f"{b:>4}{r['s_pp']:>13.1f}{r['s_tg']:>9.1f}{r['s_tg'] / one if one else 0:>10.2f}x"
          f"{p.get('speed_pp', 0):>16.1f}{p.get('speed_tg', 0):>9.1f}{ratio:>7.2f}x{r['kv_bytes'] / 1048576:>9.1f}")
PYEOF
