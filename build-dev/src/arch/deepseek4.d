build-dev/src/arch/deepseek4.o: src/arch/deepseek4.c src/arch/deepseek4.h \
 src/model/session.h src/attn/attn.h src/core/threads.h include/kvslim.h \
 src/kv/kv_cache.h src/kv/kv_pool.h src/kv/kv_scheme.h src/core/dtype.h \
 src/model/model.h src/gguf/gguf.h src/ops/matmul.h src/ops/ops.h \
 src/tok/tokenizer.h src/core/alloc.h src/core/error.h src/model/loader.h
src/arch/deepseek4.h:
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
src/core/alloc.h:
src/core/error.h:
src/model/loader.h:
