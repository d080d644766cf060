#!/usr/bin/env bash
# The end-to-end benchmark alone, through the real stack (daemon/benches/e2e/: main.rs and a module
# per part): builds the release binaries it runs (the simulator belongs to another package, so
# `cargo bench` alone would not rebuild it), then runs the bench; arguments go to it (`--auth-only`:
# part 1, `--live-tokens-only`: part 5, `--pam-only`: part 6, whole pamtester processes through
# pam_tessera.so — a verify-once reuse and a simulated-card login — beside Authenticate and a
# pam_permit floor, on a system-type bus with python-dbusmock's logind; its PAM services are
# /etc/pam.d/tessera-bench-*, removed when it ends). The Markdown report goes to stdout and to
# target/e2e-bench.md. `make bench` runs this bench and the others.
#
# Needs root, pcscd with the vpcd driver and dbus-daemon (`make deps`); the PAM part also pamtester
# and python3-dbusmock, and strace for its trace of one reuse (skipped without). Takes the end-to-end tests'
# pcsc lock, so it waits while tests or `make demo` use the readers. Environment: CARGO (default
# cargo), CARGO_FLAGS (e.g. --locked).
set -euo pipefail

cd "$(dirname "$0")/.."
cargo=${CARGO:-cargo}
# shellcheck disable=SC2086 # CARGO_FLAGS is a list of flags
"$cargo" build ${CARGO_FLAGS:-} --release --workspace
# shellcheck disable=SC2086
exec "$cargo" bench ${CARGO_FLAGS:-} -p tesserad --bench e2e -- --bench "$@"
