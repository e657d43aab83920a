#!/usr/bin/env bash
# kvslim vs llama.cpp, side by side in one run on the same model and threads.
# usage: scripts/bench_compare.sh [MODEL] [THREADS] [DEPTHS]     env: N (32 decode steps), R (2 reps), D_FA,
#   PPD (depths for prefill-at-depth, e.g. 8192: pp512@d8192; default none)
# llama.cpp is llama-bench from scripts/setup_peers.sh (built on first use;
# LLAMA_BENCH=path measures another build), run through scripts/bench_llamacpp.py.
set -euo pipefail
cd "$(dirname "$0")/.."
M=${1:-models/smollm2-135m-instruct-q4_1.gguf}; T=${2:-2}; D=${3:-0,2048,8192}
N=${N:-32}; R=${R:-2}
[ -x build/kvslim ] || make -j2 >&2
[ -n "${LLAMA_BENCH:-}" ] || bash scripts/setup_peers.sh --quiet
out=$(mktemp -d)
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
PPD=${PPD:-}
build/kvslim bench -m "$M" -t "$T" -d "$D" -n "$N" -r "$R" ${PPD:+--pp-depths "$PPD"} --json > "$out/kvslim.jsonl"
python3 scripts/bench_llamacpp.py "$M" -t "$T" -d "$D" -n "$N" -r "$R" ${PPD:+--pp-depths "$PPD"} --flash-attn 0 > "$out/lcpp0.jsonl"
# flash attention only wins at shallow depth on this CPU (10 tok/s vs 25 at 8K): run it there only
python3 scripts/bench_llamacpp.py "$M" -t "$T" -d "${D_FA:-0}" -n "$N" -r "$R" ${PPD:+--pp-depths "$PPD"} --flash-attn 1 > "$out/lcpp1.jsonl"
python3 - "$out" <<'PYEOF'
import json, sys
d = sys.argv[1]
k = [json.loads(l) for l in open(f"{d}/kvslim.jsonl")]
l0 = {r["test"]: r for r in map(json.loads, open(f"{d}/lcpp0.jsonl"))}
l1 = {r["test"]: r for r in map(json.loads, open(f"{d}/lcpp1.jsonl"))}
ver = next(iter(l0.values()))["version"]
print(f"{'test':<14}{'kvslim':>10}{'of bw':>8}{'llama.cpp':>11}{'(FA on)':>9}{'ratio':>8}   (llama.cpp: llama-bench, {ver}; ratio vs the faster llama.cpp mode)")
for r in k:
    key = r["test"] if r["test"] in l0 else ("pp" + r["test"][2:])
    a, b = l0.get(key, {}).get("tok_s", 0), l1.get(key, {}).get("tok_s", 0)
    peer = max(a, b)
    frac = f"{100 * r['fraction_of_bw']:.0f}%" if r.get("fraction_of_bw") else "-"
    print(f"{r['test']:<14}{r['tok_s']:>10.1f}{frac:>8}{a:>11.1f}{b:>9.1f}{r['tok_s'] / peer if peer else 0:>8.2f}x")
if k and k[-1].get("bw_gb_s"):
    print(f"read bandwidth (measured, {k[-1]['bw_gb_s']:.1f} GB/s) is the limit used for 'of bw'")
PYEOF
rm -rf "$out"
