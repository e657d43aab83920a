build-dev/src/core/membw.o: src/core/membw.c src/core/alloc.h \
 src/core/cpu.h src/core/threads.h include/kvslim.h
src/core/alloc.h:
src/core/cpu.h:
src/core/threads.h:
include/kvslim.h:
