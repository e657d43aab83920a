build-san/src/kv/kv_cache.o: src/kv/kv_cache.c src/kv/kv_cache.h \
 src/kv/kv_scheme.h src/core/dtype.h include/kvslim.h src/core/alloc.h \
 src/core/error.h
