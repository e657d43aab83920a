build-dev/tests/test_gemma3.o: tests/test_gemma3.c include/kvslim.h \
 src/core/json.h tests/test_util.h
include/kvslim.h:
src/core/json.h:
tests/test_util.h:
