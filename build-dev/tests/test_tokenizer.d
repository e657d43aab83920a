build-dev/tests/test_tokenizer.o: tests/test_tokenizer.c src/core/alloc.h \
 src/core/error.h include/kvslim.h src/gguf/gguf.h src/tok/tokenizer.h \
 tests/test_util.h
src/core/alloc.h:
src/core/error.h:
include/kvslim.h:
src/gguf/gguf.h:
src/tok/tokenizer.h:
tests/test_util.h:
