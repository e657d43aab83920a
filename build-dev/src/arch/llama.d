build-dev/src/arch/llama.o: src/arch/llama.c src/core/alloc.h \
 src/core/error.h include/kvslim.h src/arch/attend.h src/model/session.h \
 src/attn/attn.h src/core/threads.h src/kv/kv_cache.h src/kv/kv_pool.h \
 src/kv/kv_scheme.h src/core/dtype.h src/model/model.h src/gguf/gguf.h \
 src/ops/matmul.h src/ops/ops.h src/tok/tokenizer.h src/arch/stages.h \
 src/model/loader.h src/retrofit/retrofit.h
src/core/alloc.h:
src/core/error.h:
include/kvslim.h:
src/arch/attend.h:
src/model/session.h:
src/attn/attn.h:
src/core/threads.h:
src/kv/kv_cache.h:
src/kv/kv_pool.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
src/model/model.h:
src/gguf/gguf.h:
src/ops/matmul.h:
src/ops/ops.h:
src/tok/tokenizer.h:
src/arch/stages.h:
src/model/loader.h:
src/retrofit/retrofit.h:
