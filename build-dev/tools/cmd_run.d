build-dev/tools/cmd_run.o: tools/cmd_run.c tools/cli.h include/kvslim.h
tools/cli.h:
include/kvslim.h:
