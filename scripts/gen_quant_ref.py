#!/usr/bin/env python3
"""Reference rows for tests/test_quant.c from gguf-py's own quantizer and
dequantizer (gguf.quants), for the formats whose ecosystem writer is that
Python code: MXFP4 (llama.cpp's DeepSeek V4 converter repacks the routed
experts with it).

Writes tests/data/quant_ref_mxfp4.bin:
  u32 magic 'KQRF', u32 ggml type (39), u32 n (elements, a multiple of 32)
  f32[n]  the input row: blocks of N(0,1) scaled by 1e-3 .. 1e3, zero blocks,
          single outliers, exact E2M1 grid points and midpoints (ties)
  u8[..]  gguf.quants.quantize(row, MXFP4)
  f32[n]  gguf.quants.dequantize(those bytes, MXFP4)
test_quant checks kvslim's quantizer (bit-exact bytes) and both dequantizers
(bit-exact floats) against them.

usage: python3 scripts/gen_quant_ref.py [OUT]   (needs numpy and gguf)
"""
import importlib.metadata
import struct
import sys

import numpy as np
import gguf
from gguf.quants import quantize, dequantize


def row(rng):
    blocks = []
    for b in range(96):
        kind = b % 8
        if kind == 0:
            x = np.zeros(32)
        elif kind == 1:
            x = rng.standard_normal(32) * 1e-3
        elif kind == 2:
            x = rng.standard_normal(32) * 1e3
        elif kind == 3:
            x = rng.standard_normal(32)
            x[rng.integers(32)] *= 40
        elif kind == 4:  # exact grid points of one scale and their midpoints
            g = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6]) * 2.0 ** rng.integers(-4, 4)
            mids = (g[1:] + g[:-1]) / 2
            x = np.concatenate([g, -g, mids, -mids, [g[-1], -g[-1]]])[:32]
        else:
            x = rng.standard_normal(32) * 2.0 ** rng.integers(-6, 6)
        blocks.append(x)
    return np.concatenate(blocks).astype(np.float32)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/quant_ref_mxfp4.bin"
    qt = gguf.GGMLQuantizationType.MXFP4
    x = row(np.random.default_rng(39))
    q = quantize(x.reshape(1, -1), qt).reshape(-1)
    y = dequantize(q.reshape(1, -1), qt).reshape(-1).astype(np.float32)
    with open(out, "wb") as f:
        f.write(struct.pack("<4sII", b"KQRF", int(qt), x.size))
        f.write(x.tobytes())
        f.write(q.astype(np.uint8).tobytes())
        f.write(y.tobytes())
    print(f"wrote {out}: {x.size} elements, {q.size} bytes (gguf-py {importlib.metadata.version('gguf')})")


if __name__ == "__main__":
    main()
