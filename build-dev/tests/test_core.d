build-dev/tests/test_core.o: tests/test_core.c src/core/alloc.h \
 src/core/f16.h src/core/threads.h include/kvslim.h tests/test_util.h
src/core/alloc.h:
src/core/f16.h:
src/core/threads.h:
include/kvslim.h:
tests/test_util.h:
