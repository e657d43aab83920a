build-dev/tests/test_model.o: tests/test_model.c include/kvslim.h \
 src/core/json.h tests/test_util.h
include/kvslim.h:
src/core/json.h:
tests/test_util.h:
