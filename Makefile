# xdplb: build, test and demo. Run as root on Debian (see README.md).
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
export CGO_ENABLED := 0

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN     := bin/xdplb

# Debian packages the build, the generator and the tests need.
DEB_PKGS := clang llvm libbpf-dev bpftool iproute2 nftables ca-certificates zsh groff-base hping3 frr
# ... and the real peers the benchmark measures against.
BENCH_PKGS := nginx-light wrk haproxy
# ... and what `make vm-test` boots Debian's 6.1 kernel with (qemu's
# software emulation, busybox for the initramfs, depmod for the unpacked
# modules), without qemu's GUI and firmware recommends.
VM_PKGS := qemu-system-x86 busybox-static kmod cpio xz-utils
# ... and `make vagrant-test`: Vagrant with libvirt driving qemu, libvirt's
# daemons and isolated networks, and what builds the local Debian 12 box
# (mmdebstrap, a partitioned disk image with BIOS grub).
VAGRANT_PKGS := vagrant vagrant-libvirt qemu-system-x86 qemu-utils libvirt-daemon-system \
	libvirt-daemon-driver-qemu libvirt-clients dnsmasq-base iptables mmdebstrap e2fsprogs \
	fdisk grub-pc-bin grub2-common dosfstools

# Where `make install` puts things: PREFIX and DESTDIR as usual (a package
# build installs into DESTDIR). Each directory is one the system looks in
# for PREFIX=/usr/local as for PREFIX=/usr.
PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
MANDIR      ?= $(PREFIX)/share/man
UNITDIR     ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
SYSCONFDIR  ?= /etc

.PHONY: all build man install uninstall deps bench-deps vm-deps vagrant-deps vagrant-files vagrant-test install-pkgs generate generate-check vet lint test test-unit test-e2e vm-test fuzz demo bench clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/xdplb

# The man page, generated from the CLI's own definition.
man: build
	./$(BIN) man > bin/xdplb.1

# The binary, its man page, the systemd unit, the bash and zsh completion,
# and /etc/default/xdplb (the daemon's flags) unless there is one already.
# Nothing is enabled or started.
install: build man
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/xdplb
	install -D -m 0644 bin/xdplb.1 $(DESTDIR)$(MANDIR)/man1/xdplb.1
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' dist/systemd/xdplb.service.in > bin/xdplb.service
	install -D -m 0644 bin/xdplb.service $(DESTDIR)$(UNITDIR)/xdplb.service
	./$(BIN) completion bash > bin/xdplb.bash
	install -D -m 0644 bin/xdplb.bash $(DESTDIR)$(BASHCOMPDIR)/xdplb
	./$(BIN) completion zsh > bin/_xdplb
	install -D -m 0644 bin/_xdplb $(DESTDIR)$(ZSHCOMPDIR)/_xdplb
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/default/xdplb ]; then \
		echo "kept $(DESTDIR)$(SYSCONFDIR)/default/xdplb"; \
	else \
		install -D -m 0644 dist/default/xdplb $(DESTDIR)$(SYSCONFDIR)/default/xdplb; \
	fi
	@echo "installed; set the daemon's flags in $(SYSCONFDIR)/default/xdplb, then: systemctl daemon-reload && systemctl enable --now xdplb"

# Removes what install put there, but /etc/default/xdplb and the state.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/xdplb $(DESTDIR)$(MANDIR)/man1/xdplb.1 $(DESTDIR)$(UNITDIR)/xdplb.service \
		$(DESTDIR)$(BASHCOMPDIR)/xdplb $(DESTDIR)$(ZSHCOMPDIR)/_xdplb

# Installs only what is missing, so it is cheap to run every time.
deps:
	@$(MAKE) --no-print-directory install-pkgs PKGS="$(DEB_PKGS)"
	@$(GO) version >/dev/null || { echo "Go is required (expected at /usr/local/go/bin)"; exit 1; }

bench-deps: deps
	@$(MAKE) --no-print-directory install-pkgs PKGS="$(BENCH_PKGS)"

vm-deps: deps
	@$(MAKE) --no-print-directory install-pkgs PKGS="$(VM_PKGS)" APT_FLAGS=--no-install-recommends

vagrant-deps:
	@$(MAKE) --no-print-directory install-pkgs PKGS="$(VAGRANT_PKGS)"

install-pkgs:
	@missing=""; for p in $(PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_FLAGS) $$missing >/dev/null; \
	fi

generate:
	$(GO) generate ./loader/ ./bench/progs/

# Regenerates the bpf2go output and fails if it differs from what is committed.
generate-check: generate
	@if ! git diff --quiet -- loader/ bench/progs/ || \
		[ -n "$$(git ls-files --others --exclude-standard loader/ bench/progs/)" ]; then \
		echo "generated files differ from the committed ones; run 'make generate' and commit:"; \
		git status --short loader/ bench/progs/; exit 1; \
	fi

vet:
	@bad=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfe[lb].go$$')); \
		if [ -n "$$bad" ]; then echo "gofmt needed: $$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	@bash .ci/check-imports
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod/go.sum are not tidy: run 'go mod tidy'"; exit 1; }

# FUZZ_CI bounds the fuzzing run of `make test`; `make fuzz` runs longer.
# The NAT target is bounded by a count (about 30 s here): with a time bound
# it once failed with "context deadline exceeded" as the deadline hit an
# execution in flight, a failure of no input.
FUZZ_CI ?= 30s
FUZZ_CI_NAT ?= 150000x
FUZZTIME ?= 10m

# Every package's tests through gotestsum (a failed test's output in full, a
# line per package otherwise), then the counts of top-level tests on this
# kernel, as make vm-test prints them for 6.1; the JSON stays in bin/.
test: deps generate-check vet build
	@rc=0; $(GO) tool gotestsum --format pkgname --jsonfile bin/test-host.json -- -count=1 -timeout 20m ./... || rc=$$?; \
	n() { grep -cE '"Action":"'$$1'","Package":"[^"]*","Test":"[^"/]*"' bin/test-host.json || true; }; \
	echo "make test: kernel $$(uname -r): $$(n pass) passed, $$(n fail) failed, $$(n skip) skipped"; \
	exit $$rc
	$(GO) test -run '^$$' -fuzz '^FuzzXDP$$' -fuzztime $(FUZZ_CI) ./loader/
	$(GO) test -run '^$$' -fuzz '^FuzzXDPNAT$$' -fuzztime $(FUZZ_CI_NAT) ./loader/

# Random and mutated frames through the real XDP program (root): the DR
# target, then the NAT one (a two-armed lab with real FIB lookups).
fuzz: deps
	$(GO) test -run '^$$' -fuzz '^FuzzXDP$$' -fuzztime $(FUZZTIME) ./loader/
	$(GO) test -run '^$$' -fuzz '^FuzzXDPNAT$$' -fuzztime $(FUZZTIME) ./loader/

test-unit:
	$(GO) test -count=1 ./control/... ./cmd/... ./healthcheck/... ./internal/...

test-e2e: build
	$(GO) test -count=1 -v -timeout 15m ./vm-tests/...

# The packet tests, the real-maps property test, the lab and the e2e tests
# on Debian 12's 6.1 kernel in a VM under software emulation (root; the
# kernel is downloaded and unpacked into /var/cache/xdplb-vm, not
# installed). XDPLB_VM_* settings: vm-tests/kernel/run.sh.
vm-test: vm-deps
	bash vm-tests/kernel/run.sh

demo: deps build
	./$(BIN) demo

# A benchmark, not a test: it prints and writes bench/RESULTS.md,
# and never fails on a timing.
bench: bench-deps build
	$(GO) test -run '^$$' -bench Program -benchtime 2000000x ./loader/
	$(GO) test -run '^$$' -bench 'PutLookupTable|PutVIPs' ./loader/
	$(GO) test -run '^$$' -bench 'SingleChange|Apply1000x32|BuildMaglev' -benchtime 3x ./control/reconcile/
	$(GO) run ./bench/cmd/xdplb-bench -binary $(BIN) -out bench/RESULTS.md

# What the Vagrant lab's guests get (Vagrantfile): xdplb as `make install`
# lays it out under /usr/local (binary, unit, /etc/default/xdplb, man page,
# completion) and the test helper, static binaries built here, in one tar.
vagrant-files: build
	rm -rf bin/guest
	$(MAKE) --no-print-directory install DESTDIR=$(CURDIR)/bin/guest PREFIX=/usr/local >/dev/null
	$(GO) build -o bin/guest/usr/local/bin/xdplb-vmtest ./vm-tests/vagrant/vmtest
	tar -C bin/guest --owner=0 --group=0 -cf bin/xdplb-guest.tar usr etc

# The Vagrant lab from nothing to nothing (vm-tests/vagrant/run.sh): a box
# built from Debian's packages, four VMs, the tests, and everything removed
# again, also on failure or Ctrl-C. Root.
VAGRANT_TEST_TIMEOUT ?= 75m
vagrant-test: vagrant-deps vagrant-files
	timeout --foreground --kill-after=5m $(VAGRANT_TEST_TIMEOUT) vm-tests/vagrant/run.sh

clean:
	rm -rf bin/
