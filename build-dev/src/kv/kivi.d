build-dev/src/kv/kivi.o: src/kv/kivi.c src/kv/kivi.h src/core/alloc.h \
 src/core/cpu.h src/core/f16.h
src/kv/kivi.h:
src/core/alloc.h:
src/core/cpu.h:
src/core/f16.h:
