#!/usr/bin/env bash
# Per-entry / per-key CPU cost of the DeepSeek V4 decode attention kernels
# (src/arch/deepseek4_avx2.c, deepseek4_attn.c), the numbers behind the
# depth slope of scripts/bench_deepseek4.sh:
#   - the 8-bit lightning indexer scorer (4 heads x 128, q8_0 keys) over n
#     contiguous keys: n = 2048 (8K depth, keys in L2) and 16384 (64K depth);
#   - the top-k selection (k = 512) over those n scores;
#   - MQA scores and accumulate (4 heads x 512, f16 rows) over 640 rows
#     picked at random from a pool of 512 rows (cache-resident) or 16384 rows
#     (16 MiB: a 64K-deep CSA layer's entries, read from DRAM).
# Links build/libkvslim.a (LIB=... for another build; make first). Process CPU
# time, so a loaded machine inflates but does not skew the comparison much.
#   scripts/bench_deepseek4_kernels.sh
#   LIB=OLD_CHECKOUT/build/libkvslim.a scripts/bench_deepseek4_kernels.sh
set -eu
cd "$(dirname "$0")/.."
LIB=${LIB:-build/libkvslim.a}
OUT=${OUT:-build/bench-data}
[ -f "$LIB" ] || { echo "build first (make), or set LIB"; exit 1; }
mkdir -p "$OUT"
cat > "$OUT/bench_ds4_kernels.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include "arch/deepseek4.h"
static double now(void) { struct timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static uint64_t rs = 88172645463325252ull;
static uint32_t rnd(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (uint32_t)rs; }
static void indexer(int64_t n, int reps) {
    const int nih = 4, ihd = 128, nb = ihd / 32;
    uint8_t *keys = malloc((size_t)n * nb * 34);
    for (int64_t i = 0; i < n * nb * 34; i++) keys[i] = (uint8_t)rnd();
    for (int64_t i = 0; i < n * nb; i++) { uint16_t d = (uint16_t)(0x2000 + (rnd() & 0xff)); memcpy(keys + i * 34, &d, 2); }
    int8_t q[512]; float dq[4] = {0.01f, 0.02f, 0.03f, 0.04f}, w[4] = {1, 2, 3, 4};
    for (int i = 0; i < 512; i++) q[i] = (int8_t)((int)(rnd() % 255) - 127);
    float *sc = malloc(sizeof(float) * n), *tmp = malloc(sizeof(float) * n);
    int32_t idx[512];
    double t0 = now();
    for (int r = 0; r < reps; r++) ds4_iscore_q8_avx2(keys, n, q, dq, w, nih, ihd, sc);
    double t1 = now();
    for (int r = 0; r < reps; r++) ds4_select_topk(sc, n, 512, tmp, idx);
    double t2 = now();
    printf("indexer n %6lld: score %6.2f ns/entry, top-512 %5.2f ns/entry\n", (long long)n,
           1e9 * (t1 - t0) / reps / n, 1e9 * (t2 - t1) / reps / n);
    free(keys); free(sc); free(tmp);
}
static void mqa(int nk, int pool, int reps) {
    const int H = 4, hd = 512;
    uint16_t *rows = malloc((size_t)pool * hd * 2);
    for (size_t i = 0; i < (size_t)pool * hd; i++) rows[i] = (uint16_t)(0x3000 + (rnd() & 0x3ff));
    const uint8_t **rp = malloc(sizeof(void *) * nk);
    float *q = malloc(sizeof(float) * H * hd), *s = malloc(sizeof(float) * H * nk), *o = malloc(sizeof(float) * H * hd);
    for (int i = 0; i < H * hd; i++) q[i] = (float)(rnd() % 100) / 100.0f;
    double ts = 0, ta = 0;
    for (int r = 0; r < reps; r++) {
        for (int k = 0; k < nk; k++) rp[k] = (const uint8_t *)(rows + (size_t)(rnd() % pool) * hd);
        double t0 = now();
        ds4_mqa_scores_avx2(1, rp, nk, q, H, hd, 0.01f, s);
        double t1 = now();
        for (int i = 0; i < H * nk; i++) s[i] = 1.0f / nk;
        double t2 = now();
        ds4_mqa_accum_avx2(1, rp, nk, s, H, hd, o);
        double t3 = now();
        ts += t1 - t0; ta += t3 - t2;
    }
    printf("mqa %d rows of a %5d-row pool: scores %6.1f ns/row, accumulate %6.1f ns/row\n", nk, pool,
           1e9 * ts / reps / nk, 1e9 * ta / reps / nk);
    free(rows); free(rp); free(q); free(s); free(o);
}
int main(void) {
    indexer(2048, 2000);
    indexer(16384, 250);
    mqa(640, 512, 300);
    mqa(640, 16384, 300);
    return 0;
}
C
cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc "$OUT/bench_ds4_kernels.c" "$LIB" -lm -pthread -o "$OUT/bench_ds4_kernels"
echo "# $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg) lib: $LIB"
"$OUT/bench_ds4_kernels"
