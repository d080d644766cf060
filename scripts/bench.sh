#!/usr/bin/env bash
# The end-to-end benchmark alone, through the real stack (daemon/benches/e2e/: main.rs and a module
# per part): builds the release binaries it runs (the simulator belongs to another package, so
# `cargo bench` alone would not rebuild it), then runs the bench; arguments go to it (`--auth-only`:
# part 1, `--live-tokens-only`: part 5). The Markdown report goes to stdout and to
# target/e2e-bench.md. `make bench` runs this bench and the others.
#
# Needs root, pcscd with the vpcd driver and dbus-daemon (`make deps`). Takes the end-to-end tests'
# pcsc lock, so it waits while tests or `make demo` use the readers. Environment: CARGO (default
# cargo), CARGO_FLAGS (e.g. --locked).
set -euo pipefail

cd "$(dirname "$0")/.."
cargo=${CARGO:-cargo}
# shellcheck disable=SC2086 # CARGO_FLAGS is a list of flags
"$cargo" build ${CARGO_FLAGS:-} --release --workspace
# shellcheck disable=SC2086
exec "$cargo" bench ${CARGO_FLAGS:-} -p tesserad --bench e2e -- --bench "$@"
