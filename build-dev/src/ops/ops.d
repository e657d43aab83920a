build-dev/src/ops/ops.o: src/ops/ops.c src/ops/ops.h src/core/dtype.h
src/ops/ops.h:
src/core/dtype.h:
