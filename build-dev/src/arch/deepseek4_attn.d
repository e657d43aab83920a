build-dev/src/arch/deepseek4_attn.o: src/arch/deepseek4_attn.c \
 src/arch/attend.h src/model/session.h src/attn/attn.h src/core/threads.h \
 include/kvslim.h src/kv/kv_cache.h src/kv/kv_pool.h src/kv/kv_scheme.h \
 src/core/dtype.h src/model/model.h src/gguf/gguf.h src/ops/matmul.h \
 src/ops/ops.h src/tok/tokenizer.h src/arch/deepseek4.h src/kv/kv_chunk.h \
 src/core/alloc.h src/core/cpu.h src/core/error.h src/core/f16.h \
 src/model/loader.h
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
src/arch/deepseek4.h:
src/kv/kv_chunk.h:
src/core/alloc.h:
src/core/cpu.h:
src/core/error.h:
src/core/f16.h:
src/model/loader.h:
