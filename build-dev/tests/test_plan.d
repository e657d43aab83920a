build-dev/tests/test_plan.o: tests/test_plan.c src/core/error.h \
 include/kvslim.h src/gguf/gguf.h src/kv/kv_scheme.h src/core/dtype.h \
 src/core/json.h src/plan/plan.h tests/test_util.h
src/core/error.h:
include/kvslim.h:
src/gguf/gguf.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
src/core/json.h:
src/plan/plan.h:
tests/test_util.h:
