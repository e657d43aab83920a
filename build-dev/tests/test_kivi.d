build-dev/tests/test_kivi.o: tests/test_kivi.c src/core/cpu.h \
 src/core/f16.h src/kv/kivi.h src/kv/kv_cache.h src/kv/kv_pool.h \
 include/kvslim.h src/kv/kv_scheme.h src/core/dtype.h src/kv/kv_spec.h \
 tests/test_util.h
src/core/cpu.h:
src/core/f16.h:
src/kv/kivi.h:
src/kv/kv_cache.h:
src/kv/kv_pool.h:
include/kvslim.h:
src/kv/kv_scheme.h:
src/core/dtype.h:
src/kv/kv_spec.h:
tests/test_util.h:
