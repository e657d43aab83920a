build-dev/src/retrofit/load.o: src/retrofit/load.c src/core/error.h \
 include/kvslim.h src/kv/kv_spec.h src/kv/kv_scheme.h src/core/dtype.h \
 src/model/loader.h src/model/model.h src/gguf/gguf.h src/ops/matmul.h \
 src/core/threads.h src/ops/ops.h src/tok/tokenizer.h \
 src/retrofit/retrofit.h
src/core/error.h:
include/kvslim.h:
src/kv/kv_spec.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
src/model/loader.h:
src/model/model.h:
src/gguf/gguf.h:
src/ops/matmul.h:
src/core/threads.h:
src/ops/ops.h:
src/tok/tokenizer.h:
src/retrofit/retrofit.h:
