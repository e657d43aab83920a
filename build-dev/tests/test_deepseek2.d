build-dev/tests/test_deepseek2.o: tests/test_deepseek2.c src/core/alloc.h \
 src/gguf/gguf.h include/kvslim.h src/ops/moe.h src/core/threads.h \
 src/ops/matmul.h src/ops/ops.h src/core/dtype.h tests/test_util.h
src/core/alloc.h:
src/gguf/gguf.h:
include/kvslim.h:
src/ops/moe.h:
src/core/threads.h:
src/ops/matmul.h:
src/ops/ops.h:
src/core/dtype.h:
tests/test_util.h:
