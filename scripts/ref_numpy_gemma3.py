#!/usr/bin/env python3
"""Float64 numpy reference for Gemma 3 GGUFs (the Gemma 4 reference's model
class in gemma3 mode: scripts/ref_numpy_gemma4.py documents the math).

For each prompt of a llama.cpp reference file (scripts/ref_llamacpp.py), runs
the prompt followed by llama.cpp's greedy continuation teacher-forced, in
float64 from the dequantized weights, and stores the exact top-10 logits after
the prompt and, for every greedy step, the exact argmax and top-2 gap: a test
can then tell whether a divergence from llama.cpp happens at an exact-math
near-tie.

usage: scripts/ref_numpy_gemma3.py models/gemma-3-270m-q4_k_m.gguf
           --ref tests/data/ref_gemma3.json --out tests/data/ref_gemma3_f64.json
(needs: pip install gguf numpy)
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_numpy_gemma4 import Model  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--ref", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    ref = json.load(open(a.ref))
    m = Model(a.model)
    res = {"engine": "numpy float64 (scripts/ref_numpy_gemma3.py)", "model": ref["model"], "prompts": []}
    for p in ref["prompts"]:
        pt, gr = p["prompt_tokens"], p["greedy"]
        logits = m.forward(np.array(pt + gr))
        first = logits[len(pt) - 1]
        top = np.argsort(-first)[:10]
        tf = []
        for i in range(len(gr)):
            lg = logits[len(pt) - 1 + i]
            o = np.argsort(-lg)[:2]
            tf.append({"argmax": int(o[0]), "gap": float(lg[o[0]] - lg[o[1]])})
        res["prompts"].append({"text": p["text"], "f64_top10": [[int(i), float(first[i])] for i in top],
                               "teacher_forced": tf})
        agree = sum(t["argmax"] == g for t, g in zip(tf, gr))
        print(f"{p['text']!r}: f64 argmax = llama.cpp greedy at {agree}/{len(gr)} steps", file=sys.stderr)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
