# ngx_psd_module — see README.md.  Everything built lands in build/.

SHELL      := /bin/bash
CC         ?= cc
BUILD      ?= build
PROVE_JOBS ?= 2
CFLAGS_PSD := $(CFLAGS_EXTRA) -std=gnu99 -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter \
              -Ingx_psd_module
LIBS_PSD   := -lcrypto -ljansson

# The nginx-free files (the pure logic): every ngx_psd_module/psd_*.c.
PURE_SRCS  := $(wildcard ngx_psd_module/psd_*.c)
PURE       := $(PURE_SRCS:ngx_psd_module/%.c=%)
PURE_HDRS  := $(PURE_SRCS:.c=.h)
UNIT_SRCS  := $(wildcard t/unit/test_*.c)
UNIT_BINS  := $(UNIT_SRCS:t/unit/%.c=$(BUILD)/unit/%)
CLI_SRCS   := $(wildcard util/cli/*.c)
CLI_BINS   := $(CLI_SRCS:util/cli/%.c=util/%)
MODULE     := $(BUILD)/modules/ngx_http_psd_module.so

.PHONY: all deps build module unit cli run stop test test-unit test-nginx \
        test-cluster asan valgrind fuzz bench clean

all: build

deps:
	@util/deps

build: deps module unit cli

module:
	@util/build

$(BUILD)/pure.a: $(PURE_SRCS) $(PURE_HDRS)
	@mkdir -p $(BUILD)/pure
	@for f in $(PURE); do \
	    $(CC) $(CFLAGS_PSD) -c ngx_psd_module/$$f.c \
	        -o $(BUILD)/pure/$$f.o || exit 1; done
	@rm -f $@ && ar rcs $@ $(PURE:%=$(BUILD)/pure/%.o)

$(BUILD)/unit/%: t/unit/%.c t/unit/tap.h $(BUILD)/pure.a
	@mkdir -p $(BUILD)/unit
	$(CC) $(CFLAGS_PSD) -It/unit $< $(BUILD)/pure.a $(LIBS_PSD) -o $@

util/%: util/cli/%.c $(BUILD)/pure.a
	$(CC) $(CFLAGS_PSD) $< $(BUILD)/pure.a $(LIBS_PSD) -lhiredis -o $@

unit: $(UNIT_BINS)

cli: $(CLI_BINS)

run: build
	@util/run start

stop:
	@util/run stop

# One prove run counts everything: unit tests, nginx tests and nginx -t of
# every example in conf/.
# the Lua packages let the lua-compat tests run (they skip without them).
# Then the feature files again against a 3-primary Redis Cluster: any
# command that spans hash slots fails there (CROSSSLOT).
test: build
	@util/deps --lua
	prove -j$(PROVE_JOBS) $(UNIT_BINS) t/unit/*.t t/*.t
	TEST_NGINX_REDIS_CLUSTER=1 prove -j$(PROVE_JOBS) t/*.t

test-unit: deps unit
	@for b in $(UNIT_BINS); do echo "# $$b"; $$b || exit 1; done

test-nginx: build
	@util/deps --lua
	prove -j$(PROVE_JOBS) t/*.t

# The nginx tests against a Redis Cluster of 3 primaries, psd_redis lines
# rewritten to "cluster <seeds>" (REDIS_CLUSTER=single: one cluster node,
# configs unchanged); files and blocks that need one redis-server skip.
REDIS_CLUSTER ?= 1

test-cluster: build
	TEST_NGINX_REDIS_CLUSTER=$(REDIS_CLUSTER) prove -j$(PROVE_JOBS) t/*.t

asan:
	@util/deps --fuzz
	PSD_BUILD_DIR=$(BUILD)/asan \
	PSD_CC_OPT="-fsanitize=address,undefined -fno-omit-frame-pointer" \
	PSD_LD_OPT="-fsanitize=address,undefined" util/build
	$(MAKE) unit cli BUILD=$(BUILD)/asan \
	    CFLAGS_EXTRA="-fsanitize=address,undefined"
	PSD_MODULE=$(BUILD)/asan/modules/ngx_http_psd_module.so \
	TEST_NGINX_USE_ASAN=1 prove -j$(PROVE_JOBS) t/*.t

valgrind: build
	@util/deps --valgrind
	TEST_NGINX_USE_VALGRIND=1 prove -j$(PROVE_JOBS) t/*.t

# libFuzzer targets of the parsers, FUZZ_SECONDS each, with ASan and UBSan.
FUZZ_SECONDS ?= 60
FUZZ_SRCS    := $(wildcard t/fuzz/fuzz_*.c)

fuzz:
	@util/deps --fuzz
	@mkdir -p $(BUILD)/fuzz
	@for f in $(FUZZ_SRCS); do \
	    n=$$(basename $$f .c); t=$${n#fuzz_}; \
	    clang -g -O1 -fsanitize=fuzzer,address,undefined \
	        -fno-sanitize-recover=undefined -Ingx_psd_module $$f \
	        $(PURE_SRCS) $(LIBS_PSD) -o $(BUILD)/fuzz/$$n || exit 1; \
	    mkdir -p $(BUILD)/fuzz/corpus-$$t; \
	    echo "fuzz: $$n for $(FUZZ_SECONDS) s"; \
	    $(BUILD)/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) \
	        -print_final_stats=1 -artifact_prefix=$(BUILD)/fuzz/$$n- \
	        $(BUILD)/fuzz/corpus-$$t \
	        t/fuzz/corpus/$$t > $(BUILD)/fuzz/$$n.log 2>&1; rc=$$?; \
	    grep -E "number_of_executed_units|SUMMARY" $(BUILD)/fuzz/$$n.log; \
	    [ $$rc -eq 0 ] || { tail -n 40 $(BUILD)/fuzz/$$n.log; exit 1; }; \
	done

bench: build
	@util/deps --bench
	util/bench $(BENCH_ARGS)

clean:
	rm -rf $(BUILD) t/servroot* $(CLI_BINS)
