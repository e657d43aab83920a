build-dev/tools/cmd_ppl.o: tools/cmd_ppl.c tools/cli.h include/kvslim.h
tools/cli.h:
include/kvslim.h:
