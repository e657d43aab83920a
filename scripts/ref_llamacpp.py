#!/usr/bin/env python3
"""Reference outputs from an independent implementation (llama.cpp through
llama-cpp-python) for kvslim's whole-model tests.

llama.cpp here is the peer of scripts/setup_peers.sh: llama-cpp-python
0.3.36's bindings over the libllama.so built from that sdist's vendored
llama.cpp, run in the reference Python it makes (`bash scripts/setup_peers.sh
--python`, peers/venv); scripts/peer.py sets both up on first use and re-runs
this script under that Python, so any `python3` can start it.

Writes tests/data/ref_<name>.json with, for fixed prompts, the prompt tokens,
32 greedy continuation tokens and the top-10 logits after the prompt; and
the perplexity of a text at a context size computed the llama.cpp way
(non-overlapping chunks, second half of each chunk scored, first token
replaced by BOS when the model adds one).

Each greedy step also records llama.cpp's own top-2 logit gap ("gaps"), so
a test can tell a real divergence from a near-tie when no exact float64
reference exists for the architecture. --more-ctx adds perplexities at
further context sizes ("ppl_more").

usage: python3 scripts/ref_llamacpp.py MODEL.gguf NAME [--ctx 512] [--more-ctx 2048]
           [--text FILE]
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer  # noqa: E402

llama_cpp = peer.llama_cpp()
import numpy as np  # noqa: E402

PROMPTS = [
    "Once upon a time",
    "The capital of France is",
    "def fibonacci(n):\n    ",
]


def greedy(llm, prompt_tokens, n):
    llm.reset()
    llm.eval(prompt_tokens)
    logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
    top = np.argsort(-logits)[:10]
    first = [[int(i), float(logits[i])] for i in top]
    out, gaps = [], []
    for _ in range(n):
        lg = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        t = int(np.argmax(lg))
        top2 = np.sort(lg)[-2:]
        out.append(t)
        gaps.append(float(top2[1] - top2[0]))
        llm.eval([t])
    return out, first, gaps


def perplexity(llm, tokens, n_ctx, bos):
    n_chunks = len(tokens) // n_ctx
    first = n_ctx // 2
    nll, count = 0.0, 0
    for c in range(n_chunks):
        chunk = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        inp = list(chunk)
        if bos is not None:
            inp[0] = bos
        llm.reset()
        llm.eval(inp)
        for j in range(first, n_ctx - 1):
            lg = np.array(llm.scores[j], dtype=np.float64)
            m = lg.max()
            lse = m + math.log(np.exp(lg - m).sum())
            nll += lse - lg[chunk[j + 1]]
            count += 1
        print(f"  chunk {c + 1}/{n_chunks}: ppl {math.exp(nll / count):.4f}", file=sys.stderr)
    return math.exp(nll / count), n_chunks, count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("name")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--text", default="/usr/share/common-licenses/GPL-3")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--more-ctx", type=int, action="append", default=[])
    a = ap.parse_args()

    llm = llama_cpp.Llama(model_path=a.model, n_ctx=max([a.ctx, 256] + a.more_ctx), n_batch=512,
                          logits_all=True, n_threads=a.threads, verbose=False)
    add_bos = llm._model.add_bos_token() if hasattr(llm._model, "add_bos_token") else False
    bos = llm.token_bos() if add_bos else None
    res = {"engine": "llama-cpp-python", "version": llama_cpp.__version__,
           "model": a.model.split("/")[-1], "add_bos": bool(add_bos), "prompts": []}
    for p in PROMPTS:
        toks = llm.tokenize(p.encode(), add_bos=bool(add_bos), special=False)
        cont, top, gaps = greedy(llm, toks, 32)
        res["prompts"].append({"text": p, "prompt_tokens": toks, "greedy": cont, "top_logits": top,
                               "gaps": gaps})
        print(f"{p!r}: {llm.detokenize(cont).decode(errors='replace')!r}", file=sys.stderr)
    text = open(a.text, "rb").read()
    toks = llm.tokenize(text, add_bos=bool(add_bos), special=False)
    ppl, n_chunks, count = perplexity(llm, toks, a.ctx, bos)
    res["ppl"] = {"file": a.text, "ctx": a.ctx, "n_tokens": len(toks), "chunks": n_chunks,
                  "scored": count, "ppl": ppl}
    if a.more_ctx:
        res["ppl_more"] = []
    for c in a.more_ctx:
        ppl, n_chunks, count = perplexity(llm, toks, c, bos)
        res["ppl_more"].append({"ctx": c, "chunks": n_chunks, "scored": count, "ppl": ppl})
        print(f"ctx {c}: ppl {ppl:.4f}", file=sys.stderr)
    out = f"tests/data/ref_{a.name}.json"
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {out}: ppl {ppl:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
