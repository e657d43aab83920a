build-dev/tests/test_mla_kernel.o: tests/test_mla_kernel.c \
 src/attn/attn_latent.h src/attn/attn_simd.h src/core/alloc.h \
 src/core/cpu.h src/core/dtype.h tests/test_util.h
src/attn/attn_latent.h:
src/attn/attn_simd.h:
src/core/alloc.h:
src/core/cpu.h:
src/core/dtype.h:
tests/test_util.h:
