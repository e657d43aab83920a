build-dev/src/tok/unicode.o: src/tok/unicode.c src/tok/unicode.h \
 include/kvslim.h src/core/alloc.h src/core/error.h \
 src/tok/unicode_tables.h
src/tok/unicode.h:
include/kvslim.h:
src/core/alloc.h:
src/core/error.h:
src/tok/unicode_tables.h:
