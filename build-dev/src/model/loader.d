build-dev/src/model/loader.o: src/model/loader.c src/model/loader.h \
 src/core/error.h include/kvslim.h src/model/model.h src/gguf/gguf.h \
 src/kv/kv_scheme.h src/core/dtype.h src/ops/matmul.h src/core/threads.h \
 src/ops/ops.h src/tok/tokenizer.h src/core/alloc.h
src/model/loader.h:
src/core/error.h:
include/kvslim.h:
src/model/model.h:
src/gguf/gguf.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
src/ops/matmul.h:
src/core/threads.h:
src/ops/ops.h:
src/tok/tokenizer.h:
src/core/alloc.h:
