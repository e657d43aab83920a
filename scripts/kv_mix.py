#!/usr/bin/env python3
"""Per-layer KV bit allocation by measured sensitivity (issue #5).

Probes every layer's keys and values alone on calibration text (`kvslim eval`:
one layer's keys at PROBE bits, everything else f16; then its values), then
spends a byte budget where it buys the most: each (layer, K or V) slot starts
at the lowest width and the upgrade with the largest predicted KL drop per
byte is taken until the budget is used. The error model is the one uniform
quantization gives: mean-squared error, and to first order the KL it causes,
falls 4x per extra bit, so a slot probed at KL s costs s * 4^(PROBE - b) at
b bits, and slots add. The printed scheme is a `--kv` rule list for
`kvslim eval`/`run`; always check it on other text (the probes' KL is fitted,
the evaluation's is measured).

usage:
  scripts/kv_mix.py -m MODEL -f CALIB [-f CALIB ...] --bytes B [--ctx 2048]
                    [--probe 3] [--base group=64,clip,rotate=v] [--first 4]
                    [--bits 2,3,4,5,6,8] [--probes DIR] [--threads 2]
  --bytes B    KV budget in bytes per token at --ctx (e.g. f16 / 4); `Nx` means
               N times fewer than f16
  --probes DIR keep (and reuse) the probe JSON there
Prints the per-layer table, the predicted KL and the scheme, then
`kvslim info` of the scheme (its exact bytes at --ctx) on stderr.
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile

KVSLIM = os.environ.get("KVSLIM", os.path.join(os.path.dirname(__file__), "..", "build", "kvslim"))
MAX_SCHEMES = 32  # kvslim eval's limit per run


def model_shape(model):
    out = subprocess.run([KVSLIM, "info", "-m", model], capture_output=True, text=True, check=True).stdout
    layers = int(re.search(r"^layers:\s+(\d+)", out, re.M).group(1))
    m = re.search(r"(\d+) KV heads, head size (\d+)", out)
    return layers, int(m.group(1)), int(m.group(2)), out


def info_bytes(model, scheme, ctx):
    out = subprocess.run([KVSLIM, "info", "-m", model, "-c", str(ctx), "--kv-layer", scheme],
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit("kv_mix.py: kvslim info refused the scheme: " + out.stderr.strip())
    m = re.search(r"\((\d+) bytes\)", out.stdout)
    return int(m.group(1)) / ctx, out.stdout


def probe(args, layers, part, path):
    """KL of every layer's keys (part 'k') or values ('v') alone at --probe bits."""
    if os.path.exists(path):
        return load(path)
    b = args.probe
    tag = "q%dk8v" % b if part == "k" else "q8k%dv" % b
    schemes = ["%d:%s,%s" % (i, tag, args.base) for i in range(layers)]
    rows = []
    for s in range(0, layers, MAX_SCHEMES):
        cmd = [KVSLIM, "eval", "-m", args.model, "-c", str(args.ctx), "--chunks", str(args.chunks),
               "-t", str(args.threads), "--gen", "0", "--json"]
        for f in args.file:
            cmd += ["-f", f]
        for sc in schemes[s:s + MAX_SCHEMES]:
            cmd += ["--kv", sc]
        print("kv_mix.py: probing %s, layers %d-%d" % ("keys" if part == "k" else "values", s,
              min(s + MAX_SCHEMES, layers) - 1), file=sys.stderr)
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
        rows += [l for l in out.splitlines() if l.startswith("{")]
    with open(path, "w") as f:
        f.write("\n".join(rows) + "\n")
    return load(path)


def load(path):
    kl = {}
    with open(path) as f:
        for line in f:
            o = json.loads(line)
            if o.get("reference"):
                continue
            layer = int(o["scheme"].split(":")[0])
            kl[layer] = max(o["kl_mean"], 1e-9)
    return kl


def slot_bytes(part, bits, nkv, d, group):
    """Bytes per token of one layer's keys or values in the per-channel layout (docs/kv.md)."""
    if part == "k":
        return nkv * d * (math.ceil(group * bits / 8) + 4) / group
    return nkv * (math.ceil(d * bits / 8) + math.ceil(d / group) * 4)


def allocate(sens, widths, probe_bits, budget, cost):
    """Greedy: every slot at widths[0], then the best KL drop per byte until the budget."""
    pick = {s: 0 for s in sens}
    err = lambda s, w: sens[s] * 4.0 ** (probe_bits - widths[w])
    used = sum(cost(s, widths[0]) for s in sens)
    if used > budget:
        sys.exit("kv_mix.py: even %d bits everywhere needs %.0f B/token, more than the budget %.0f"
                 % (widths[0], used, budget))
    while True:
        best, gain = None, 0.0
        for s, w in pick.items():
            if w + 1 == len(widths):
                continue
            db = cost(s, widths[w + 1]) - cost(s, widths[w])
            if used + db > budget + 1e-9:
                continue
            g = (err(s, w) - err(s, w + 1)) / db
            if g > gain:
                best, gain = s, g
        if best is None:
            break
        used += cost(best, widths[pick[best] + 1]) - cost(best, widths[pick[best]])
        pick[best] += 1
    return {s: widths[w] for s, w in pick.items()}, sum(err(s, w) for s, w in pick.items())


def scheme_text(layers, bits, base, first):
    """Runs of layers with equal (k, v) widths as rules 'a-b:qKkVv,base'."""
    rules, i = [], 0
    while i < layers:
        j = i
        while j + 1 < layers and bits[(j + 1, "k")] == bits[(i, "k")] and bits[(j + 1, "v")] == bits[(i, "v")]:
            j += 1
        rng = "%d" % i if i == j else "%d-%d" % (i, j)
        rules.append("%s:q%dk%dv,%s%s" % (rng, bits[(i, "k")], bits[(i, "v")], base,
                                          ",first=%d" % first if first else ""))
        i = j + 1
    return ";".join(rules)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", default="models/smollm2-135m-instruct-q4_1.gguf")
    ap.add_argument("-f", "--file", action="append", required=True, help="calibration text (repeatable)")
    ap.add_argument("--bytes", required=True, help="budget in B/token at --ctx, or Nx (N times fewer than f16)")
    ap.add_argument("-c", "--ctx", type=int, default=2048)
    ap.add_argument("--chunks", type=int, default=1, help="chunks per calibration file")
    ap.add_argument("--probe", type=int, default=3, help="probe width in bits")
    ap.add_argument("--base", default="group=64,clip,rotate=v", help="per-channel settings of every layer")
    ap.add_argument("--first", type=int, default=0, help="f16 sink tokens per layer")
    ap.add_argument("--bits", default="2,3,4,5,6,8", help="widths to choose from")
    ap.add_argument("--probes", default=None, help="directory to keep/reuse the probe JSON")
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    layers, nkv, d, _ = model_shape(args.model)
    if args.ctx % 256:
        print("kv_mix.py: warning: -c %d is not a multiple of the 256-token page; kvslim's byte count "
              "(printed at the end) includes the rounding the budget here does not" % args.ctx, file=sys.stderr)
    gm = re.search(r"group=(\d+)", args.base)
    group = int(gm.group(1)) if gm else 32
    rm = re.search(r"recent=(\d+)", args.base)
    recent = int(rm.group(1)) if rm else 0
    f16 = layers * nkv * 2 * d * 2
    budget = f16 / float(args.bytes[:-1]) if args.bytes.endswith("x") else float(args.bytes)
    # The f16 buffer (sinks + recent residual + partial group) is a fixed cost per layer: take it
    # off the budget.
    fixed = layers * (args.first + recent + group) * nkv * 2 * d * 2 / args.ctx
    pdir = args.probes or os.path.join(tempfile.gettempdir(), "kv_mix_%s_c%d_p%d" % (
        os.path.basename(args.model), args.ctx, args.probe))
    os.makedirs(pdir, exist_ok=True)
    sens = {}
    for part in "kv":
        for layer, kl in probe(args, layers, part, os.path.join(pdir, "probe_%s.json" % part)).items():
            sens[(layer, part)] = kl
    widths = [int(x) for x in args.bits.split(",")]
    cost = lambda s, b: slot_bytes(s[1], b, nkv, d, group)
    bits, pred = allocate(sens, widths, args.probe, budget - fixed, cost)
    print("layer  KL(K@%d)   KL(V@%d)   K bits  V bits" % (args.probe, args.probe))
    for i in range(layers):
        print("%5d  %.5f   %.5f   %6d  %6d" % (i, sens[(i, "k")], sens[(i, "v")], bits[(i, "k")], bits[(i, "v")]))
    scheme = scheme_text(layers, bits, args.base, args.first)
    bpt, info = info_bytes(args.model, scheme, args.ctx)
    print("predicted KL mean %.4f (sum of fitted slot KLs); %.0f B/token at %d (%.2fx fewer than f16)"
          % (pred, bpt, args.ctx, f16 / bpt))
    print(scheme)
    print(info, file=sys.stderr)


if __name__ == "__main__":
    main()
