build-dev/src/plan/plan.o: src/plan/plan.c src/plan/plan.h \
 src/kv/kv_scheme.h src/core/dtype.h include/kvslim.h src/core/alloc.h \
 src/core/error.h
src/plan/plan.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
include/kvslim.h:
src/core/alloc.h:
src/core/error.h:
