build-dev/src/plan/render.o: src/plan/render.c src/plan/plan.h \
 src/kv/kv_scheme.h src/core/dtype.h include/kvslim.h
src/plan/plan.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
include/kvslim.h:
