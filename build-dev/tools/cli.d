build-dev/tools/cli.o: tools/cli.c tools/cli.h include/kvslim.h
tools/cli.h:
include/kvslim.h:
