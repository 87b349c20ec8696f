# ikefrag — build, test and run targets. `make test` installs what it needs
# (Debian packages and pinned Go tools) when missing, so it works on a fresh
# Debian 12 machine as root.

GO          ?= go
STATICCHECK_VERSION := v0.8.2
BIN         := bin
PREFIX      ?= /usr/local
CONFIG      ?= configs/ikefragd.yaml
# Debian packages the tests use: tshark (decode comparison), nftables and
# iproute2 (namespace labs), strongSwan (real IKE peers), tcpdump (captures),
# prometheus (promtool tests the alert rules).
TEST_DEBS   := tshark nftables iproute2 iputils-ping ethtool tcpdump \
               strongswan-charon strongswan-swanctl strongswan-pki \
               libcharon-extra-plugins libstrongswan-extra-plugins \
               libstrongswan-standard-plugins build-essential pkg-config bzip2 \
               systemd prometheus
# The BPF compiler is pinned: Debian 12's clang 14 (with its llvm-strip);
# the headers are vendored in ebpf/include. Same sources, same objects.
GEN_DEBS    := clang-14 llvm-14
BPF2GO_ENV  := BPF2GO_CC=clang-14 BPF2GO_STRIP=llvm-strip-14
GOTESTFLAGS ?= -count=1 -timeout 25m
# VERSION is stamped into both binaries (ikefragd --version, ikefragctl
# version, status, ikefrag_build_info) in every build path: build, run,
# install and deb all go through the build target.
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X github.com/ikefrag/ikefrag/cmd/internal/buildinfo.version=$(VERSION)

.PHONY: all build plugin test lint generate bench run install deps lab-deps gen-deps fuzz demo clean deb deb-plugin test-kernels test-kernel-ci check-generate

all: build

# Static binaries (CGO_ENABLED=0) in every build path: they run on any
# Debian release, and only without cgo can ikefragd drop a capability from
# all of its threads.
build:
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

# plugin builds the ikefrag-keys strongSwan plugin (keys/strongswan-plugin)
# against the installed strongSwan, from Debian's source package of that
# version, and writes bin/libstrongswan-ikefrag-keys.so. The configured
# source tree and the .so are cached (per strongSwan version and plugin
# source hash) like the lab's save-keys; the first build takes a minute.
plugin:
	keys/strongswan-plugin/build.sh --out $(BIN) >/dev/null
	@echo "$(BIN)/libstrongswan-ikefrag-keys.so"

# deps installs missing Debian packages (apt-get update only when needed).
deps:
	@./scripts/ensure-debs.sh $(TEST_DEBS)

# lab-deps builds (once, then cached) strongSwan's save-keys plugin that the
# namespace lab loads into charon (Debian does not ship it), and the
# ikefrag-keys plugin when bin/ lacks it or its cache is stale.
lab-deps: deps
	@if [ "$$(id -u)" -eq 0 ]; then test/lab/strongswan-save-keys.sh >/dev/null; fi
	@if [ "$$(id -u)" -eq 0 ]; then keys/strongswan-plugin/build.sh --out $(BIN) >/dev/null; fi

gen-deps:
	@./scripts/ensure-debs.sh $(GEN_DEBS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

test: deps lab-deps lint check-generate
	$(GO) test $(GOTESTFLAGS) ./...
	$(MAKE) --no-print-directory test-kernel-ci

# The kernel matrix (test/kernels/matrix.sh): the kernel-facing test
# binaries run as root inside Debian's own kernels under qemu, then the
# shipped unit under systemd as PID 1. `make test` runs Debian 12's stock
# kernel (6.1); test-kernels runs them all.
KERNELS ?= 6.1 6.12 5.10 6.18
test-kernel-ci:
	@if [ "$$(id -u)" -ne 0 ]; then echo "kernel matrix skipped: needs root (qemu, BPF in the guest)"; else \
	  test/kernels/matrix.sh 6.1 && test/kernels/matrix.sh --systemd 6.1; fi

test-kernels: deps lab-deps
	test/kernels/matrix.sh $(KERNELS)
	test/kernels/matrix.sh --systemd $(firstword $(KERNELS))

# generate rebuilds the BPF objects with bpf2go; the output is committed so
# that a plain `go build` needs no clang.
generate: gen-deps
	$(BPF2GO_ENV) $(GO) generate ./ebpf/...

# check-generate fails when the BPF objects and their Go bindings in the
# tree are not what `make generate` makes from the sources beside them.
GENERATED = find ebpf -name '*_bpfe[lb]*.go' -o -name '*_bpfe[lb]*.o' | LC_ALL=C sort | xargs sha256sum
check-generate: gen-deps
	@$(GENERATED) > .generated.before
	@$(MAKE) --no-print-directory generate >/dev/null
	@$(GENERATED) > .generated.after
	@if ! cmp -s .generated.before .generated.after; then \
	  echo "make generate changed the BPF objects or their bindings: regenerate and commit them"; \
	  diff .generated.before .generated.after; rm -f .generated.before .generated.after; exit 1; fi
	@rm -f .generated.before .generated.after; echo "BPF objects match their sources"

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# FUZZTIME per target, e.g. make fuzz FUZZTIME=5m
FUZZTIME ?= 30s
fuzz:
	@./scripts/fuzz-all.sh $(FUZZTIME)

# demo builds the namespace lab with real strongSwan and shows a client
# behind a small-MTU, fragment-dropping path failing without ikefrag and
# connecting through its proxy, with ladder diagrams and verdicts; then a
# path that forwards no UDP 500/4500, where the client gets through over
# TCP (RFC 9329) to the proxy's TCP listener; then the TCP client's large
# IKE_AUTH split by the proxy (keyed) into RFC 7383 fragments for a backend
# behind a 1280-byte link that drops IP fragments.
demo: deps lab-deps
	IKEFRAG_DEMO=1 $(GO) test -count=1 -v -run '^TestDemo$$' ./test/lab/demo/

run: build
	$(BIN)/ikefragd --config $(CONFIG)

# install keeps an existing /etc/ikefrag/ikefragd.yaml (the shipped one goes
# next to it as ikefragd.yaml.dist) and points the unit at $(PREFIX).
UNITDIR     ?= /etc/systemd/system
install: build
	install -D -m 0755 $(BIN)/ikefragd $(DESTDIR)$(PREFIX)/sbin/ikefragd
	install -D -m 0755 $(BIN)/ikefragctl $(DESTDIR)$(PREFIX)/bin/ikefragctl
	@if [ -e $(DESTDIR)/etc/ikefrag/ikefragd.yaml ]; then \
	  install -D -m 0644 configs/ikefragd.yaml $(DESTDIR)/etc/ikefrag/ikefragd.yaml.dist; \
	  echo "kept $(DESTDIR)/etc/ikefrag/ikefragd.yaml; the shipped one is ikefragd.yaml.dist"; \
	else \
	  install -D -m 0644 configs/ikefragd.yaml $(DESTDIR)/etc/ikefrag/ikefragd.yaml; \
	fi
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed 's|/usr/local/sbin/ikefragd|$(PREFIX)/sbin/ikefragd|g' systemd/ikefragd.service > $(DESTDIR)$(UNITDIR)/ikefragd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/ikefragd.service
	install -D -m 0644 systemd/ikefragd.service.d/proxy.conf $(DESTDIR)$(UNITDIR)/ikefragd.service.d/proxy.conf
	@echo "installed; then: systemctl daemon-reload && systemctl enable --now ikefragd"

# deb builds $(DEBDIR)/ikefrag_<version>_<arch>.deb with dpkg-deb (see
# packaging/build-deb.sh): static binaries stamped with VERSION, the unit
# and its proxy drop-in, the configuration as a conffile, man pages and
# completions generated from the binaries, the dashboard and alert rules.
DEBDIR      ?= $(BIN)
DEB_ARCH    ?= $(shell $(GO) env GOARCH)
deb:
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/deb/ ./cmd/ikefragd ./cmd/ikefragctl
	packaging/build-deb.sh $(BIN)/deb $(VERSION) $(DEB_ARCH) $(DEBDIR)

# deb-plugin builds $(DEBDIR)/strongswan-plugin-ikefrag_<version>_<arch>.deb
# (packaging/build-plugin-deb.sh): the ikefrag-keys charon plugin, built
# as `make plugin` does for the strongSwan installed here (root for the
# first build), depending on exactly that strongswan-libcharon version; its
# Debian version is the main package's plus -ss<strongSwan version>. A
# target of its own: `make deb` needs no strongSwan source or C compiler,
# and the plugin's architecture is this machine's (not DEB_ARCH).
deb-plugin:
	packaging/build-plugin-deb.sh $(VERSION) $(DEBDIR)

clean:
	rm -rf $(BIN)
