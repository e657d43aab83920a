build-dev/src/retrofit/write.o: src/retrofit/write.c src/core/alloc.h \
 src/core/error.h include/kvslim.h src/gguf/gguf.h \
 src/retrofit/retrofit.h src/model/model.h src/kv/kv_scheme.h \
 src/core/dtype.h src/ops/matmul.h src/core/threads.h src/ops/ops.h \
 src/tok/tokenizer.h
src/core/alloc.h:
src/core/error.h:
include/kvslim.h:
src/gguf/gguf.h:
src/retrofit/retrofit.h:
src/model/model.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
src/ops/matmul.h:
src/core/threads.h:
src/ops/ops.h:
src/tok/tokenizer.h:
