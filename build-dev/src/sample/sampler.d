build-dev/src/sample/sampler.o: src/sample/sampler.c src/core/alloc.h \
 src/core/error.h include/kvslim.h
src/core/alloc.h:
src/core/error.h:
include/kvslim.h:
