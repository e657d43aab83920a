build-dev/bench/bench_attn.o: bench/bench_attn.c src/attn/attn.h \
 src/core/threads.h include/kvslim.h src/kv/kv_cache.h src/kv/kv_pool.h \
 src/kv/kv_scheme.h src/core/dtype.h bench/bench_util.h src/core/cpu.h
src/attn/attn.h:
src/core/threads.h:
include/kvslim.h:
src/kv/kv_cache.h:
src/kv/kv_pool.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
bench/bench_util.h:
src/core/cpu.h:
