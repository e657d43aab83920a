#!/usr/bin/env bash
# scripts/kv_mix.py: the greedy allocation on synthetic sensitivities (the
# sensitive slot gets the bits, the budget holds, equal neighbours merge into
# one rule), its byte formula against kvslim's own (`kvslim info`) for mixed
# widths, and one tiny real run (-c 64) whose scheme kvslim accepts within
# kvslim's limits. Bad input (a budget below the narrowest width) exits non-zero.
set -u
K=${BUILD:-build}/kvslim
export KVSLIM=$K   # scripts/kv_mix.py runs this kvslim (its default is build/kvslim)
M=models/smollm2-135m-instruct-q4_1.gguf
[ -x "$K" ] || { echo "test_kv_mix.sh: $K not built"; exit 1; }
if [ ! -f "$M" ]; then
  if [ "${KVS_REQUIRE_MODELS:-0}" = 1 ]; then echo "test_kv_mix.sh: $M missing"; exit 1; fi
  echo "test_kv_mix.sh: SKIP (no $M)"; exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
KVSLIM=$K python3 - "$M" <<'EOF' || exit 1
import importlib.util, sys
spec = importlib.util.spec_from_file_location("kv_mix", "scripts/kv_mix.py")
km = importlib.util.module_from_spec(spec); spec.loader.exec_module(km)
model = sys.argv[1]
fails = 0
def check(name, ok, detail=""):
    global fails
    if not ok:
        fails += 1
        print("FAIL %s %s" % (name, detail))

# Allocation: 4 layers, layer 0 keys 100x more sensitive than anything else.
sens = {(i, p): 0.001 for i in range(4) for p in "kv"}
sens[(0, "k")] = 0.1
cost = lambda s, b: km.slot_bytes(s[1], b, 3, 64, 64)
floor = sum(cost(s, 2) for s in sens)
budget = floor + 3 * (cost((0, "k"), 3) - cost((0, "k"), 2))
bits, pred = km.allocate(sens, [2, 3, 4, 5, 6, 8], 3, budget, cost)
used = sum(cost(s, b) for s, b in bits.items())
check("budget", used <= budget + 1e-9, "%.1f > %.1f" % (used, budget))
check("sensitive-first", bits[(0, "k")] == 5 and all(b == 2 for s, b in bits.items() if s != (0, "k")), str(bits))
check("pred", abs(pred - (0.1 / 16 + 7 * 0.001 * 4)) < 1e-12, str(pred))
text = km.scheme_text(4, bits, "group=64,clip", 4)
check("scheme-text", text == "0:q5k2v,group=64,clip,first=4;1-3:q2k2v,group=64,clip,first=4", text)

# The script's byte formula is kvslim's: mixed widths at 2048, pages and f16 buffer included.
bits = {(i, p): [2, 3, 4, 5, 6, 8][(i + (p == "v")) % 6] for i in range(30) for p in "kv"}
scheme = km.scheme_text(30, bits, "group=64", 4)
bpt, _ = km.info_bytes(model, scheme, 2048)
mine = sum(km.slot_bytes(s[1], b, 3, 64, 64) for s, b in bits.items()) + 30 * (4 + 64) * 3 * 128 * 2 / 2048
check("bytes-vs-kvslim", abs(bpt - mine) < 1e-6, "%.3f vs %.3f" % (bpt, mine))
sys.exit(1 if fails else 0)
EOF
# A real run: probes on 64-token chunks (two evals of 30 schemes each); the
# chosen scheme must be one kvslim takes (it prints kvslim's own byte count).
out=$(KVSLIM=$K python3 scripts/kv_mix.py -m "$M" -f README.md -c 64 --bytes 1.5x --base group=16 --probes "$tmp" -t 2 2>"$tmp/err")
rc=$?
scheme=$(printf '%s\n' "$out" | tail -1)
bpt=$(printf '%s\n' "$out" | sed -n 's/.*; \([0-9]*\) B\/token at 64.*/\1/p')
if [ $rc -ne 0 ] || [ -z "$bpt" ] || [[ "$scheme" != 0*q*k*v*group=16* ]] ||
   [ "$(wc -l < "$tmp/probe_k.json")" -ne 31 ]; then
  echo "FAIL real-run: rc $rc, B/token '$bpt', scheme '$scheme'"; head -5 "$tmp/err"; exit 1
fi
KVSLIM=$K python3 scripts/kv_mix.py -m "$M" -f README.md -c 64 --bytes 100 --probes "$tmp" > "$tmp/out" 2>&1
if [ $? -eq 0 ] || ! grep -q "more than the budget" "$tmp/out"; then
  echo "FAIL tiny-budget: accepted or no message"; head -3 "$tmp/out"; exit 1
fi
echo "test_kv_mix.sh: ok"
