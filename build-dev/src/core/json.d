build-dev/src/core/json.o: src/core/json.c src/core/json.h \
 include/kvslim.h src/core/alloc.h src/core/error.h
src/core/json.h:
include/kvslim.h:
src/core/alloc.h:
src/core/error.h:
