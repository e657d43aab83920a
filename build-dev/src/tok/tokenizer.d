build-dev/src/tok/tokenizer.o: src/tok/tokenizer.c src/tok/tokenizer.h \
 src/gguf/gguf.h include/kvslim.h src/core/alloc.h src/core/error.h \
 src/tok/unicode.h
src/tok/tokenizer.h:
src/gguf/gguf.h:
include/kvslim.h:
src/core/alloc.h:
src/core/error.h:
src/tok/unicode.h:
