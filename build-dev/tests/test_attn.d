build-dev/tests/test_attn.o: tests/test_attn.c src/attn/attn.h \
 src/core/threads.h include/kvslim.h src/kv/kv_cache.h src/kv/kv_pool.h \
 src/kv/kv_scheme.h src/core/dtype.h src/attn/attn_simd.h \
 src/core/alloc.h tests/test_util.h
src/attn/attn.h:
src/core/threads.h:
include/kvslim.h:
src/kv/kv_cache.h:
src/kv/kv_pool.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
src/attn/attn_simd.h:
src/core/alloc.h:
tests/test_util.h:
