build-dev/src/kv/kv_chunk.o: src/kv/kv_chunk.c src/kv/kv_chunk.h \
 src/core/threads.h include/kvslim.h src/kv/kv_cache.h src/kv/kv_pool.h \
 src/kv/kv_scheme.h src/core/dtype.h src/core/alloc.h src/core/error.h \
 src/kv/kivi.h src/kv/kv_evict.h
src/kv/kv_chunk.h:
src/core/threads.h:
include/kvslim.h:
src/kv/kv_cache.h:
src/kv/kv_pool.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
src/core/alloc.h:
src/core/error.h:
src/kv/kivi.h:
src/kv/kv_evict.h:
