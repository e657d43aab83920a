build-dev/tools/cmd_info.o: tools/cmd_info.c tools/cli.h include/kvslim.h
tools/cli.h:
include/kvslim.h:
