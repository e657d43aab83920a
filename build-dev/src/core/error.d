build-dev/src/core/error.o: src/core/error.c src/core/error.h \
 include/kvslim.h
src/core/error.h:
include/kvslim.h:
