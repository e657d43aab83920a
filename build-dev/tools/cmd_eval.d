build-dev/tools/cmd_eval.o: tools/cmd_eval.c tools/cli.h include/kvslim.h
tools/cli.h:
include/kvslim.h:
