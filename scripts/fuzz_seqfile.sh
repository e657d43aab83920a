#!/usr/bin/env bash
# Fuzz the sequence-file reader (src/kv/kv_file.c, behind kvs_seq_load) with
# libFuzzer + ASan + UBSan for a bounded time; see tests/fuzz/fuzz_seqfile.c.
#   FUZZ_SECONDS   run time (default 60)
#   CLANG          compiler for the fuzz target (default clang)
# The reader is built with clang, coverage and sanitizers; the rest of the
# library comes from the plain build ($BUILD/libkvslim.a, made first). Seeds:
# valid files for the Gemma 4 fixture written by the target's seed build into
# fuzz-corpus/seqfile/seeds; the evolving corpus lives in
# fuzz-corpus/seqfile/corpus (git-ignored), crash reproducers in .../crashes.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
CLANG=${CLANG:-clang}
BUILD=${BUILD:-build}
OUT=$BUILD/fuzz
CORPUS=fuzz-corpus/seqfile
mkdir -p "$OUT" "$CORPUS/seeds" "$CORPUS/corpus" "$CORPUS/crashes"
command -v "$CLANG" >/dev/null 2>&1 || {
  echo "fuzz_seqfile: '$CLANG' not found; install clang (Debian: apt-get install clang libclang-rt-14-dev)" >&2
  exit 2
}
make -j"$(nproc)" "$BUILD/libkvslim.a" >/dev/null
LIBS="$BUILD/libkvslim.a -lmicrohttpd -ljansson -llapacke -lm -pthread"
CFLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -Isrc -pthread -fno-omit-frame-pointer"
# shellcheck disable=SC2086
"$CLANG" $CFLAGS -fsanitize=fuzzer-no-link,address,undefined -c src/kv/kv_file.c -o "$OUT/fz_kv_file.o"
# the instrumented reader comes first, so the archive's copy of it is not linked
# shellcheck disable=SC2086
if ! "$CLANG" $CFLAGS -fsanitize=fuzzer,address,undefined tests/fuzz/fuzz_seqfile.c "$OUT/fz_kv_file.o" $LIBS \
     -o "$OUT/fuzz_seqfile" 2>"$OUT/fuzz_seqfile.build.log"; then
  echo "fuzz_seqfile: cannot build with -fsanitize=fuzzer,address,undefined (libFuzzer runtime missing?" >&2
  echo "On Debian 12: apt-get install clang libclang-rt-14-dev). Compiler said:" >&2
  sed 's/^/  /' "$OUT/fuzz_seqfile.build.log" >&2
  exit 2
fi
# shellcheck disable=SC2086
cc $CFLAGS -DSEQ_SEEDS tests/fuzz/fuzz_seqfile.c $LIBS -o "$OUT/seqfile_seeds"
"$OUT/seqfile_seeds" "$CORPUS/seeds"

echo "fuzz_seqfile: running for ${FUZZ_SECONDS}s"
log="$OUT/fuzz_seqfile.log"
set +e
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
"$OUT/fuzz_seqfile" "$CORPUS/corpus" "$CORPUS/seeds" \
  -max_len=65536 -timeout=10 -rss_limit_mb=2048 -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 \
  -artifact_prefix="$CORPUS/crashes/" >"$log" 2>&1
rc=$?
set -e
grep -E '^(stat::|#[0-9]+ +DONE|==[0-9]+==ERROR|SUMMARY)' "$log" || tail -n 20 "$log"
if [ "$rc" -ne 0 ]; then
  echo "fuzz_seqfile: FAILED (exit $rc); see $log and $CORPUS/crashes/" >&2
  tail -n 40 "$log" >&2
  exit 1
fi
echo "fuzz_seqfile: ok"
