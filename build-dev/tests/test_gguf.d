build-dev/tests/test_gguf.o: tests/test_gguf.c src/core/alloc.h \
 src/core/dtype.h src/gguf/gguf.h include/kvslim.h tests/test_util.h
src/core/alloc.h:
src/core/dtype.h:
src/gguf/gguf.h:
include/kvslim.h:
tests/test_util.h:
