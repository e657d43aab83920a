build-dev/src/kv/kivi_avx2.o: src/kv/kivi_avx2.c src/core/f16.h \
 src/kv/kivi.h
src/core/f16.h:
src/kv/kivi.h:
