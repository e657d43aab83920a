build-dev/src/kv/kv_evict.o: src/kv/kv_evict.c src/kv/kv_evict.h \
 src/core/threads.h include/kvslim.h src/kv/kv_cache.h src/kv/kv_pool.h \
 src/kv/kv_scheme.h src/core/dtype.h src/core/alloc.h src/core/error.h \
 src/model/session.h src/attn/attn.h src/model/model.h src/gguf/gguf.h \
 src/ops/matmul.h src/ops/ops.h src/tok/tokenizer.h
src/kv/kv_evict.h:
src/core/threads.h:
include/kvslim.h:
src/kv/kv_cache.h:
src/kv/kv_pool.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
src/core/alloc.h:
src/core/error.h:
src/model/session.h:
src/attn/attn.h:
src/model/model.h:
src/gguf/gguf.h:
src/ops/matmul.h:
src/ops/ops.h:
src/tok/tokenizer.h:
