build-dev/tools/cmd_bench.o: tools/cmd_bench.c src/attn/attn.h \
 src/core/threads.h include/kvslim.h src/kv/kv_cache.h src/kv/kv_pool.h \
 src/kv/kv_scheme.h src/core/dtype.h tools/cli.h src/model/session.h \
 src/model/model.h src/gguf/gguf.h src/ops/matmul.h src/ops/ops.h \
 src/tok/tokenizer.h
src/attn/attn.h:
src/core/threads.h:
include/kvslim.h:
src/kv/kv_cache.h:
src/kv/kv_pool.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
tools/cli.h:
src/model/session.h:
src/model/model.h:
src/gguf/gguf.h:
src/ops/matmul.h:
src/ops/ops.h:
src/tok/tokenizer.h:
