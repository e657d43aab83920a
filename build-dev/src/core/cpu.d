build-dev/src/core/cpu.o: src/core/cpu.c src/core/cpu.h
src/core/cpu.h:
