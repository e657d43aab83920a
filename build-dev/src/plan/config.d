build-dev/src/plan/config.o: src/plan/config.c src/core/alloc.h \
 src/core/error.h include/kvslim.h src/core/json.h src/plan/plan.h \
 src/kv/kv_scheme.h src/core/dtype.h
src/core/alloc.h:
src/core/error.h:
include/kvslim.h:
src/core/json.h:
src/plan/plan.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
