#!/usr/bin/env python3
"""Float64 numpy reference forward pass for llama-architecture GGUF models.

Independent of both kvslim and llama.cpp: weights are dequantized with the
PyPI `gguf` package and every activation is float64, so the result is the
exact math of the quantized model up to f64 rounding. Used to judge which
engine's logits are closer to exact.

Architecture (llama): x = token_embd[tok];
  per layer: h = rmsnorm(x) * attn_norm; q,k,v = h Wq, h Wk, h Wv;
             RoPE in GGUF "normal" order (pairs (2i, 2i+1), the converter
             permutes Q/K), theta_i = pos * base^(-2i/d);
             causal GQA softmax(q k^T / sqrt(d)) v; x += o Wo;
             h = rmsnorm(x) * ffn_norm; x += (silu(h Wg) * (h Wu)) Wd
  logits = (rmsnorm(x) * output_norm) output^T  (output = token_embd if tied)

usage: scripts/ref_numpy_llama.py MODEL.gguf --ref tests/data/ref_smollm2.json
           --out tests/data/ref_smollm2_f64.json
           [--compare --dump-logits build/dump_logits]
--compare also runs kvslim (through scripts/dump_logits.c, built separately)
and llama.cpp (the peer of scripts/setup_peers.sh through scripts/peer.py,
which re-runs this script in the reference Python peers/venv) on the teacher-forced sequences
and stores max/RMS |diff| vs f64 over the f64 top-20 ids per position.
(needs: pip install gguf numpy)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import gguf


def field(r, key):
    f = r.fields[key]
    v = f.parts[f.data[0]]
    return v.tolist()[0] if len(v) == 1 else v.tolist()


class Model:
    def __init__(self, path):
        r = gguf.GGUFReader(path)
        arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
        if arch != "llama":
            sys.exit(f"architecture {arch!r} is not llama")
        self.n_layer = field(r, "llama.block_count")
        self.n_embd = field(r, "llama.embedding_length")
        self.n_head = field(r, "llama.attention.head_count")
        self.n_head_kv = field(r, "llama.attention.head_count_kv")
        self.eps = field(r, "llama.attention.layer_norm_rms_epsilon")
        self.base = field(r, "llama.rope.freq_base") if "llama.rope.freq_base" in r.fields else 10000.0
        self.head_dim = self.n_embd // self.n_head
        self.w = {}
        for t in r.tensors:
            a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
            # GGUF shape is ne-ordered [n_in, n_out]; numpy array is (n_out, n_in)
            ne = [int(x) for x in t.shape]
            a = a.reshape(list(reversed(ne)))
            self.w[t.name] = a
        if "output.weight" not in self.w:
            self.w["output.weight"] = self.w["token_embd.weight"]
        kv = self.n_head_kv * self.head_dim
        assert self.w["blk.0.attn_k.weight"].shape == (kv, self.n_embd), self.w["blk.0.attn_k.weight"].shape
        assert self.w["blk.0.attn_q.weight"].shape == (self.n_embd, self.n_embd)
        assert self.w["blk.0.ffn_down.weight"].shape[0] == self.n_embd

    def rmsnorm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos):
        # x: (T, H, d); rotate pairs (2i, 2i+1) by pos * base^(-2i/d)
        d = x.shape[-1]
        inv = self.base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
        ang = pos[:, None] * inv[None, :]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * c - x1 * s
        out[..., 1::2] = x0 * s + x1 * c
        return out

    def forward(self, tokens):
        """Logits (T, n_vocab) float64 for every position."""
        T, H, Hk, d = len(tokens), self.n_head, self.n_head_kv, self.head_dim
        W = self.w
        pos = np.arange(T, dtype=np.float64)
        mask = np.triu(np.full((T, T), -np.inf), 1)
        x = W["token_embd.weight"][np.asarray(tokens)]
        for l in range(self.n_layer):
            p = f"blk.{l}."
            h = self.rmsnorm(x, W[p + "attn_norm.weight"])
            q = self.rope((h @ W[p + "attn_q.weight"].T).reshape(T, H, d), pos)
            k = self.rope((h @ W[p + "attn_k.weight"].T).reshape(T, Hk, d), pos)
            v = (h @ W[p + "attn_v.weight"].T).reshape(T, Hk, d)
            o = np.empty((T, H, d))
            for hh in range(H):
                g = hh // (H // Hk)
                sc = q[:, hh, :] @ k[:, g, :].T / np.sqrt(d) + mask
                sc = np.exp(sc - sc.max(axis=1, keepdims=True))
                sc /= sc.sum(axis=1, keepdims=True)
                o[:, hh, :] = sc @ v[:, g, :]
            x = x + o.reshape(T, H * d) @ W[p + "attn_output.weight"].T
            h = self.rmsnorm(x, W[p + "ffn_norm.weight"])
            gt = h @ W[p + "ffn_gate.weight"].T
            up = h @ W[p + "ffn_up.weight"].T
            x = x + (gt / (1.0 + np.exp(-gt)) * up) @ W[p + "ffn_down.weight"].T
        h = self.rmsnorm(x, W["output_norm.weight"])
        return h @ W["output.weight"].T


def topn(row, n):
    idx = np.argsort(-row, kind="stable")[:n]
    return [[int(i), float(row[i])] for i in idx]


def llamacpp_logits(model_path, seqs):
    import peer
    llama_cpp = peer.llama_cpp()
    llm = llama_cpp.Llama(model_path=model_path, n_ctx=256, logits_all=True,
                          n_threads=2, verbose=False)
    out = []
    for s in seqs:
        llm.reset()
        llm.eval(s)
        out.append(np.array(llm.scores[:len(s)], dtype=np.float64))
    return out


def kvslim_logits(binpath, model_path, seqs):
    out = []
    with tempfile.TemporaryDirectory() as td:
        for s in seqs:
            f = os.path.join(td, "l.bin")
            subprocess.run([binpath, model_path, ",".join(map(str, s)), f, "2"],
                           check=True, stdout=subprocess.DEVNULL)
            out.append(np.fromfile(f, dtype=np.float32).reshape(len(s), -1).astype(np.float64))
    return out


def diff_stats(a, b, ids):
    """max and RMS |a-b| over ids (list of id arrays, one per position)."""
    d = np.concatenate([np.abs(a[i, ix] - b[i, ix]) for i, ix in enumerate(ids)])
    return float(d.max()), float(np.sqrt(np.mean(d * d)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--ref", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--compare", action="store_true")
    ap.add_argument("--dump-logits", default="build/dump_logits")
    a = ap.parse_args()
    if a.compare:
        import peer
        peer.llama_cpp()   # into the reference Python before any work

    ref = json.load(open(a.ref))
    m = Model(a.model)
    res = {"engine": "numpy-float64 (scripts/ref_numpy_llama.py)",
           "gguf_version": getattr(gguf, "__version__", "?"),
           "numpy_version": np.__version__,
           "model": os.path.basename(a.model), "prompts": []}
    seqs, f64 = [], []
    for p in ref["prompts"]:
        pt, gr = p["prompt_tokens"], p["greedy"]
        seq = pt + gr
        L = m.forward(seq)
        seqs.append(seq)
        f64.append(L)
        first = L[len(pt) - 1]
        steps = []
        for k in range(len(gr)):
            row = L[len(pt) - 1 + k]
            (i1, v1), (i2, v2) = topn(row, 2)
            steps.append({"k": k, "llamacpp_choice": gr[k], "top2": [i1, i2],
                          "gap": v1 - v2, "choice_is_argmax": i1 == gr[k],
                          "choice_logit": float(row[gr[k]])})
        res["prompts"].append({
            "text": p["text"], "prompt_tokens": pt, "greedy": gr,
            "llamacpp_top_ids_f64_logits": [[i, float(first[i]), lv] for i, lv in p["top_logits"]],
            "f64_top10": topn(first, 10),
            "teacher_forced": steps,
            "f64_top20_per_position": [topn(L[i], 20) for i in range(len(seq))],
        })

        print(f"== {p['text']!r}")
        print("  llama.cpp top-10 id: llama.cpp logit / f64 logit")
        for i, lv in p["top_logits"]:
            print(f"    {i:6d}: {lv:10.5f} / {first[i]:10.5f}  (d={lv - first[i]:+.5f})")
        bad = [s["k"] for s in steps if not s["choice_is_argmax"]]
        print(f"  greedy path: llama.cpp choice == f64 argmax at {len(steps) - len(bad)}/{len(steps)} steps"
              + (f"; differs at k={bad}" if bad else ""))
        sm = sorted(steps, key=lambda s: s["gap"])[:3]
        print("  smallest f64 top-2 gaps: " + ", ".join(f"k={s['k']} {s['gap']:.4f}" for s in sm))

    if a.compare:
        kv = kvslim_logits(a.dump_logits, a.model, seqs)
        lc = llamacpp_logits(a.model, seqs)
        cmp = []
        print("\n prompt                     | kvslim-f64 max / rms | llama.cpp-f64 max / rms | kvslim-llama.cpp max / rms")
        for pi, p in enumerate(res["prompts"]):
            npt = len(p["prompt_tokens"])
            pos = range(npt - 1, len(seqs[pi]))
            ids = [np.argsort(-f64[pi][i], kind="stable")[:20] for i in pos]
            F, K, C = (x[npt - 1:] for x in (f64[pi], kv[pi], lc[pi]))
            e = {"kvslim_vs_f64": diff_stats(K, F, ids), "llamacpp_vs_f64": diff_stats(C, F, ids),
                 "kvslim_vs_llamacpp": diff_stats(K, C, ids)}
            mism = []
            for j, i in enumerate(pos):
                ak, ac = int(np.argmax(K[j])), int(np.argmax(C[j]))
                if ak != ac:
                    (i1, v1), (i2, v2) = topn(F[j], 2)
                    mism.append({"pos": i, "kvslim": ak, "llamacpp": ac, "f64_top2": [i1, i2],
                                 "f64_gap": v1 - v2})
            e["argmax_mismatches"] = mism
            e["argmax_vs_f64"] = {
                "kvslim": sum(int(np.argmax(K[j]) == np.argmax(F[j])) for j in range(len(pos))),
                "llamacpp": sum(int(np.argmax(C[j]) == np.argmax(F[j])) for j in range(len(pos))),
                "n": len(pos)}
            p["compare"] = e
            cmp.append(e)
            f = lambda t: f"{t[0]:.4f} / {t[1]:.4f}"
            print(f" {p['text'][:26]!r:26s} | {f(e['kvslim_vs_f64']):20s} | {f(e['llamacpp_vs_f64']):23s} | "
                  f"{f(e['kvslim_vs_llamacpp'])}")
            for mm in mism:
                print(f"   argmax differs at pos {mm['pos']}: kvslim {mm['kvslim']} llama.cpp {mm['llamacpp']}"
                      f" f64 top2 {mm['f64_top2']} gap {mm['f64_gap']:.4f}")
            print(f"   argmax == f64 argmax: kvslim {e['argmax_vs_f64']['kvslim']}/{len(pos)},"
                  f" llama.cpp {e['argmax_vs_f64']['llamacpp']}/{len(pos)}")

    with open(a.out, "w") as fo:
        json.dump(res, fo, separators=(",", ":"))
        fo.write("\n")


if __name__ == "__main__":
    main()
