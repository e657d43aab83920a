build-dev/bench/bench_quant.o: bench/bench_quant.c bench/bench_util.h \
 src/core/alloc.h src/core/cpu.h src/core/dtype.h
bench/bench_util.h:
src/core/alloc.h:
src/core/cpu.h:
src/core/dtype.h:
