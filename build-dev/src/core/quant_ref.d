build-dev/src/core/quant_ref.o: src/core/quant_ref.c src/core/f16.h \
 src/core/quant_internal.h
src/core/f16.h:
src/core/quant_internal.h:
