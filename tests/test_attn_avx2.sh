#!/usr/bin/env bash
# The attention suite again with the AVX-512 kernels switched off
# (KVS_FORCE_AVX2=1), so the AVX2 kernels stay tested on CPUs where the
# AVX-512 ones are chosen. Skips where the CPU has no AVX-512.
set -euo pipefail
BUILD=${BUILD:-build}
if ! grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  echo "skip attn (AVX2 kernels): no AVX-512 here, so test_attn ran them already"
  exit 0
fi
KVS_FORCE_AVX2=1 "$BUILD/tests/test_attn" | sed 's/^ok   attn/ok   attn (AVX2 kernels)/'
