#!/usr/bin/env bash
# Proves that the end-to-end tests (or the demo, or the benchmarks) left the machine as they found
# it. `make test` runs
#
#   scripts/check-clean.sh snapshot FILE    before the suite: the pcscd command lines running now
#   scripts/check-clean.sh check FILE       after the suite and scripts/test-cleanup.sh
#
# and fails the run if, after it, the pcscd processes differ from the snapshot (a pcscd that ran
# before must run again with the same command line, none may be left that did not), an account the
# harness created still exists, a test directory or test PAM service of a finished test is still
# there, a PAM service of the demo (/etc/pam.d/tessera-demo*) or of the benchmarks
# (/etc/pam.d/tessera-bench-*) is left, or a record of the harness (/run/tessera-e2e, see
# tests/common/restore.rs; `package` is tests/e2e_package.rs's Debian package still installed) is
# left over. Run it around `make demo` or `make bench` the same way.
set -euo pipefail

readonly state=/run/tessera-e2e
readonly pcsc_lock=/tmp/tessera-e2e-pcsc.lock
readonly comment="Tessera e2e test account"

usage() { echo "usage: $0 snapshot FILE | check FILE" >&2; exit 2; }
(($# == 2)) || usage
mode=$1 file=$2

# Taken while no test holds pcscd: between tests the machine's pcscd is the only one. Holding it
# also means no demo or benchmark runs: they write their PAM services only while they hold it.
{ exec 9>>"$pcsc_lock"; } 2>/dev/null || exec 9<"$pcsc_lock"
flock -w 900 9 || { echo "check-clean: $pcsc_lock still locked after 900s" >&2; exit 1; }

pcscd_cmdlines() { # one line per live pcscd: its argv, NUL-separated arguments shown as spaces
    local p
    for p in /proc/[0-9]*; do
        [[ $(cat "$p/comm" 2>/dev/null) == pcscd ]] || continue
        [[ $(awk '{print $3}' "$p/stat" 2>/dev/null) =~ ^[ZX]?$ ]] && continue
        tr '\0' ' ' <"$p/cmdline" 2>/dev/null | sed 's/ $//'
        echo
    done | sed '/^$/d' | sort
}

case $mode in
    snapshot)
        pcscd_cmdlines >"$file"
        ;;
    check)
        [[ -f $file ]] || usage
        problems=()
        now=$(pcscd_cmdlines)
        if [[ $now != "$(<"$file")" ]]; then
            problems+=("pcscd before the tests: [$(paste -sd ';' "$file")], after: [$(paste -sd ';' <<<"$now")]")
        fi
        while read -r user; do
            problems+=("test account $user still exists")
        done < <(getent passwd | awk -F: -v c="$comment" '$5 == c { print $1 }')
        for dir in /tmp/tessera-e2e-[0-9]*-*; do
            [[ -d $dir ]] || continue
            pid=${dir#/tmp/tessera-e2e-}
            kill -0 "${pid%%-*}" 2>/dev/null || problems+=("test directory $dir still exists")
        done
        for service in /etc/pam.d/tessera-test-[0-9]*-*; do
            [[ -f $service ]] || continue
            pid=${service#/etc/pam.d/tessera-test-}
            kill -0 "${pid%%-*}" 2>/dev/null || problems+=("test PAM service $service still exists")
        done
        for service in /etc/pam.d/tessera-demo* /etc/pam.d/tessera-bench-*; do
            [[ -e $service ]] && problems+=("demo or benchmark PAM service $service still exists")
        done
        # Not /tmp/tessera-e2e-pcscd.log: the cleanup removes it, but a test run beside ours may
        # have written it again since.
        for f in "$state/machine-pcscd" "$state/harness-pcscd.pid" "$state/package"; do
            [[ -e $f ]] && problems+=("$f still exists")
        done
        if ((${#problems[@]})); then
            printf 'check-clean: the machine was left changed:\n' >&2
            printf '  %s\n' "${problems[@]}" >&2
            exit 1
        fi
        echo "check-clean: nothing left behind (and pcscd as at the snapshot)"
        ;;
    *) usage ;;
esac
