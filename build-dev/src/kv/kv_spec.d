build-dev/src/kv/kv_spec.o: src/kv/kv_spec.c src/kv/kv_spec.h \
 src/kv/kv_scheme.h src/core/dtype.h include/kvslim.h src/core/alloc.h \
 src/core/error.h
src/kv/kv_spec.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
include/kvslim.h:
src/core/alloc.h:
src/core/error.h:
