build-dev/src/eval/passkey.o: src/eval/passkey.c include/kvslim.h
include/kvslim.h:
