build-dev/src/core/dtype.o: src/core/dtype.c src/core/dtype.h \
 src/core/cpu.h src/core/quant_internal.h
src/core/dtype.h:
src/core/cpu.h:
src/core/quant_internal.h:
