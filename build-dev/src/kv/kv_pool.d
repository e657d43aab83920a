build-dev/src/kv/kv_pool.o: src/kv/kv_pool.c src/kv/kv_pool.h \
 include/kvslim.h src/core/alloc.h src/core/error.h
src/kv/kv_pool.h:
include/kvslim.h:
src/core/alloc.h:
src/core/error.h:
