build-dev/src/core/threads.o: src/core/threads.c src/core/threads.h \
 include/kvslim.h src/core/alloc.h src/core/error.h
src/core/threads.h:
include/kvslim.h:
src/core/alloc.h:
src/core/error.h:
