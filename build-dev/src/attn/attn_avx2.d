build-dev/src/attn/attn_avx2.o: src/attn/attn_avx2.c src/attn/attn_simd.h \
 src/attn/exp_avx2.h src/core/dtype.h src/kv/kivi.h
src/attn/attn_simd.h:
src/attn/exp_avx2.h:
src/core/dtype.h:
src/kv/kivi.h:
