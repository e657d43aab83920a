#!/usr/bin/env python3
"""Re-quantize a GGUF file with llama.cpp's own quantizer (the peer's
libllama, through scripts/peer.py), to time weight types no registry model
ships in (Q2_K, Q3_K_M, ...):

    python3 scripts/peer_quantize.py models/qwen2.5-coder-1.5b-instruct.gguf Q3_K_M OUT.gguf

Re-quantizing an already quantized file loses more quality than quantizing
the original weights: the result is for speed comparisons, not for quality
ones. The output is written to a temporary file next to OUT and renamed.
"""
import os
import sys

import peer

FTYPES = {"Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15,
          "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18, "Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "Q8_0": 7}


def main():
    llama_cpp = peer.llama_cpp()
    if len(sys.argv) != 4 or sys.argv[2] not in FTYPES:
        sys.exit(f"usage: {sys.argv[0]} IN.gguf TYPE OUT.gguf  (TYPE: {', '.join(FTYPES)})")
    src, ftype, out = sys.argv[1], sys.argv[2], sys.argv[3]
    if not os.path.isfile(src):
        sys.exit(f"peer_quantize: {src}: not a file")
    if os.path.lexists(out) and not os.path.isfile(out):
        sys.exit(f"peer_quantize: {out} exists and is not a regular file; not replacing it")
    tmp = f"{out}.tmp{os.getpid()}"
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = FTYPES[ftype]
    p.allow_requantize = True
    p.nthread = os.cpu_count() or 1
    try:
        rc = llama_cpp.llama_model_quantize(src.encode(), tmp.encode(), p)
        if rc != 0:
            sys.exit(f"peer_quantize: llama_model_quantize failed ({rc})")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"wrote {out} ({os.path.getsize(out)} bytes, {ftype} from {src})")


if __name__ == "__main__":
    main()
