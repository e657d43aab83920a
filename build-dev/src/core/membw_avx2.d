build-dev/src/core/membw_avx2.o: src/core/membw_avx2.c
