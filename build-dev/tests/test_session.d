build-dev/tests/test_session.o: tests/test_session.c src/core/alloc.h \
 include/kvslim.h src/plan/plan.h src/kv/kv_scheme.h src/core/dtype.h \
 tests/test_util.h
src/core/alloc.h:
include/kvslim.h:
src/plan/plan.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
tests/test_util.h:
