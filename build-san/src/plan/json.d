build-san/src/plan/json.o: src/plan/json.c src/plan/json.h \
 include/kvslim.h src/core/alloc.h src/core/error.h
