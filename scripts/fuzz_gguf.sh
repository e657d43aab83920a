#!/usr/bin/env bash
# Fuzz the GGUF reader with libFuzzer + ASan + UBSan for a bounded time.
#   FUZZ_SECONDS   run time (default 60)
#   FUZZ_JOBS      parallel fuzzing processes (default 1)
#   CLANG          compiler for the fuzz target (default clang)
#   CORE_CC        compiler for the uninstrumented rest of src/core (default cc)
# Seeds: small valid files written by `test_gguf --seeds` into
# fuzz-corpus/gguf/seeds; the evolving corpus lives in fuzz-corpus/gguf/corpus
# (git-ignored). Crash reproducers land in fuzz-corpus/gguf/crashes.
# Installs nothing: fails with a clear message if clang lacks libFuzzer.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_JOBS=${FUZZ_JOBS:-1}
CLANG=${CLANG:-clang}
OUT=build/fuzz
CORPUS=fuzz-corpus/gguf
mkdir -p "$OUT" "$CORPUS/seeds" "$CORPUS/corpus" "$CORPUS/crashes"

if ! command -v "$CLANG" >/dev/null 2>&1; then
  echo "fuzz_gguf: '$CLANG' not found; install clang (Debian: apt-get install clang libclang-rt-14-dev)" >&2
  exit 2
fi
probe_dir=$(mktemp -d)
trap 'rm -rf "$probe_dir"' EXIT
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' \
  > "$probe_dir/probe.c"
if ! "$CLANG" -fsanitize=fuzzer,address,undefined "$probe_dir/probe.c" -o "$probe_dir/probe" \
     >"$probe_dir/log" 2>&1; then
  echo "fuzz_gguf: '$CLANG' cannot build with -fsanitize=fuzzer,address,undefined (libFuzzer runtime" >&2
  echo "missing?). On Debian 12: apt-get install clang libclang-rt-14-dev. Compiler said:" >&2
  sed 's/^/  /' "$probe_dir/log" >&2
  exit 2
fi

CFLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -Isrc -Itests -pthread -fno-omit-frame-pointer"
CORE_CC=${CORE_CC:-cc}
# The reader and its allocation/error hooks are built with clang, coverage and
# sanitizers. The rest of src/core (kvs_row_bytes lives in dtype.c, which pulls
# in the quant kernels and CPU dispatch) is plain uninstrumented code built
# with $CORE_CC, ISA-specific files with their flags as in the Makefile.
isa_flags() {
  case "$1" in
    *_avx2.c)   echo "-mavx2 -mfma -mf16c" ;;
    *_avx512.c) echo "-mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c" ;;
    *_vnni.c)   echo "-mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c -mavx512vnni" ;;
  esac
}
fuzz_objs=(); core_objs=(); plain_objs=()
for f in src/gguf/*.c src/core/alloc.c src/core/error.c; do
  o="$OUT/fz_$(echo "$f" | tr / _).o"
  # shellcheck disable=SC2086
  "$CLANG" $CFLAGS -fsanitize=fuzzer-no-link,address,undefined -c "$f" -o "$o"
  fuzz_objs+=("$o")
  o="$OUT/pl_$(echo "$f" | tr / _).o"
  # shellcheck disable=SC2086
  "$CORE_CC" $CFLAGS -c "$f" -o "$o"
  plain_objs+=("$o")
done
for f in src/core/*.c; do
  case "$f" in src/core/alloc.c|src/core/error.c) continue ;; esac
  o="$OUT/core_$(echo "$f" | tr / _).o"
  # shellcheck disable=SC2086
  "$CORE_CC" $CFLAGS $(isa_flags "$f") -c "$f" -o "$o"
  core_objs+=("$o")
done
# shellcheck disable=SC2086
"$CLANG" $CFLAGS -fsanitize=fuzzer,address,undefined tests/fuzz/fuzz_gguf.c "${fuzz_objs[@]}" \
  "${core_objs[@]}" -lm -ljansson -o "$OUT/fuzz_gguf"

# Seed generator: the unit test's image builders (test_gguf --seeds), plain build.
# shellcheck disable=SC2086
"$CORE_CC" $CFLAGS tests/test_gguf.c "${plain_objs[@]}" "${core_objs[@]}" -lm -ljansson -o "$OUT/gguf_seeds"
"$OUT/gguf_seeds" --seeds "$CORPUS/seeds"

cat > "$OUT/gguf.dict" <<'DICT'
"GGUF"
"\x03\x00\x00\x00"
"\x02\x00\x00\x00"
"general.alignment"
"general.architecture"
"\x00\x00\x00\x00\x00\x00\x00\x00"
"\xff\xff\xff\xff\xff\xff\xff\xff"
"\x20\x00\x00\x00"
"\x09\x00\x00\x00"
"\x08\x00\x00\x00"
DICT

echo "fuzz_gguf: running for ${FUZZ_SECONDS}s with $FUZZ_JOBS job(s)"
log="$OUT/fuzz_gguf.log"
set +e
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
ASAN_OPTIONS=detect_leaks=1 \
"$OUT/fuzz_gguf" "$CORPUS/corpus" "$CORPUS/seeds" \
  -dict="$OUT/gguf.dict" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
  -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 \
  -artifact_prefix="$CORPUS/crashes/" \
  $( [ "$FUZZ_JOBS" -gt 1 ] && echo "-jobs=$FUZZ_JOBS -workers=$FUZZ_JOBS" ) \
  >"$log" 2>&1
rc=$?
set -e
grep -E '^(stat::|#[0-9]+ +DONE|==[0-9]+==ERROR|SUMMARY)' "$log" || tail -n 20 "$log"
if [ "$rc" -ne 0 ]; then
  echo "fuzz_gguf: FAILED (exit $rc); see $log and $CORPUS/crashes/" >&2
  tail -n 40 "$log" >&2
  exit 1
fi
echo "fuzz_gguf: ok"
