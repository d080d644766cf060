#!/usr/bin/env bash
# Creates the Python virtual environment the suite's python-fido2 checks run in, and prints the path
# of its python interpreter on stdout (nothing else goes to stdout).
#
# Idempotent and cheap when the venv is already complete: a stamp file names the requirements it was
# built from. Concurrent callers (parallel tests) serialise on a flock beside the venv, so only one
# of them runs pip. Location: $TESSERA_PYTHON_VENV, default target/python-venv in the repository.
#
# Packages come from PyPI: fido2 2.2 (python-fido2, the client the simulator is checked against) and
# pyscard 2 (its PC/SC backend). pyscard ships manylinux wheels for current CPythons on x86_64, which
# is why scripts/install-deps.sh installs only python3 and python3-venv; elsewhere pip builds it
# from source and needs swig and python3-dev as well (libpcsclite-dev is installed already).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TESSERA_PYTHON_VENV:-$root/target/python-venv}"
readonly requirements="fido2==2.2.* pyscard==2.*"
python="${PYTHON:-python3}"

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9

stamp="$venv/.tessera-requirements"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$requirements" ]]; then
    echo "$venv/bin/python"
    exit 0
fi

{
    rm -rf "$venv"
    "$python" -m venv "$venv"
    # shellcheck disable=SC2086 # the requirement list is split on purpose
    "$venv/bin/python" -m pip install --disable-pip-version-check --quiet $requirements
    echo "$requirements" >"$stamp"
} >&2
echo "$venv/bin/python"
