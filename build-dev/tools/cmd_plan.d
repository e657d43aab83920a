build-dev/tools/cmd_plan.o: tools/cmd_plan.c tools/cmd_plan.h \
 src/core/error.h include/kvslim.h src/plan/plan.h src/kv/kv_scheme.h \
 src/core/dtype.h
tools/cmd_plan.h:
src/core/error.h:
include/kvslim.h:
src/plan/plan.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
