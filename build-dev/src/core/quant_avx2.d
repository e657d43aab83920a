build-dev/src/core/quant_avx2.o: src/core/quant_avx2.c src/core/f16.h \
 src/core/quant_internal.h
src/core/f16.h:
src/core/quant_internal.h:
