#!/usr/bin/env python3
"""llama.cpp's logits for a fixed token sequence, two ways: the whole
sequence as one prefill (batches of --batch tokens, every position's logits),
and token by token (one decode call per token). The second reference of
tests/test_peer.c, which compares kvslim's logits with these.

llama.cpp is the peer of scripts/setup_peers.sh through its own Python
bindings (scripts/peer.py re-runs this script under peers/venv). The raw
llama.h API is used (llama_decode with a batch), not the high-level Llama
class, so nothing (sampling, caching, BOS) is added to the sequence.

OUT.bin: u32 n, u32 n_vocab, then f32[n][n_vocab] prefill logits, then
f32[n][n_vocab] token-by-token logits (native byte order).
stdout: one line "llama.cpp <version> <commit>".

usage: python3 scripts/ref_llamacpp_logits.py MODEL.gguf ID,ID,...|@FILE OUT.bin [--batch 512] [--threads 2] [--kv f16|f32]
"""
import argparse
import ctypes
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer  # noqa: E402

llama_cpp = peer.llama_cpp()
import numpy as np  # noqa: E402

LLAMA_COMMIT = "0c1e570"  # the vendored llama.cpp of llama-cpp-python 0.3.36 (scripts/setup_peers.sh)


def run(ctx, n_vocab, tokens, step):
    L = llama_cpp
    mem = L.llama_get_memory(ctx)
    L.llama_memory_clear(mem, True)
    out = np.zeros((len(tokens), n_vocab), dtype=np.float32)
    batch = L.llama_batch_init(max(step, 1), 0, 1)
    try:
        for p0 in range(0, len(tokens), step):
            chunk = tokens[p0:p0 + step]
            batch.n_tokens = len(chunk)
            for i, t in enumerate(chunk):
                batch.token[i] = t
                batch.pos[i] = p0 + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1
            rc = L.llama_decode(ctx, batch)
            if rc != 0:
                sys.exit(f"llama_decode failed ({rc}) at position {p0}")
            for i in range(len(chunk)):
                lp = L.llama_get_logits_ith(ctx, i)
                out[p0 + i] = np.ctypeslib.as_array(lp, shape=(n_vocab,))
    finally:
        L.llama_batch_free(batch)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("tokens")
    ap.add_argument("out")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kv", default="f16", choices=["f16", "f32"], help="llama.cpp's K and V cache type")
    # On machines with AMX, llama.cpp's AMX buffer type takes some of the
    # DeepSeek-V2 fixtures' weights and its scheduler then finds no backend
    # for an op that reads them (GGML_ASSERT(*cur_backend_id != -1) in
    # ggml-backend.cpp); plain CPU buffers avoid that.
    ap.add_argument("--plain-weights", action="store_true",
                    help="keep weights in plain CPU buffers (no repacking extra buffer types)")
    a = ap.parse_args()
    spec = open(a.tokens[1:]).read() if a.tokens.startswith("@") else a.tokens
    tokens = [int(t) for t in spec.strip().split(",") if t]
    L = llama_cpp
    L.llama_backend_init()
    mp = L.llama_model_default_params()
    if a.plain_weights:
        mp.use_extra_bufts = False
    model = L.llama_model_load_from_file(a.model.encode(), mp)
    if not model:
        sys.exit(f"llama.cpp could not load {a.model}")
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)
    cp = L.llama_context_default_params()
    n_ctx = max(256, (len(tokens) + 255) // 256 * 256)
    cp.n_ctx = n_ctx
    cp.n_batch = max(a.batch, 1)
    cp.n_ubatch = max(a.batch, 1)
    cp.n_seq_max = 1
    cp.n_threads = a.threads
    cp.n_threads_batch = a.threads
    if a.kv == "f32":
        cp.type_k = L.GGML_TYPE_F32
        cp.type_v = L.GGML_TYPE_F32
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        sys.exit(f"llama.cpp could not make a context for {a.model}")
    pre = run(ctx, n_vocab, tokens, a.batch)
    dec = run(ctx, n_vocab, tokens, 1)
    with open(a.out, "wb") as f:
        f.write(struct.pack("<II", len(tokens), n_vocab))
        f.write(pre.tobytes())
        f.write(dec.tobytes())
    L.llama_free(ctx)
    L.llama_model_free(model)
    print(f"llama.cpp {llama_cpp.__version__} {LLAMA_COMMIT}")


if __name__ == "__main__":
    main()
