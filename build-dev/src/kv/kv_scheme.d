build-dev/src/kv/kv_scheme.o: src/kv/kv_scheme.c src/kv/kv_scheme.h \
 src/core/dtype.h include/kvslim.h src/core/error.h
src/kv/kv_scheme.h:
src/core/dtype.h:
include/kvslim.h:
src/core/error.h:
