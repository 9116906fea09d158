# stenod's build, test and benchmark entry points. `make help` lists them.
SHELL := /bin/bash
GO ?= go
export PATH := /usr/local/go/bin:$(shell $(GO) env GOPATH 2>/dev/null)/bin:$(PATH)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# EXTRA_LDFLAGS: more linker flags (make deb strips the binary: -s -w).
EXTRA_LDFLAGS ?=
LDFLAGS := -X main.version=$(VERSION) -X main.commitFlag=$(COMMIT) $(EXTRA_LDFLAGS)
# stenographer's capture program, built once from its source (the Go module
# proxy serves it) for the stenotype rows of make bench-capture.
STENOTYPE ?= /usr/local/bin/stenotype
STATICCHECK ?= $(shell command -v staticcheck || echo $$($(GO) env GOPATH)/bin/staticcheck)
# Packages whose tests need root, BPF or network namespaces run one at a time
# (-p 1): they create interfaces and pin maps and must not interfere.
TEST_FLAGS ?= -count=1 -timeout 40m
# The packages where capture, queries and the exporter share live state:
# make test runs their tests again under the race detector.
RACE_PKGS ?= ./index ./spool ./engine ./capture ./api ./ipfix

.PHONY: help build install deb deb-check provision run test test-short lint generate ci bench bench-storage bench-capture soak faults fuzz clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

build: ## build bin/stenod (static, no cgo: the privilege drop must reach every thread)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/stenod ./cmd/stenod

PREFIX ?= /usr/local
install: build ## install binary, systemd unit, user and /etc/stenod/config.json (root)
	install -D -m 0755 bin/stenod $(DESTDIR)$(PREFIX)/bin/stenod
	install -D -m 0644 etc/systemd/stenod.service $(DESTDIR)/etc/systemd/system/stenod.service
	install -D -m 0644 etc/sysusers.d/stenod.conf $(DESTDIR)/usr/lib/sysusers.d/stenod.conf
	install -d -m 0755 $(DESTDIR)/etc/stenod
	[ -e $(DESTDIR)/etc/stenod/config.json ] || install -m 0644 etc/stenod.json $(DESTDIR)/etc/stenod/config.json
	install -d $(DESTDIR)$(PREFIX)/share/doc/stenod && install -m 0644 docs/*.md $(DESTDIR)$(PREFIX)/share/doc/stenod/
	if [ -z "$(DESTDIR)" ]; then \
	  systemd-sysusers /usr/lib/sysusers.d/stenod.conf 2>/dev/null || id stenod >/dev/null 2>&1 || \
	  useradd --system --user-group --home-dir /var/lib/stenod --shell /usr/sbin/nologin stenod; \
	  systemctl daemon-reload 2>/dev/null || true; fi

deb: ## build the Debian package dist/stenod_VERSION_ARCH.deb (packaging/debian/; no root needed)
	MAKE="$(MAKE)" bash scripts/deb.sh

deb-check: ## build the package, apt-get install it, check it, purge it (CI=true and root only)
	MAKE="$(MAKE)" bash scripts/deb-check.sh

provision: ## install build and test dependencies (Debian 12; needs root, skipped otherwise)
	@if [ "$$(id -u)" = 0 ]; then bash scripts/provision.sh; \
	  else echo "provision: not root, skipping (run 'sudo make provision' once)"; fi

run: provision build ## run the appliance: IFACE=eth1 captures that port, unset runs the demo tap
	bin/stenod run $(if $(IFACE),--iface $(IFACE),--demo) $(RUN_ARGS)

test: provision build ## run every test (as root for the capture tests), then the concurrent packages' under -race
	$(GO) test $(TEST_FLAGS) -p 1 ./...
	$(GO) test -race -short $(TEST_FLAGS) -p 1 $(RACE_PKGS)

test-short: ## the fast unprivileged tests
	$(GO) test -short -count=1 ./...

lint: ## gofmt, go mod tidy, the binary free of test code, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@$(GO) mod tidy -diff || { echo "go mod tidy would change go.mod or go.sum (above): run go mod tidy"; exit 1; }
	@if $(GO) list -deps ./cmd/stenod | grep -E '/internal/(testkit|benchtools)(/|$$)'; then \
	  echo "cmd/stenod is built with test or benchmark code (above): see docs/architecture.md"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

include bpf/Makefile.inc

ci: lint ## what CI runs: lint, gen/ current, all tests, the Debian package installed and purged
	MAKE="$(MAKE)" bash scripts/check-generated.sh
	$(MAKE) test
	$(MAKE) deb-check

bench: bench-storage bench-capture ## all benchmarks, as tables with ratios against tcpdump

bench-storage: build ## import, index size and query latency vs tcpdump -r
	$(GO) run ./internal/benchtools/storagebench $(BENCH_ARGS)

bench-capture: provision build $(STENOTYPE) ## capture on a veth pair vs tcpdump -i and stenographer's stenotype, freshness (root)
	$(GO) run ./internal/benchtools/capbench -stenotype $(STENOTYPE) $(CAPBENCH_ARGS)

$(STENOTYPE):
	bash scripts/build-stenotype.sh $@

soak: build ## kill -9 a capturing daemon SOAK_CYCLES times (default 200) and check nothing flushed is lost
	STENOD_SOAK_CYCLES=$${SOAK_CYCLES:-200} $(GO) test -count=1 -timeout 60m -run Kill9 -v ./cmd/stenod

faults: ## damage a spool in FAULT_CASES random ways (default 20000) and check every answer; FAULT_SEED=N runs one case
	set -o pipefail; STENOD_FAULT_CASES=$${FAULT_CASES:-20000} $(if $(FAULT_SEED),STENOD_FAULT_SEED=$(FAULT_SEED)) $(GO) test -count=1 -timeout 0 -v -run 'TestNamedDamage|TestRandomDamage' ./internal/testkit/faults | grep -v '^=== RUN'

fuzz: ## run every fuzz target for FUZZTIME each (default 30s)
	@for t in flow:FuzzParse query:FuzzParse index:FuzzDecode pcapio:FuzzReader; do \
	  pkg=$${t%%:*}; fn=$${t##*:}; \
	  $(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$${FUZZTIME:-30s} ./$$pkg/ || exit 1; \
	done

clean: ## remove build output
	rm -rf bin dist
