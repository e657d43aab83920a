build-dev/src/plan/plan_gguf.o: src/plan/plan_gguf.c src/core/alloc.h \
 src/core/error.h include/kvslim.h src/gguf/gguf.h src/kv/kv_spec.h \
 src/kv/kv_scheme.h src/core/dtype.h src/model/model.h src/ops/matmul.h \
 src/core/threads.h src/ops/ops.h src/tok/tokenizer.h src/plan/plan.h
src/core/alloc.h:
src/core/error.h:
include/kvslim.h:
src/gguf/gguf.h:
src/kv/kv_spec.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
src/model/model.h:
src/ops/matmul.h:
src/core/threads.h:
src/ops/ops.h:
src/tok/tokenizer.h:
src/plan/plan.h:
