build-dev/src/core/alloc.o: src/core/alloc.c src/core/alloc.h
src/core/alloc.h:
