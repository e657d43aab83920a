build-dev/src/ops/moe.o: src/ops/moe.c src/ops/moe.h src/core/threads.h \
 include/kvslim.h src/ops/matmul.h src/core/alloc.h src/core/error.h \
 src/ops/ops.h src/core/dtype.h
src/ops/moe.h:
src/core/threads.h:
include/kvslim.h:
src/ops/matmul.h:
src/core/alloc.h:
src/core/error.h:
src/ops/ops.h:
src/core/dtype.h:
