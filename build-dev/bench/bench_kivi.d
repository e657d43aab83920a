build-dev/bench/bench_kivi.o: bench/bench_kivi.c bench/bench_util.h \
 src/core/alloc.h src/core/cpu.h src/kv/kivi.h
bench/bench_util.h:
src/core/alloc.h:
src/core/cpu.h:
src/kv/kivi.h:
