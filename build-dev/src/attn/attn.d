build-dev/src/attn/attn.o: src/attn/attn.c src/attn/attn.h \
 src/core/threads.h include/kvslim.h src/kv/kv_cache.h src/kv/kv_pool.h \
 src/kv/kv_scheme.h src/core/dtype.h src/attn/attn_latent.h \
 src/attn/attn_simd.h src/core/alloc.h src/core/cpu.h src/core/error.h
src/attn/attn.h:
src/core/threads.h:
include/kvslim.h:
src/kv/kv_cache.h:
src/kv/kv_pool.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
src/attn/attn_latent.h:
src/attn/attn_simd.h:
src/core/alloc.h:
src/core/cpu.h:
src/core/error.h:
