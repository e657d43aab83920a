#!/usr/bin/env python3
"""llama.cpp's quantized KV cache on the same text and chunking as
`kvslim eval`, measured by llama.cpp's own llama-perplexity (built by
scripts/setup_peers.sh from the llama-cpp-python 0.3.36 sdist; a no-op once
built; LLAMA_PERPLEXITY=path measures another build).

Perplexity the llama.cpp way (non-overlapping chunks of --ctx tokens, first
token replaced by BOS when the model adds one, second half of each chunk
scored), once per KV type (-ctk/-ctv: K and V both quantized, with flash
attention, which a quantized V needs). The first type is the reference: its
run saves the logits (--kl-divergence-base in a temporary folder) and every
other type's run reads them back (--kl-divergence) for the KL divergence over
the full vocabulary and the top-1 agreement, on the same tokens.

Weights stay in plain CPU buffers (--no-repack): on machines with AMX,
llama-perplexity 0.3.36 with its repacking buffer types crashes (signal 11)
at -c 8192 on SmolLM2; the measurement needs the arithmetic, not the speed.

llama.cpp rotates Q, K and V by a Hadamard transform whenever the cache is
quantized (its PR 21038), like kvslim's `rotate=kv`; --unrotated adds, for
each quantized type, a run with LLAMA_ATTN_ROT_DISABLE=1 (the plain format),
labelled "TYPE,rotate=none".

Prints one JSON line per run: kv, rotate, ppl, dppl_pct (vs the reference),
kl_mean, kl_p99, top1_pct.

usage: scripts/llamacpp_kv_ppl.py MODEL.gguf TEXT [--ctx 2048] [--chunks 1]
           [--types f16,q8_0,q4_0] [--threads 2] [--unrotated] [--no-kl]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUANT = {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"}


def llama_perplexity():
    exe = os.environ.get("LLAMA_PERPLEXITY")
    if exe:
        return exe
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "setup_peers.sh"), "--quiet"], check=True,
                   stdout=sys.stderr)
    return os.path.join(ROOT, "peers", "llama.cpp", "build", "bin", "llama-perplexity")


def num(pattern, text):
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else None


def run(exe, a, kv, rotate, extra):
    env = dict(os.environ)
    if rotate == "none":
        env["LLAMA_ATTN_ROT_DISABLE"] = "1"
    cmd = [exe, "-m", a.model, "-f", a.text, "-c", str(a.ctx), "--chunks", str(a.chunks), "-t", str(a.threads),
           "-fa", "on", "-ctk", kv, "-ctv", kv, "--no-repack"] + extra
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-4000:])
        sys.exit(f"llamacpp_kv_ppl: {' '.join(cmd)} failed ({p.returncode})")
    return p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("text")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--chunks", type=int, default=1)
    ap.add_argument("--types", default="f16,q8_0,q4_0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--unrotated", action="store_true",
                    help="also run each quantized type with llama.cpp's Hadamard rotation off")
    ap.add_argument("--no-kl", action="store_true", help="perplexity only (no logits file, no KL)")
    a = ap.parse_args()
    exe = llama_perplexity()
    runs = []
    for t in a.types.split(","):
        runs.append((t, "kv" if t in QUANT else "none"))
        if a.unrotated and t in QUANT:
            runs.append((t, "none"))
    tmp = tempfile.mkdtemp(prefix="llamacpp-kl.")
    try:
        base_file = os.path.join(tmp, "base.logits")
        base = None
        for i, (kv, rotate) in enumerate(runs):
            if a.no_kl:
                extra = []
            elif i == 0:
                extra = ["--kl-divergence-base", base_file]
            else:
                extra = ["--kl-divergence-base", base_file, "--kl-divergence"]
            out = run(exe, a, kv, rotate, extra)
            if i == 0 or a.no_kl:
                ppl = num(r"Final estimate: PPL = ([0-9.]+)", out)
            else:
                ppl = num(r"^Mean PPL\(Q\)\s*:\s*([0-9.]+)", out)
            if ppl is None:
                sys.stderr.write(out[-4000:])
                sys.exit(f"llamacpp_kv_ppl: no perplexity in llama-perplexity's output for {kv}")
            if base is None:
                base = ppl
            label = kv + (",rotate=none" if rotate == "none" and kv in QUANT else "")
            row = {"kv": label, "rotate": rotate, "text": a.text, "ctx": a.ctx, "chunks": a.chunks,
                   "ppl": round(ppl, 4), "dppl_pct": round(100.0 * (ppl / base - 1.0), 3)}
            if i > 0 and not a.no_kl:
                row["kl_mean"] = num(r"^Mean\s+KLD:\s*([-0-9.]+)", out)
                row["kl_p99"] = num(r"^99\.0%\s+KLD:\s*([-0-9.]+)", out)
                row["top1_pct"] = num(r"^Same top p:\s*([0-9.]+)", out)
            row["engine"] = "llama.cpp (llama-perplexity)"
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
