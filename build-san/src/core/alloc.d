build-san/src/core/alloc.o: src/core/alloc.c src/core/alloc.h
