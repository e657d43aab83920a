#!/usr/bin/env python3
"""llama.cpp's quantized KV cache on the same text and chunking as
`kvslim eval` (for issue #5's "lower perplexity increase than llama.cpp's
q4_0 KV cache at equal bytes").

Perplexity the llama.cpp way (non-overlapping chunks of --ctx tokens, first
token replaced by BOS, second half scored), once per KV type; prints one
JSON line per type with ppl and its change vs the first type given.
K and V are quantized (V needs flash attention in llama.cpp). Since its PR
21038 (April 2026) llama.cpp also rotates Q, K and V by a Hadamard transform
whenever the cache is quantized, like kvslim's `rotate=kv`; run with
LLAMA_ATTN_ROT_DISABLE=1 in the environment for the plain format.

usage: scripts/llamacpp_kv_ppl.py MODEL.gguf TEXT [--ctx 2048] [--chunks 1]
           [--types f16,q8_0,q4_0] [--threads 2]
(needs: pip install llama-cpp-python numpy)
"""
import argparse
import json
import math
import sys

import numpy as np
import llama_cpp

TYPES = {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0, "q4_0": llama_cpp.GGML_TYPE_Q4_0,
         "q4_1": llama_cpp.GGML_TYPE_Q4_1, "q5_0": llama_cpp.GGML_TYPE_Q5_0}


def ppl(llm, tokens, n_ctx, chunks, bos):
    n = min(len(tokens) // n_ctx, chunks)
    nll, count = 0.0, 0
    for c in range(n):
        chunk = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        inp = list(chunk)
        if bos is not None:
            inp[0] = bos
        llm.reset()
        llm.eval(inp)
        for j in range(n_ctx // 2, n_ctx - 1):
            lg = np.array(llm.scores[j], dtype=np.float64)
            m = lg.max()
            nll += m + math.log(np.exp(lg - m).sum()) - lg[chunk[j + 1]]
            count += 1
    return math.exp(nll / count), n, count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("text")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--chunks", type=int, default=1)
    ap.add_argument("--types", default="f16,q8_0,q4_0")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    data = open(a.text, "rb").read()
    base = None
    for name in a.types.split(","):
        t = TYPES[name]
        llm = llama_cpp.Llama(model_path=a.model, n_ctx=a.ctx, n_batch=512, n_threads=a.threads,
                              n_threads_batch=a.threads, logits_all=True, verbose=False, type_k=t, type_v=t,
                              flash_attn=True)
        add_bos = llm._model.add_bos_token() if hasattr(llm._model, "add_bos_token") else False
        bos = llm.token_bos() if add_bos else None
        tokens = llm.tokenize(data, add_bos=bool(add_bos), special=False)
        p, n, count = ppl(llm, tokens, a.ctx, a.chunks, bos)
        if base is None:
            base = p
        print(json.dumps({"kv": name, "text": a.text, "ctx": a.ctx, "chunks": n, "tokens": len(tokens),
                          "scored": count, "ppl": round(p, 4), "dppl_pct": round(100.0 * (p / base - 1.0), 3)}),
              flush=True)
        del llm


if __name__ == "__main__":
    sys.exit(main())
