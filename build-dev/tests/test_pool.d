build-dev/tests/test_pool.o: tests/test_pool.c src/core/alloc.h \
 include/kvslim.h tests/test_util.h
src/core/alloc.h:
include/kvslim.h:
tests/test_util.h:
