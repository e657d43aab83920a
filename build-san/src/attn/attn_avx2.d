build-san/src/attn/attn_avx2.o: src/attn/attn_avx2.c src/attn/attn_simd.h
