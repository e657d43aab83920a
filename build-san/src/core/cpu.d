build-san/src/core/cpu.o: src/core/cpu.c src/core/cpu.h
