build-dev/tools/kvslim.o: tools/kvslim.c tools/cli.h include/kvslim.h \
 tools/cmd_plan.h
tools/cli.h:
include/kvslim.h:
tools/cmd_plan.h:
