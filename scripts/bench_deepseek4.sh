#!/usr/bin/env bash
# Decode speed vs KV depth: a DeepSeek V4-shaped random fixture (compressed
# attention: 128-token raw window + top-512 CSA entries + all HCA entries)
# next to a plain GQA llama fixture of similar size (full KV, whose attention
# cost grows with the depth T). Fixtures are generated into build/bench-data/
# (git-ignored) by scripts/gen_fixture_deepseek4.py (python3 with gguf and
# numpy; PY=... picks the interpreter).
#
# A small driver (written to build/bench-data/, linked against
# build/libkvslim.a) prefills ONE session up to each depth in turn (not timed)
# and times N_GEN single-token decode steps there, reporting wall tok/s and
# process CPU milliseconds per token. On a shared, loaded machine the CPU time
# is the stable number (THREADS=1 makes it the work of one core); wall tok/s
# swings with the load. It also prints the KV bytes the session holds and the
# formula's bytes (kvs_kv_scheme_bytes) at each depth.
#
# ROUNDS=R (R > 0) switches to an A/B-style depth comparison that a loaded
# machine cannot skew: one session per depth, all prefilled first, then R
# rounds that each decode N_GEN tokens in every session in turn; it prints
# every round and the median CPU ms/token per depth (and its ratio to the
# first depth). Use two depths, e.g. DEPTHS_V4=8192,65536 ROUNDS=7.
#
# LIB=path/to/libkvslim.a benchmarks another build (e.g. main's, for old/new
# comparisons; give each its own OUT so the drivers do not collide).
# KVS_DS4_PROFILE=1 adds the V4 decode attention's per-stage thread CPU times,
# summed over every decode step of the process (give one depth for a per-depth
# breakdown, e.g. KVS_DS4_PROFILE=1 DEPTHS_V4=65536 DEPTHS_GQA=). With
# THREADS=2 on a loaded machine the process CPU time includes the pool's
# spin-waits; compare 2-thread runs only on a quiet machine.
#
#   scripts/bench_deepseek4.sh
#   DEPTHS_V4=8192,65536 DEPTHS_GQA=8192 THREADS=1 N_GEN=32 scripts/bench_deepseek4.sh
#   LIB=OLD_CHECKOUT/build/libkvslim.a OUT=build/bench-old DEPTHS_GQA= scripts/bench_deepseek4.sh
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-build/bench-data}
DEPTHS_V4=${DEPTHS_V4-8192,16384,32768,65536}
DEPTHS_GQA=${DEPTHS_GQA-8192,16384,32768}
THREADS=${THREADS:-1}
N_GEN=${N_GEN:-32}
ROUNDS=${ROUNDS:-0}
LIB=${LIB:-build/libkvslim.a}
mkdir -p "$OUT"
V4="$OUT/deepseek4_bench.gguf"
GQA="$OUT/llama_gqa_bench.gguf"
[ -f "$V4" ] || "$PY" scripts/gen_fixture_deepseek4.py "$V4" --shape bench
[ -f "$GQA" ] || "$PY" scripts/gen_fixture_deepseek4.py "$GQA" --shape gqa
[ -f "$LIB" ] || { echo "build first (make), or set LIB"; exit 1; }

cat > "$OUT/bench_depth.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "kvslim.h"
static double now(clockid_t c) { struct timespec t; clock_gettime(c, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
    if (argc < 7) return 2;
    const char *label = argv[1], *path = argv[2];
    int threads = atoi(argv[4]), n_gen = atoi(argv[5]), rounds = atoi(argv[6]);
    unsigned long long depth[16]; int nd = 0;
    for (char *p = strtok(argv[3], ","); p && nd < 16; p = strtok(NULL, ",")) depth[nd++] = strtoull(p, NULL, 10);
    kvs_model *m = NULL;
    if (kvs_model_load(path, NULL, &m) != KVS_OK) { fprintf(stderr, "%s\n", kvs_last_error()); return 1; }
    kvs_model_info in; kvs_model_get_info(m, &in);
    kvs_session_params sp = kvs_session_params_default();
    sp.n_ctx = (uint32_t)(depth[nd - 1] + (unsigned long long)n_gen * nd + 16);
    sp.n_threads = threads;
    kvs_session *s = NULL;
    if (kvs_session_new(m, &sp, &s) != KVS_OK) { fprintf(stderr, "%s\n", kvs_last_error()); return 1; }
    size_t nt = sp.n_ctx;
    kvs_token *tok = malloc(sizeof *tok * nt);
    float *logits = malloc(sizeof(float) * (size_t)in.n_vocab);
    for (size_t i = 0; i < nt; i++) tok[i] = 3 + (kvs_token)((i * 2654435761u) % (unsigned)(in.n_vocab - 3));
    if (rounds > 0) { /* one session per depth, decode rounds interleaved */
        kvs_session *ss[16] = {0};
        static double ms[16][64];
        if (rounds > 64) rounds = 64;
        sp.n_ctx = (uint32_t)(depth[nd - 1] + (unsigned long long)n_gen * rounds + 16);
        for (int k = 0; k < nd; k++) {
            if (kvs_session_new(m, &sp, &ss[k]) != KVS_OK || kvs_decode(ss[k], tok, depth[k], false, NULL) != KVS_OK) {
                fprintf(stderr, "%s\n", kvs_last_error()); return 1;
            }
        }
        for (int r = 0; r < rounds; r++)
            for (int k = 0; k < nd; k++) {
                double c0 = now(CLOCK_PROCESS_CPUTIME_ID);
                for (int g = 0; g < n_gen; g++) {
                    uint32_t p = kvs_session_n_past(ss[k]);
                    if (kvs_decode(ss[k], tok + p, 1, false, logits) != KVS_OK) { fprintf(stderr, "%s\n", kvs_last_error()); return 1; }
                }
                ms[k][r] = 1e3 * (now(CLOCK_PROCESS_CPUTIME_ID) - c0) / n_gen;
                printf("%-4s round %2d depth %8llu cpu_ms_per_tok %.3f\n", label, r, depth[k], ms[k][r]);
                fflush(stdout);
            }
        double med0 = 0;
        for (int k = 0; k < nd; k++) {
            for (int i = 1; i < rounds; i++) /* insertion sort */
                for (int j = i; j > 0 && ms[k][j] < ms[k][j - 1]; j--) { double t = ms[k][j]; ms[k][j] = ms[k][j - 1]; ms[k][j - 1] = t; }
            double med = rounds % 2 ? ms[k][rounds / 2] : 0.5 * (ms[k][rounds / 2 - 1] + ms[k][rounds / 2]);
            if (k == 0) med0 = med;
            uint32_t p = kvs_session_n_past(ss[k]);
            printf("%-4s %8llu median_cpu_ms_per_tok %.3f (min %.3f max %.3f, x%.2f of depth %llu) kv %llu = formula %llu\n",
                   label, depth[k], med, ms[k][0], ms[k][rounds - 1], med / med0, depth[0],
                   (unsigned long long)kvs_session_kv_bytes(ss[k]), (unsigned long long)kvs_session_kv_bytes_at(ss[k], p));
        }
        return 0;
    }
    for (int k = 0; k < nd; k++) {
        uint32_t past = kvs_session_n_past(s);
        if (depth[k] > past && kvs_decode(s, tok + past, depth[k] - past, false, NULL) != KVS_OK) {
            fprintf(stderr, "%s\n", kvs_last_error()); return 1;
        }
        double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
        for (int g = 0; g < n_gen; g++) {
            uint32_t p = kvs_session_n_past(s);
            if (kvs_decode(s, tok + p, 1, false, logits) != KVS_OK) { fprintf(stderr, "%s\n", kvs_last_error()); return 1; }
        }
        double w = now(CLOCK_MONOTONIC) - w0, c = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
        uint32_t p = kvs_session_n_past(s);
        printf("%-4s %8llu %9.2f %10.2f %12llu %12llu\n", label, depth[k], n_gen / w, 1e3 * c / n_gen,
               (unsigned long long)kvs_session_kv_bytes(s), (unsigned long long)kvs_session_kv_bytes_at(s, p));
        fflush(stdout);
    }
    return 0;
}
C
cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude "$OUT/bench_depth.c" "$LIB" -lm -pthread -o "$OUT/bench_depth"
echo "# $(date -u +%FT%TZ) threads=$THREADS n_gen=$N_GEN load: $(cut -d' ' -f1-3 /proc/loadavg) cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "# model depth wall_tok_s cpu_ms_per_tok kv_bytes_held kv_bytes_formula"
# an empty depth list skips that model
[ -z "$DEPTHS_V4" ] || "$OUT/bench_depth" v4 "$V4" "$DEPTHS_V4" "$THREADS" "$N_GEN" "$ROUNDS"
[ -z "$DEPTHS_GQA" ] || "$OUT/bench_depth" gqa "$GQA" "$DEPTHS_GQA" "$THREADS" "$N_GEN" "$ROUNDS"
