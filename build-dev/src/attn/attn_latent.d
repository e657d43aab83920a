build-dev/src/attn/attn_latent.o: src/attn/attn_latent.c \
 src/attn/attn_latent.h src/attn/attn_simd.h src/core/cpu.h \
 src/core/dtype.h src/core/f16.h
src/attn/attn_latent.h:
src/attn/attn_simd.h:
src/core/cpu.h:
src/core/dtype.h:
src/core/f16.h:
