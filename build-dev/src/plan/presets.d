build-dev/src/plan/presets.o: src/plan/presets.c src/core/error.h \
 include/kvslim.h src/plan/plan.h src/kv/kv_scheme.h src/core/dtype.h
src/core/error.h:
include/kvslim.h:
src/plan/plan.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
