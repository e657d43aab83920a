build-dev/src/ops/matmul.o: src/ops/matmul.c src/ops/matmul.h \
 src/core/threads.h include/kvslim.h src/core/alloc.h src/core/dtype.h \
 src/core/error.h
src/ops/matmul.h:
src/core/threads.h:
include/kvslim.h:
src/core/alloc.h:
src/core/dtype.h:
src/core/error.h:
