# sharpctl — build, test, bench.
#   make deps    install Debian packages and npm modules (idempotent, quiet when present)
#   make build   eBPF objects, generated ABI, native addon, TypeScript
#   make test    everything above, then the test suite (as root: it loads programs into the kernel)
#   make bench   benchmarks; figures printed and written to results/bench.json
#   make demo    live handovers in a lab of network namespaces (DEMO_ARGS=... passes options)

SHELL := /bin/bash
.DELETE_ON_ERROR:
.PHONY: all deps apt-deps npm-deps build ebpf addon ts test bench demo p4 clean check-root bpffs

# mininet: the BMv2 lab is a Mininet topology (BMv2 itself is in no registry; see README)
# tshark: the Wireshark dissector test (test/wireshark) reads pcapng files with src/wireshark/sharp.lua
# spin: the Promela model of the handover (test/model/sharp.pml); its verifier is compiled with gcc
# nftables, conntrack: the `linux` VNF kind as a NAT (nft in the instance namespaces) and the conntrack state manager (ctnetlink)
# redis-tools: redis-cli, which makes a Redis Cluster of redis-servers (src/state/redis-cluster-server.ts; the cluster tests and bench)
APT_PACKAGES := clang llvm libbpf-dev libelf-dev zlib1g-dev bpftool iproute2 ethtool pkg-config g++ make python3 redis-server redis-tools mininet spin tshark nftables conntrack
ARCH_INCLUDE := /usr/include/$(shell gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
BPF_CFLAGS := -O2 -g -Wall -Werror -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 -I ebpf/include -I $(ARCH_INCLUDE)

OUT := build
EBPF_SRC := $(wildcard ebpf/*.bpf.c)
EBPF_OBJ := $(patsubst ebpf/%.bpf.c,$(OUT)/ebpf/%.bpf.o,$(EBPF_SRC))
TEST_EBPF_SRC := $(wildcard test/ebpf/*.bpf.c)
TEST_EBPF_OBJ := $(patsubst test/ebpf/%.bpf.c,$(OUT)/test-ebpf/%.bpf.o,$(TEST_EBPF_SRC))
ABI_HEADERS := $(wildcard ebpf/include/*.h)
ABI_OBJ := $(OUT)/ebpf/abi_anchor.o
GENERATED := src/generated/abi.ts
ADDON := src/native/build/Release/sharp_bpf.node
NODEDIR := $(if $(wildcard /usr/include/node/node_api.h),--nodedir=/usr,)
TS_SRC := $(shell find src test -name '*.ts' -not -path 'src/generated/*' 2>/dev/null)
TS_STAMP := dist/.stamp
TEST_FILES ?= dist/test

all: build

# ---------------------------------------------------------------- dependencies

deps: apt-deps npm-deps

apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

npm-deps: node_modules/.package-lock.json

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# ---------------------------------------------------------------- build

build: deps ebpf addon ts

# the switch with its capture hook compiled out: the bench's "capture off costs nothing" reference
CAPTURE_OFF_OBJ := $(OUT)/ebpf/switch-nocapture.bpf.o

ebpf: $(EBPF_OBJ) $(TEST_EBPF_OBJ) $(ABI_OBJ) $(GENERATED) $(CAPTURE_OFF_OBJ)

$(CAPTURE_OFF_OBJ): ebpf/switch.bpf.c $(ABI_HEADERS) | apt-deps
	@mkdir -p $(@D)
	clang $(BPF_CFLAGS) -DSHARP_CAPTURE_DISABLED -c $< -o $@

$(OUT)/ebpf/%.bpf.o: ebpf/%.bpf.c $(ABI_HEADERS) | apt-deps
	@mkdir -p $(@D)
	clang $(BPF_CFLAGS) -c $< -o $@

$(OUT)/test-ebpf/%.bpf.o: test/ebpf/%.bpf.c $(ABI_HEADERS) | apt-deps
	@mkdir -p $(@D)
	clang $(BPF_CFLAGS) -c $< -o $@

$(ABI_OBJ): ebpf/include/abi_anchor.c $(ABI_HEADERS) | apt-deps
	@mkdir -p $(@D)
	clang $(BPF_CFLAGS) -c $< -o $@

$(GENERATED): ebpf/tools/gen-abi.mjs $(ABI_OBJ) $(EBPF_OBJ) $(TEST_EBPF_OBJ)
	node ebpf/tools/gen-abi.mjs --abi $(ABI_OBJ) --out $@ $(EBPF_OBJ) $(TEST_EBPF_OBJ)

addon: $(ADDON)

$(ADDON): src/native/bpf_binding.cc src/native/binding.gyp | npm-deps apt-deps
	cd src/native && ../../node_modules/.bin/node-gyp rebuild $(NODEDIR) --loglevel=error >/dev/null

ts: $(TS_STAMP)

$(TS_STAMP): $(TS_SRC) $(GENERATED) tsconfig.json | npm-deps
	node_modules/.bin/tsc -p tsconfig.json
	@touch $@

# ---------------------------------------------------------------- test & bench

check-root:
	@if [ "$$(id -u)" != 0 ]; then echo "make test loads programs into the kernel and creates network namespaces: run it as root" >&2; exit 1; fi

bpffs:
	@mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

test: build check-root bpffs
	node test/run.mjs $(TEST_FILES)

bench: build check-root bpffs
	@mkdir -p results
	node dist/src/bench/main.js

# The P4 program: compiled with p4c when it is installed; the BMv2 JSON, the
# P4Info and the hash of the sources they came from are committed, so users
# without p4c load those (a test fails when the sources changed but not they).
P4_SRC := p4/sharp.p4 p4/sharp_abi.p4
p4:
	@if ! command -v p4c >/dev/null 2>&1; then echo 'p4c is not installed: using the committed p4/build artifacts (see README "P4 on BMv2")'; exit 0; fi; \
	mkdir -p p4/build && \
	p4c --target bmv2 --arch v1model --p4runtime-files p4/build/sharp.p4info.txtpb,p4/build/sharp.p4info.json -o p4/build p4/sharp.p4 && \
	sha256sum $(P4_SRC) > p4/build/sources.sha256 && echo "p4/build: sharp.json, sharp.p4info.txtpb, sharp.p4info.json, sources.sha256"

demo: build check-root bpffs
	node dist/src/cli/main.js demo $(DEMO_ARGS)

clean:
	rm -rf $(OUT) dist src/generated src/native/build
