build-dev/src/kv/kv_cache.o: src/kv/kv_cache.c src/kv/kv_cache.h \
 src/kv/kv_pool.h include/kvslim.h src/kv/kv_scheme.h src/core/dtype.h \
 src/core/alloc.h src/core/error.h src/core/f16.h src/kv/kivi.h \
 src/kv/kv_chunk.h src/core/threads.h src/kv/kv_evict.h
src/kv/kv_cache.h:
src/kv/kv_pool.h:
include/kvslim.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
src/core/alloc.h:
src/core/error.h:
src/core/f16.h:
src/kv/kivi.h:
src/kv/kv_chunk.h:
src/core/threads.h:
src/kv/kv_evict.h:
