build-dev/tools/cmd_compress.o: tools/cmd_compress.c tools/cli.h \
 include/kvslim.h src/core/alloc.h src/core/error.h src/gguf/gguf.h \
 src/kv/kv_spec.h src/kv/kv_scheme.h src/core/dtype.h src/model/model.h \
 src/ops/matmul.h src/core/threads.h src/ops/ops.h src/tok/tokenizer.h \
 src/retrofit/retrofit.h
tools/cli.h:
include/kvslim.h:
src/core/alloc.h:
src/core/error.h:
src/gguf/gguf.h:
src/kv/kv_spec.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
src/model/model.h:
src/ops/matmul.h:
src/core/threads.h:
src/ops/ops.h:
src/tok/tokenizer.h:
src/retrofit/retrofit.h:
