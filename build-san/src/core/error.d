build-san/src/core/error.o: src/core/error.c src/core/error.h \
 include/kvslim.h
