build-dev/src/plan/hw.o: src/plan/hw.c src/core/alloc.h src/core/error.h \
 include/kvslim.h src/plan/plan.h src/kv/kv_scheme.h src/core/dtype.h
src/core/alloc.h:
src/core/error.h:
include/kvslim.h:
src/plan/plan.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
