build-san/src/plan/plan_gguf.o: src/plan/plan_gguf.c src/core/error.h \
 include/kvslim.h src/gguf/gguf.h src/plan/plan.h src/kv/kv_scheme.h \
 src/core/dtype.h
