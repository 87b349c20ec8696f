# ikefrag — build, test and run targets. `make test` installs what it needs
# (Debian packages and pinned Go tools) when missing, so it works on a fresh
# Debian 12 machine as root.

GO          ?= go
STATICCHECK_VERSION := v0.8.2
BIN         := bin
PREFIX      ?= /usr/local
CONFIG      ?= configs/ikefragd.yaml
# Debian packages the tests use: tshark (decode comparison), nftables and
# iproute2 (namespace labs), strongSwan (real IKE peers), tcpdump (captures).
TEST_DEBS   := tshark nftables iproute2 iputils-ping ethtool tcpdump \
               strongswan-charon strongswan-swanctl strongswan-pki \
               libcharon-extra-plugins libstrongswan-extra-plugins \
               libstrongswan-standard-plugins build-essential pkg-config bzip2 \
               systemd
GEN_DEBS    := clang llvm libbpf-dev
GOTESTFLAGS ?= -count=1 -timeout 25m

.PHONY: all build test lint generate bench run install deps lab-deps gen-deps fuzz clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# deps installs missing Debian packages (apt-get update only when needed).
deps:
	@./scripts/ensure-debs.sh $(TEST_DEBS)

# lab-deps builds (once, then cached) strongSwan's save-keys plugin that the
# namespace lab loads into charon; Debian does not ship it.
lab-deps: deps
	@if [ "$$(id -u)" -eq 0 ]; then test/lab/strongswan-save-keys.sh >/dev/null; fi

gen-deps:
	@./scripts/ensure-debs.sh $(GEN_DEBS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

test: deps lab-deps lint
	$(GO) test $(GOTESTFLAGS) ./...

# generate rebuilds the BPF objects with bpf2go; the output is committed so
# that a plain `go build` needs no clang.
generate: gen-deps
	$(GO) generate ./ebpf/...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# FUZZTIME per target, e.g. make fuzz FUZZTIME=5m
FUZZTIME ?= 30s
fuzz:
	@./scripts/fuzz-all.sh $(FUZZTIME)

run: build
	$(BIN)/ikefragd --config $(CONFIG)

install: build
	install -D -m 0755 $(BIN)/ikefragd $(DESTDIR)$(PREFIX)/sbin/ikefragd
	install -D -m 0755 $(BIN)/ikefragctl $(DESTDIR)$(PREFIX)/bin/ikefragctl
	install -D -m 0644 configs/ikefragd.yaml $(DESTDIR)/etc/ikefrag/ikefragd.yaml
	install -D -m 0644 systemd/ikefragd.service $(DESTDIR)/etc/systemd/system/ikefragd.service

clean:
	rm -rf $(BIN)
