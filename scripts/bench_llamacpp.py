#!/usr/bin/env python3
"""Peer benchmark: llama.cpp's own llama-bench (built by scripts/setup_peers.sh
from the llama-cpp-python 0.3.36 sdist) on the same model, threads and tests as
`kvslim bench`: prefill tok/s for P tokens from an empty cache, and decode
tok/s for N single-token steps after D tokens of context. Best of R
repetitions (llama-bench's samples; it also warms up once), batch 512. Prints
one JSON object per test, named as `kvslim bench --json` names them
(pp512, tg32@d8192), with llama-bench's mean next to the best.

On a machine where llama-bench crashes with its repacking buffer types it is
rerun with --repack 0 and the rows say "repack": false; there, build the peer
without its AMX path instead (PEER_AMX=OFF bash scripts/setup_peers.sh), which
keeps its repacked AVX-512 kernels.

Runs the peer's build (bash scripts/setup_peers.sh, a no-op once built);
LLAMA_BENCH=path/to/llama-bench measures another build instead.

usage: scripts/bench_llamacpp.py MODEL [-t 2] [-p 512] [-n 32] [-d 0,2048,8192] [-r 2]
           [--pp-depths 8192] [--flash-attn 0|1] [--kv f16|q8_0|q4_0]     (-p 0 or -n 0 skips that test)
--pp-depths: prefill of P tokens after D tokens of context too (pp512@d8192).
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def llama_bench():
    exe = os.environ.get("LLAMA_BENCH")
    if exe:
        return exe
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "setup_peers.sh"), "--quiet"], check=True,
                   stdout=sys.stderr)
    return os.path.join(ROOT, "peers", "llama.cpp", "build", "bin", "llama-bench")


REPACK = {"on": True}


def run(exe, model, args):
    """llama-bench's rows. Killed by a signal with its repacking buffer types
    (on machines with AMX, 0.3.36's llama-bench crashes there, as
    llama-perplexity does), it runs once more with --repack 0 (weights in
    plain CPU buffers), says so on stderr and in every row ("repack": false)."""
    cmd = [exe, "-m", model, "-o", "jsonl", "-b", "512", "-ub", "512"] + args
    if not REPACK["on"]:
        cmd += ["--repack", "0"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode < 0 and REPACK["on"]:
        sys.stderr.write(f"bench_llamacpp: llama-bench died of signal {-p.returncode} with its repacking "
                         "buffers; measuring with --repack 0 (plain CPU weight buffers; PEER_AMX=OFF bash "
                         "scripts/setup_peers.sh builds a peer without the AMX path that keeps them)\n")
        REPACK["on"] = False
        return run(exe, model, args)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        sys.exit(f"bench_llamacpp: {' '.join(cmd)} failed ({p.returncode})")
    return [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-p", "--prefill", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=32)
    ap.add_argument("-d", "--depths", default="0,2048,8192")
    ap.add_argument("-r", "--reps", type=int, default=2)
    ap.add_argument("--flash-attn", type=int, default=0)
    ap.add_argument("--kv", default="f16", help="llama.cpp KV type for K and V (-ctk/-ctv)")
    ap.add_argument("--pp-depths", default="", help="also prefill after these depths")
    a = ap.parse_args()
    exe = llama_bench()
    common = ["-t", str(a.threads), "-r", str(a.reps), "-fa", "on" if a.flash_attn else "off",
              "-ctk", a.kv, "-ctv", a.kv]
    rows = []
    if a.prefill > 0:
        rows += run(exe, a.model, common + ["-p", str(a.prefill), "-n", "0", "-d", "0"])
    if a.n_gen > 0:
        rows += run(exe, a.model, common + ["-p", "0", "-n", str(a.n_gen), "-d", a.depths])
    if a.prefill > 0 and a.pp_depths:
        rows += run(exe, a.model, common + ["-p", str(a.prefill), "-n", "0", "-d", a.pp_depths])
    for r in rows:
        if r["n_prompt"]:
            test = f"pp{r['n_prompt']}" + (f"@d{r['n_depth']}" if r.get("n_depth") else "")
        else:
            test = f"tg{r['n_gen']}@d{r['n_depth']}"
        samples = r.get("samples_ts") or [r["avg_ts"]]
        print(json.dumps({"engine": "llama.cpp", "version": r.get("build_commit", "?"),
                          "flash_attn": bool(a.flash_attn), "threads": r["n_threads"], "kv": a.kv,
                          "repack": REPACK["on"], "test": test, "tok_s": round(max(samples), 2),
                          "mean_tok_s": round(r["avg_ts"], 2)}),
              flush=True)


if __name__ == "__main__":
    main()
