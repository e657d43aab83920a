build-dev/tests/test_quant.o: tests/test_quant.c src/core/cpu.h \
 src/core/dtype.h src/core/f16.h src/core/quant_internal.h \
 tests/test_util.h
src/core/cpu.h:
src/core/dtype.h:
src/core/f16.h:
src/core/quant_internal.h:
tests/test_util.h:
