# Tessera entry points. `make demo` and `make test` are the two a newcomer needs (see README.md).
#
# Both install missing system packages first (scripts/install-deps.sh: pcscd, the vpcd virtual
# reader driver, dbus-daemon, PC/SC, udev and PAM headers); that step needs root or prints the
# `sudo apt-get install …` line to run.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

CARGO ?= cargo
# Extra flags for every cargo invocation; CI sets CARGO_FLAGS=--locked.
CARGO_FLAGS ?=
# Test threads per test binary. End-to-end tests that need pcscd queue on a machine-wide lock
# (tests/common) and start their timeouts only once they hold it, so more threads never make them
# time out; two keep the unit tests quick on a 2-core machine.
TEST_THREADS ?= 2
# Seconds each fuzz target runs in `make fuzz`.
FUZZ_SECONDS ?= 60

.PHONY: help build build-debug deps test test-cleanup lint fmt-check clippy fuzz demo bench clean \
        install uninstall deb

## build: release binaries (tesserad, tessera, tessera-sim) in target/release
build: deps
	$(CARGO) build $(CARGO_FLAGS) --workspace --release

## build-debug: debug binaries and the PAM module, which the end-to-end tests run
# --lib too: pam_tessera.so is a library (cdylib), which --bins alone does not build.
build-debug: deps
	$(CARGO) build $(CARGO_FLAGS) --workspace --bins --lib

## deps: install missing system packages (no-op when all are present)
deps:
	scripts/install-deps.sh

## test: every test of the workspace (unit, integration, end-to-end, doc), then lint
# The e2e tests run the binaries in target/debug, which `cargo test` does not rebuild for them
# (they belong to other packages), hence build-debug first. Tests and lint both run and both must
# pass, so one failing does not hide the other's results.
#
# The machine is left as the suite found it: scripts/test-cleanup.sh puts back what a killed test
# could not (a stopped pcscd, accounts, test directories) and runs after the suite however it ends,
# Ctrl-C included: the suite runs in its own session, and the trap ends it with SIGTERM (background
# jobs of a non-interactive shell ignore SIGINT), waits for it and cleans up. scripts/check-clean.sh
# then compares the machine with a snapshot taken before and fails the run if anything was left.
test: deps
	$(MAKE) --no-print-directory build-debug
	status=0; suite=; snapshot=$$(mktemp /tmp/tessera-test-snapshot.XXXXXX); \
	interrupted() { \
	    if [ -n "$$suite" ]; then kill -TERM -- -"$$suite" 2>/dev/null || true; wait "$$suite" || true; fi; \
	    scripts/test-cleanup.sh || true; rm -f "$$snapshot"; exit "$$1"; \
	}; \
	trap 'interrupted 130' INT; trap 'interrupted 143' TERM; \
	scripts/check-clean.sh snapshot "$$snapshot"; \
	RUST_BACKTRACE=1 setsid $(CARGO) test $(CARGO_FLAGS) --workspace --no-fail-fast \
	    -- --test-threads=$(TEST_THREADS) & suite=$$!; \
	wait "$$suite" || status=$$?; \
	trap - INT TERM; \
	scripts/test-cleanup.sh || status=1; \
	scripts/check-clean.sh check "$$snapshot" || status=1; \
	rm -f "$$snapshot"; \
	$(MAKE) --no-print-directory lint || status=1; \
	exit $$status

## test-cleanup: put back what an interrupted test run left (scripts/test-cleanup.sh; needs root)
test-cleanup:
	scripts/test-cleanup.sh

## lint: cargo fmt --check (workspace and fuzz/) and clippy -D warnings on all targets; both always run
lint: deps
	status=0; \
	$(MAKE) --no-print-directory fmt-check || status=1; \
	$(MAKE) --no-print-directory clippy || status=1; \
	exit $$status

fmt-check:
	$(CARGO) fmt --all --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --check

clippy: deps
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings

## fuzz: every fuzz target in fuzz/ for FUZZ_SECONDS (default 60) each; fails on any crash
# cargo-fuzz (`cargo install --locked cargo-fuzz`) on the stable toolchain, hence `-s none` (no
# sanitizer; those need nightly). `cargo fuzz` has no --locked, so `cargo fetch` checks the lock file.
# Each target starts from its committed seeds (fuzz/seeds/<target>, read-only) and grows its own
# working corpus in fuzz/corpus/<target> (not committed). A crash leaves its input in
# fuzz/artifacts/<target>/ and the log's tail on screen; every target runs even after one crashed.
fuzz: deps
	$(CARGO) fetch $(CARGO_FLAGS) --manifest-path fuzz/Cargo.toml
	cd fuzz && $(CARGO) fuzz build -s none
	status=0; \
	for target in $$(cd fuzz && $(CARGO) fuzz list); do \
	    mkdir -p fuzz/corpus/$$target fuzz/seeds/$$target; \
	    log=fuzz/target/$$target.log; \
	    if (cd fuzz && $(CARGO) fuzz run -s none $$target corpus/$$target seeds/$$target -- \
	            -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1) >$$log 2>&1; then \
	        result=ok; \
	    else \
	        result=FAILED; status=1; tail -n 40 $$log; \
	    fi; \
	    runs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $$log); \
	    echo "fuzz: $$target: $$result, $${runs:-?} executions in $(FUZZ_SECONDS) s (log: $$log)"; \
	done; \
	exit $$status

## demo: the product story on the simulated card (scripts/demo.sh); leaves nothing running
demo: build
	TESSERA_BIN_DIR="$${CARGO_TARGET_DIR:-target}/release" scripts/demo.sh

## bench: the benchmarks (the end-to-end ones run the release binaries, so build them first)
# `--bench '*'` runs the bench targets only: plain `cargo bench` also runs every library, binary and
# test target in bench mode, which lists each of their unit tests as "ignored".
bench: build
	$(CARGO) bench $(CARGO_FLAGS) --workspace --bench '*'

# --- Installing (README "Installing") ---------------------------------------------------------------
# PREFIX (default /usr) places the programs and the documentation; DESTDIR stages the whole tree
# (packaging, tests). The files the system's own daemons read go where those daemons look, whatever
# PREFIX says: PAM, dbus-daemon, polkit and udev read no /usr/local tree. Each directory variable
# below may be overridden on its own. With another PREFIX the unit's ExecStart follows SBINDIR.
PREFIX ?= /usr
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
DOCDIR ?= $(PREFIX)/share/doc/tessera
MULTIARCH ?= $(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
PAMDIR ?= /usr/lib/$(MULTIARCH)/security
UNITDIR ?= /usr/lib/systemd/system
DBUSDIR ?= /usr/share/dbus-1
POLKITDIR ?= /usr/share/polkit-1/actions
UDEVDIR ?= /usr/lib/udev/rules.d
PAMCONFIGDIR ?= /usr/share/pam-configs
# Where `make install` takes the built programs from (`make build` puts them there).
BUILD_DIR ?= $(or $(CARGO_TARGET_DIR),target)/release

# What `make install` installs: source:destination:mode. tessera-sim is not installed: a simulated
# card has no place on a production machine. The configuration goes in as an example only; an
# administrator's /etc/tessera/tessera.toml is never written.
INSTALL_FILES = \
    $(BUILD_DIR)/tesserad:$(SBINDIR)/tesserad:0755 \
    $(BUILD_DIR)/tessera:$(BINDIR)/tessera:0755 \
    $(BUILD_DIR)/libpam_tessera.so:$(PAMDIR)/pam_tessera.so:0644 \
    systemd/tesserad.service:$(UNITDIR)/tesserad.service:0644 \
    dbus/org.tessera.Tessera1.conf:$(DBUSDIR)/system.d/org.tessera.Tessera1.conf:0644 \
    dbus/org.tessera.Tessera1.service:$(DBUSDIR)/system-services/org.tessera.Tessera1.service:0644 \
    polkit/org.tessera.Tessera1.policy:$(POLKITDIR)/org.tessera.Tessera1.policy:0644 \
    udev/70-tessera.rules:$(UDEVDIR)/70-tessera.rules:0644 \
    pam-configs/tessera:$(PAMCONFIGDIR)/tessera:0644 \
    pam-configs/tessera-session:$(PAMCONFIGDIR)/tessera-session:0644 \
    README.md:$(DOCDIR)/README.md:0644 \
    tessera.toml.example:$(DOCDIR)/examples/tessera.toml:0644 \
    examples/pam.d/gdm-tessera:$(DOCDIR)/examples/gdm-tessera:0644

## install: the built programs (`make build` first), PAM module, unit, bus and polkit policy, udev rules into DESTDIR/PREFIX
# Installs files only: it neither builds (so `sudo make install` runs no compiler as root) nor
# touches the running system. After a real install, as root: `groupadd --system tessera` (the udev
# rules give that group the FIDO keys), `udevadm control --reload`, and reload dbus-daemon
# (`systemctl reload dbus`); the deb's postinst does all three.
install:
	missing=(); for entry in $(INSTALL_FILES); do \
	    IFS=: read -r src dest mode <<<"$$entry"; [[ -f $$src ]] || missing+=("$$src"); \
	done; \
	if (($${#missing[@]})); then \
	    echo "install: missing $${missing[*]} (run \`make build\` first, or set BUILD_DIR)" >&2; exit 1; \
	fi
	for entry in $(INSTALL_FILES); do \
	    IFS=: read -r src dest mode <<<"$$entry"; \
	    install -d -m 0755 "$(DESTDIR)$${dest%/*}"; \
	    if [[ $$src == systemd/tesserad.service ]]; then \
	        sed -e 's#^ExecStart=/usr/sbin/tesserad#ExecStart=$(SBINDIR)/tesserad#' -e 's#^Documentation=file:/usr/share/doc/tessera/#Documentation=file:$(DOCDIR)/#' "$$src" >"$(DESTDIR)$$dest.tmp"; \
	        chmod "$$mode" "$(DESTDIR)$$dest.tmp"; mv -f "$(DESTDIR)$$dest.tmp" "$(DESTDIR)$$dest"; \
	    else \
	        install -m "$$mode" "$$src" "$(DESTDIR)$$dest"; \
	    fi; \
	    echo "installed $(DESTDIR)$$dest"; \
	done

## uninstall: remove what `make install` installed (same DESTDIR/PREFIX); the state in /var/lib/tessera stays
uninstall:
	for entry in $(INSTALL_FILES); do \
	    IFS=: read -r src dest mode <<<"$$entry"; rm -f "$(DESTDIR)$$dest"; \
	done
	rmdir --ignore-fail-on-non-empty "$(DESTDIR)$(DOCDIR)/examples" "$(DESTDIR)$(DOCDIR)" 2>/dev/null || true

# Where `make deb` writes the package.
DEB_OUT ?= $(or $(CARGO_TARGET_DIR),target)/debian
# Empty: a release build of tesserad, tessera and pam_tessera.so first. A directory (the tests use
# target/debug): package the programs already built there instead, with no build at all, stripped
# and quickly compressed (debug builds are large).
DEB_BINARIES ?=
# More cargo-deb options, e.g. --separate-debug-symbols.
DEB_FLAGS ?=

## deb: a Debian package with cargo-deb ([package.metadata.deb] in daemon/Cargo.toml) in DEB_OUT
# cargo-deb takes the programs from <target dir>/release (it rewrites the "target/release/" prefix of
# its assets to the target dir in use), so DEB_BINARIES is staged as the release directory of a
# throw-away target dir.
deb:
	command -v cargo-deb >/dev/null 2>&1 || $(CARGO) install cargo-deb --locked
	mkdir -p "$(DEB_OUT)"
	if [[ -z "$(DEB_BINARIES)" ]]; then \
	    $(CARGO) build $(CARGO_FLAGS) --release -p tesserad -p pam-tessera; \
	    $(CARGO) deb $(CARGO_FLAGS) $(DEB_FLAGS) -p tesserad --no-build -o "$(DEB_OUT)"; \
	else \
	    stage=$$(mktemp -d); trap 'rm -rf "$$stage"' EXIT; mkdir "$$stage/release"; \
	    for f in tesserad tessera libpam_tessera.so; do cp "$(DEB_BINARIES)/$$f" "$$stage/release/"; done; \
	    CARGO_TARGET_DIR="$$stage" $(CARGO) deb $(CARGO_FLAGS) $(DEB_FLAGS) -p tesserad --no-build \
	        --strip --fast -o "$(DEB_OUT)"; \
	fi

## clean: remove target/
clean:
	$(CARGO) clean

## help: this list
help:
	@sed -n 's/^## //p' $(firstword $(MAKEFILE_LIST))
