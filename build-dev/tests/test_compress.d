build-dev/tests/test_compress.o: tests/test_compress.c src/arch/attend.h \
 src/model/session.h src/attn/attn.h src/core/threads.h include/kvslim.h \
 src/kv/kv_cache.h src/kv/kv_pool.h src/kv/kv_scheme.h src/core/dtype.h \
 src/model/model.h src/gguf/gguf.h src/ops/matmul.h src/ops/ops.h \
 src/tok/tokenizer.h src/core/error.h src/kv/kv_chunk.h \
 src/retrofit/retrofit.h tests/test_util.h
src/arch/attend.h:
src/model/session.h:
src/attn/attn.h:
src/core/threads.h:
include/kvslim.h:
src/kv/kv_cache.h:
src/kv/kv_pool.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
src/model/model.h:
src/gguf/gguf.h:
src/ops/matmul.h:
src/ops/ops.h:
src/tok/tokenizer.h:
src/core/error.h:
src/kv/kv_chunk.h:
src/retrofit/retrofit.h:
tests/test_util.h:
