build-dev/src/gguf/gguf.o: src/gguf/gguf.c src/gguf/gguf.h \
 include/kvslim.h src/core/alloc.h src/core/dtype.h src/core/error.h
src/gguf/gguf.h:
include/kvslim.h:
src/core/alloc.h:
src/core/dtype.h:
src/core/error.h:
