build-dev/tests/test_gemma4.o: tests/test_gemma4.c include/kvslim.h \
 src/core/alloc.h src/core/dtype.h src/core/json.h src/gguf/gguf.h \
 src/model/session.h src/attn/attn.h src/core/threads.h src/kv/kv_cache.h \
 src/kv/kv_pool.h src/kv/kv_scheme.h src/model/model.h src/ops/matmul.h \
 src/ops/ops.h src/tok/tokenizer.h tests/test_util.h
include/kvslim.h:
src/core/alloc.h:
src/core/dtype.h:
src/core/json.h:
src/gguf/gguf.h:
src/model/session.h:
src/attn/attn.h:
src/core/threads.h:
src/kv/kv_cache.h:
src/kv/kv_pool.h:
src/kv/kv_scheme.h:
src/model/model.h:
src/ops/matmul.h:
src/ops/ops.h:
src/tok/tokenizer.h:
tests/test_util.h:
