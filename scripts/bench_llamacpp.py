#!/usr/bin/env python3
"""Peer benchmark: llama.cpp (through llama-cpp-python) on the same model,
threads and tests as `kvslim bench`: prefill tok/s for P tokens from an empty
cache, and decode tok/s for N steps after D tokens of context (f16 KV).
Best of R repetitions. Prints one JSON object per test.

usage: scripts/bench_llamacpp.py MODEL [-t 2] [-p 512] [-n 32] [-d 0,2048,8192] [-r 2] [--flash-attn 0|1]
"""
import argparse
import json
import random
import time

import llama_cpp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-p", "--prefill", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=32)
    ap.add_argument("-d", "--depths", default="0,2048,8192")
    ap.add_argument("-r", "--reps", type=int, default=2)
    ap.add_argument("--flash-attn", type=int, default=0)
    a = ap.parse_args()
    depths = [int(x) for x in a.depths.split(",")]
    ctx = max(max(depths) + a.n_gen, a.prefill) + 16
    llm = llama_cpp.Llama(model_path=a.model, n_ctx=ctx, n_batch=512, n_ubatch=512, n_threads=a.threads,
                          n_threads_batch=a.threads, logits_all=False, flash_attn=bool(a.flash_attn),
                          verbose=False)
    rng = random.Random(1234567)
    toks = [rng.randrange(llm.n_vocab()) for _ in range(ctx)]
    tag = {"engine": "llama.cpp", "version": llama_cpp.__version__, "flash_attn": bool(a.flash_attn),
           "threads": a.threads}
    best = 0.0
    for _ in range(a.reps):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(toks[:a.prefill])
        best = max(best, a.prefill / (time.perf_counter() - t0))
    print(json.dumps({**tag, "test": f"pp{a.prefill}", "tok_s": round(best, 2)}), flush=True)
    for d in depths:
        best = 0.0
        for _ in range(a.reps):
            llm.reset()
            if d:
                llm.eval(toks[:d])
            t0 = time.perf_counter()
            for g in range(a.n_gen):
                llm.eval([toks[d + g]])
            best = max(best, a.n_gen / (time.perf_counter() - t0))
        print(json.dumps({**tag, "test": f"tg{a.n_gen}@d{d}", "tok_s": round(best, 2)}), flush=True)


if __name__ == "__main__":
    main()
