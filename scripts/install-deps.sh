#!/usr/bin/env bash
# Installs the system packages Tessera's build, tests and demo need (Debian/Ubuntu, apt).
#
# Idempotent and fast when everything is present: each package is probed by a file or command it
# provides, so the common case runs no package manager at all. As root it installs what is missing;
# otherwise it prints the exact command to run and exits 1.
set -euo pipefail

# package|probe — a probe starting with / is a file (glob) that must exist, anything else a command.
readonly REQUIREMENTS=(
    "pcscd|/usr/sbin/pcscd"                                       # PC/SC daemon the tests talk to
    "vsmartcard-vpcd|/usr/lib/pcsc/drivers/serial/libifdvpcd.so"  # virtual readers for tessera-sim
    "libpcsclite-dev|/usr/include/PCSC/winscard.h"                # links the pcsc crate
    "libudev-dev|/usr/include/libudev.h"                          # FIDO HID hot-plug
    "libpam0g-dev|/usr/include/security/pam_appl.h"               # PAM module
    "pkg-config|pkg-config"                                       # finds the C libraries above
    "gcc|cc"                                                      # C parts of crates (sqlite, aws-lc)
    "g++|c++"                                                     # libFuzzer, for `make fuzz`
    "libc6-dev|/usr/include/stdio.h"
    "dbus-daemon|dbus-daemon"                                     # private test bus
    "dbus-bin|dbus-send"                                          # bus checks in tests and the demo
    "systemd|busctl"                                              # tests inspect the bus API with it
    "libglib2.0-bin|gdbus"                                        # ... and with a second client
    "opensc|pkcs11-tool"                                          # the simulator against real tools
    "opensc-pkcs11|/usr/lib/*/pkcs11/opensc-pkcs11.so"
    "pcsc-tools|pcsc_scan"
    "yubico-piv-tool|yubico-piv-tool"
    "procps|ps"                                                   # is pcscd running? (demo)
    "passwd|useradd"                                              # test accounts
    "util-linux|flock"                                            # demo/test pcscd lock
    "python3|python3"                                             # python-fido2 checks of the FIDO simulator
    "python3-venv|/usr/lib/python3*/ensurepip/__init__.py"        # ... in a venv (scripts/python-venv.sh)
    "pamtester|pamtester"                                         # drives pam_tessera.so in the tests
    "python3-dbusmock|/usr/lib/python3/dist-packages/dbusmock/__init__.py" # mock logind and polkit
    "libxml2-utils|xmllint"                                       # checks the polkit policy file
    "dpkg-dev|dpkg-shlibdeps"                                     # cargo-deb (make deb, the package test)
    "polkitd|/usr/share/polkit-1/policyconfig-1.dtd"              # the DTD the policy file is checked against
)

# Root shells started without a login do not always have the sbin directories in PATH.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

missing=()
for req in "${REQUIREMENTS[@]}"; do
    pkg="${req%%|*}"
    probe="${req#*|}"
    if [[ "$probe" == /* ]]; then
        compgen -G "$probe" >/dev/null || missing+=("$pkg")
    else
        command -v "$probe" >/dev/null 2>&1 || missing+=("$pkg")
    fi
done

# Cargo tools the build and tests run (not Debian packages): cargo-deb builds the .deb
# (`make deb`, and the package test installs one). Pinned, so every machine builds the same package.
readonly CARGO_DEB_VERSION=3.8.0
cargo_tools() {
    if command -v cargo-deb >/dev/null 2>&1 \
        && [[ "$(cargo-deb --version 2>/dev/null)" == *"$CARGO_DEB_VERSION"* ]]; then
        return 0
    fi
    echo "install-deps: cargo install cargo-deb $CARGO_DEB_VERSION"
    cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION"
}

if [[ ${#missing[@]} -eq 0 ]]; then
    cargo_tools
    exit 0
fi

install_cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: missing ${missing[*]} (Debian package names), and apt-get is not available;" >&2
    echo "install-deps: install the equivalents with your package manager." >&2
    exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages: ${missing[*]}" >&2
    echo "install-deps: run:  sudo apt-get update && sudo $install_cmd" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -q -y --no-install-recommends "${missing[@]}"
cargo_tools
echo "install-deps: done"
