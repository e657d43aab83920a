# kvslim build. `make` builds the library and CLI, `make test` runs the suite,
# `make SAN=1 test` builds everything with ASan+UBSan into build-san/.
# Sources are discovered by wildcard: add a .c under src/<module>/ and it builds.
# Files named *_avx2.c / *_avx512.c / *_vnni.c (AVX-512 plus VNNI) are compiled
# with those ISA flags and must only be entered after a runtime CPU check
# (src/core/cpu.c).

CC      ?= cc
SAN     ?= 0
WERROR  ?= 0
OPT     ?= -O2
BUILD   ?= build

CFLAGS_BASE = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter \
              -Wstrict-prototypes -Wmissing-prototypes -Iinclude -Isrc -pthread -g
ifeq ($(WERROR),1)
CFLAGS_BASE += -Werror
endif
ifeq ($(SAN),1)
# -O2: the suite runs real models; under ASan+UBSan it runs 1.9x faster than at -O1
BUILD   = build-san
OPT     = -O2
CFLAGS_BASE += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS_SAN  = -fsanitize=address,undefined
endif
CFLAGS  = $(CFLAGS_BASE) $(OPT) $(EXTRA_CFLAGS)
LDLIBS  = -lmicrohttpd -ljansson -llapacke -lm -pthread $(LDFLAGS_SAN)

AVX2_FLAGS   = -mavx2 -mfma -mf16c
AVX512_FLAGS = -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c
VNNI_FLAGS   = $(AVX512_FLAGS) -mavx512vnni

LIB_SRC  = $(wildcard src/*/*.c)
CLI_SRC  = $(wildcard tools/*.c)
CLI_OBJ  = $(patsubst %.c,$(BUILD)/%.o,$(CLI_SRC))
LIB_OBJ  = $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRC))
TEST_SRC = $(wildcard tests/test_*.c)
TEST_BIN = $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
BENCH_SRC = $(wildcard bench/*.c)
BENCH_BIN = $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

.PHONY: all test clean demo models fuzz deps
all: $(BUILD)/kvslim $(TEST_BIN) $(BENCH_BIN)

# Debian packages the build needs: checked (and installed as root) before the
# first compile, again whenever the script changes (scripts/setup_deps.sh)
DEPS_OK = $(BUILD)/.deps-ok
$(DEPS_OK): scripts/setup_deps.sh
	@mkdir -p $(dir $@)
	@bash scripts/setup_deps.sh
	@touch $@
deps: $(DEPS_OK)
$(LIB_OBJ) $(CLI_OBJ) $(TEST_BIN:=.o) $(BENCH_BIN:=.o): | $(DEPS_OK)

$(BUILD)/libkvslim.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	ar rcs $@ $^

$(BUILD)/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AVX2_FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AVX512_FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%_vnni.o: %_vnni.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(VNNI_FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/kvslim: $(CLI_OBJ) $(BUILD)/libkvslim.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/libkvslim.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(BUILD)/libkvslim.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

test: all models
	@BUILD=$(BUILD) bash tests/run.sh

# the default model and Gemma 3 270M (the test suite checks both against llama.cpp)
models:
	bash scripts/fetch_models.sh smollm2-135m-instruct-q4_1.gguf gemma-3-270m-q4_k_m.gguf

demo: all models
	bash scripts/demo.sh

clean:
	rm -rf build build-san

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
