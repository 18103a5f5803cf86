# SPDX-License-Identifier: Apache-2.0
#
# A thin wrapper over CMake. `make run` and `make test` are the quick start;
# both install missing Debian packages first when run as root.

BUILD	?= build
ASAN_BUILD ?= build-asan
BENCH_BUILD ?= build-bench
CONFIG	?= config/tollgate.yaml
JOBS	?= $(shell nproc 2>/dev/null || echo 2)
WERROR	?= $(if $(CI),ON,OFF)
CMAKE_FLAGS ?=

# chromium runs the dashboard test (tests/dashboard), tmux the test of
# tollgate top (tests/integration/test_top.py).
DEB_PACKAGES = build-essential cmake pkg-config clang-format python3 openssl \
	sqlite3 nginx-light libevent-dev libcurl4-openssl-dev libssl-dev libcjson-dev \
	libsqlite3-dev libyaml-dev libcmocka-dev curl tzdata libhiredis-dev \
	redis-server libpq-dev postgresql zlib1g-dev libmimalloc-dev \
	chromium tmux

# The SDK suite (tests/sdk) needs node >= 18 and npm. Debian's own nodejs
# and npm are installed only when there is no node at all: a node from
# elsewhere (with its own npm) is kept.
NODE_DEB_PACKAGES = nodejs npm
SDK_DIR = tests/sdk
SDK_STAMP = $(SDK_DIR)/node_modules/.tollgate-npm-ci
# The dashboard test (tests/dashboard): puppeteer-core driving Debian's
# chromium; puppeteer-core downloads no browser.
DASH_DIR = tests/dashboard
DASH_STAMP = $(DASH_DIR)/node_modules/.tollgate-npm-ci
# The benchmark's peers and load tools; nodejs only if no node is installed.
BENCH_DEB_PACKAGES = wrk haproxy valgrind $(if $(shell command -v node),,nodejs npm)

.PHONY: all deps bench-deps build asan run test test-plain test-asan check \
	format check-format bench bench-build bench-fleet bench-ship bench-instructions bench-smoke crashloop soak clean sdk-deps \
	dashboard-deps \
	install

all: build

deps bench-deps:
	@missing=$$(for p in $(if $(filter bench-deps,$@),$(BENCH_DEB_PACKAGES),$(DEB_PACKAGES)); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
		grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" -eq 0 ]; then \
			echo "installing:" $$missing; \
			apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			    --no-install-recommends $$missing >/dev/null || exit 1; \
		else \
			echo "missing Debian packages:" $$missing; \
			echo "run: sudo apt-get install" $$missing; exit 1; \
		fi; \
	fi
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
		if [ "$$(id -u)" -eq 0 ]; then \
			echo "installing:" $(NODE_DEB_PACKAGES); \
			apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			    --no-install-recommends $(NODE_DEB_PACKAGES) >/dev/null || exit 1; \
		else \
			echo "node and npm are missing (the SDK suite needs them)"; \
			echo "run: sudo apt-get install" $(NODE_DEB_PACKAGES); exit 1; \
		fi; \
	fi

# The pinned SDKs of the SDK suite, installed again only when the lockfile
# or package.json changed. --prefer-offline takes what npm's cache holds
# without asking the registry.
sdk-deps: deps $(SDK_STAMP)

$(SDK_STAMP): $(SDK_DIR)/package.json $(SDK_DIR)/package-lock.json
	cd $(SDK_DIR) && npm ci --no-audit --no-fund --prefer-offline
	touch $@

dashboard-deps: deps $(DASH_STAMP)

$(DASH_STAMP): $(DASH_DIR)/package.json $(DASH_DIR)/package-lock.json
	cd $(DASH_DIR) && npm ci --no-audit --no-fund --prefer-offline
	touch $@

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DTG_WERROR=$(WERROR) $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

$(ASAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug \
	    -DTG_WERROR=$(WERROR) -DTG_SANITIZE="address;undefined" $(CMAKE_FLAGS)

asan: deps $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j $(JOBS)

run: build
	./$(BUILD)/tollgate -d -c $(CONFIG)

# The whole suite runs twice: on the plain build and on the ASan+UBSan one.
# The SDK suite (tests/sdk) too: in the ASan tree the official SDKs' traffic
# also runs through a memory-checked tollgate, for about ten seconds more.
test: test-plain test-asan

test-plain: build sdk-deps dashboard-deps
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan: asan sdk-deps dashboard-deps
	cd $(ASAN_BUILD) && \
	    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    ctest --output-on-failure -j $(JOBS)

# The benchmark (bench/run.py): tollgate against direct, nginx, HAProxy and
# the Portkey gateway on loopback, ~15 minutes, writes docs/benchmarks.md and
# bench/results/<date>/. Built RelWithDebInfo (-O2, with symbols for perf),
# as `make build` ships. Never part of `make test`.
$(BENCH_BUILD)/CMakeCache.txt:
	cmake -S . -B $(BENCH_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	    -DTG_WERROR=$(WERROR) $(CMAKE_FLAGS)

bench-build: deps $(BENCH_BUILD)/CMakeCache.txt
	cmake --build $(BENCH_BUILD) -j $(JOBS) --target tollgate fakeprov loadgen

bench/node_modules/.package-lock.json: bench/package.json bench/package-lock.json
	cd bench && npm ci --no-audit --no-fund

bench: bench-deps bench-build bench/node_modules/.package-lock.json
	BENCH_BUILD=$(BENCH_BUILD) timeout 1200 python3 bench/run.py

# Instructions per call on every thread under callgrind (about 30 s): exact
# counts, so two commits compare on a busy machine.
bench-instructions: bench-deps bench-build
	BENCH_BUILD=$(BENCH_BUILD) python3 bench/run.py --instructions

# The fleet (docs/benchmarks.md, Fleet): bench/fleet_bench.py, tollgate T3
# with and without fleet: side by side through the binary (~2 minutes), and
# bench/fleet_sim.py, the lease protocol of 10 to 1,000 simulated instances
# on one redis-server (~2 minutes; exits non-zero on an overshoot).
bench-fleet: bench-build
	BENCH_BUILD=$(BENCH_BUILD) timeout 900 python3 bench/fleet_bench.py
	timeout 900 python3 bench/fleet_sim.py

# The fleet ledger (docs/benchmarks.md, Fleet ledger): bench/ship_bench.py,
# tollgate T1 with ledger.ship: on and off side by side, and the rows/s one
# shipper drains a 50,000-row backlog at into a PostgreSQL started here.
bench-ship: bench-build
	BENCH_BUILD=$(BENCH_BUILD) timeout 1200 python3 bench/ship_bench.py

# About 30 s, generous bounds (no lost ledger rows, added p99 < 2 ms at
# c=1, RSS < 64 MB); exits non-zero on failure. Needs no peers.
bench-smoke: bench-build
	BENCH_BUILD=$(BENCH_BUILD) timeout 300 python3 bench/run.py --smoke

# The crash loop (bench/crashloop.py): 50 rounds of tollgate killed with
# SIGKILL at 70 % of 3 s of open-loop load at 1,000 calls/s, restarted, and
# every call the client got a whole answer for looked up in the ledger
# (about 3 minutes; exits non-zero if one has no row). Options through
# CRASHLOOP_ARGS, e.g. CRASHLOOP_ARGS="--durability power --keep".
# Never part of `make test`.
CRASHLOOP_ARGS ?=

crashloop: bench-build
	BENCH_BUILD=$(BENCH_BUILD) timeout 3600 python3 bench/crashloop.py \
	    $(CRASHLOOP_ARGS)

# The soak (bench/soak.py): SOAK_MINUTES (default 30) of mixed load with
# streams, drops, stalls, kills and reloads; RSS, descriptors and the
# ledger sampled every 10 s; nothing lost; the table goes into
# docs/reliability.md. SOAK_BUILD=build-asan (after `make asan`) runs the
# instrumented variant. Never part of `make test`.
SOAK_MINUTES ?= 30
SOAK_BUILD ?= $(BUILD)
SOAK_DOC ?= $(if $(filter $(BUILD),$(SOAK_BUILD)),docs/reliability.md,)

soak: $(if $(filter $(ASAN_BUILD),$(SOAK_BUILD)),asan,build)
	timeout $$(( $(SOAK_MINUTES) * 60 + 600 )) python3 bench/soak.py \
	    --minutes $(SOAK_MINUTES) --build $(SOAK_BUILD) \
	    $(if $(SOAK_DOC),--doc $(SOAK_DOC))

# The binary in $(PREFIX)/bin, and the config (ledger in /var/lib/tollgate),
# price table and systemd unit in $(PREFIX)/share/tollgate
# (docs/operations.md).
PREFIX ?= /usr/local

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

check: build
	./$(BUILD)/tollgate check -c $(CONFIG)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

check-format:
	tools/checksrc.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(BENCH_BUILD)
