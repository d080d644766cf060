#!/usr/bin/env bash
# Puts back what the end-to-end tests changed on this machine, for the cases their own guards could
# not (a test killed or interrupted runs no cleanup code). `make test` runs it when the suite ends,
# also after Ctrl-C; run it by hand (as root) after killing a test run yourself.
#
#   scripts/test-cleanup.sh [pcscd] [accounts] [files] [pam] [package] [legacy-accounts]
#                                        (default: the first five)
#
# pcscd:    stops a pcscd a killed test started (/run/tessera-e2e/harness-pcscd.pid) and starts the
#           machine's pcscd again, with its old command line, if a test stopped it and could not
#           (/run/tessera-e2e/machine-pcscd); removes the harness's pcscd log.
# accounts: removes the accounts the harness created (comment "Tessera e2e test account"), once no
#           test process holds /run/tessera-e2e/accounts.lock.
# files:    removes test directories /tmp/tessera-e2e-<pid>-* whose test process is gone.
# pam:      removes test PAM services /etc/pam.d/tessera-test-<pid>-* whose test process is gone,
#           and the demo's and the benchmarks' (/etc/pam.d/tessera-demo*, tessera-bench-*) once
#           nobody holds the pcsc lock: they write them only while they hold it, so a free lock
#           means their writer is gone (a demo or bench killed outright; both remove them on exit).
# package:  purges the Debian package `tessera` that tests/e2e_package.rs installed and could not
#           remove (/run/tessera-e2e/package), once no package test holds
#           /tmp/tessera-e2e-dpkg.lock.
# legacy-accounts (by hand only): removes tessera-alice and tessera-bob as earlier versions of the
#           harness left them, unmarked: system accounts with an empty comment, shell
#           /usr/sbin/nologin and no home directory. Accounts that differ in any of these are kept.
#
# The lock files (/tmp/tessera-e2e-*.lock, /run/tessera-e2e/accounts.lock) stay: removing a lock
# file others may be waiting on would let two holders in. The formats are those of
# tests/common/restore.rs.
set -euo pipefail
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

readonly state=/run/tessera-e2e
readonly pcsc_lock=/tmp/tessera-e2e-pcsc.lock
readonly pcscd_socket=/run/pcscd/pcscd.comm
readonly comment="Tessera e2e test account"
readonly lock_wait=900
readonly dpkg_lock=/tmp/tessera-e2e-dpkg.lock

parts=("$@")
((${#parts[@]})) || parts=(pcscd accounts files pam package)
status=0

say() { printf 'test-cleanup: %s\n' "$*"; }

is_pcscd() { # is_pcscd PID — a live (not zombie) process named pcscd
    [[ $(cat "/proc/$1/comm" 2>/dev/null) == pcscd ]] &&
        [[ ! $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) =~ ^[ZX]?$ ]]
}

any_pcscd() {
    local p
    for p in /proc/[0-9]*; do
        is_pcscd "${p#/proc/}" && return 0
    done
    return 1
}

stop_pid() { # stop_pid PID — SIGTERM, SIGKILL after 5 s
    local i
    kill -TERM "$1" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        is_pcscd "$1" || return 0
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
}

cleanup_pcscd() {
    # The same lock as the tests: no test is between stopping and restoring pcscd while we look.
    { exec 9>>"$pcsc_lock"; } 2>/dev/null || exec 9<"$pcsc_lock"
    flock -w "$lock_wait" 9 || { say "$pcsc_lock still locked after ${lock_wait}s"; return 1; }
    if [[ -f $state/harness-pcscd.pid ]]; then
        local pid
        pid=$(<"$state/harness-pcscd.pid")
        if [[ $pid =~ ^[0-9]+$ ]] && is_pcscd "$pid"; then
            say "stopping pcscd $pid, started by a test that was killed"
            stop_pid "$pid"
        fi
        rm -f "$state/harness-pcscd.pid"
    fi
    if [[ -f $state/machine-pcscd ]]; then
        local record
        mapfile -d '' -t record <"$state/machine-pcscd"
        if ((${#record[@]} < 2)); then
            say "unreadable $state/machine-pcscd; start pcscd yourself"
            status=1
        elif ! any_pcscd; then
            say "starting the machine's pcscd again: ${record[*]:1}"
            # exec -a keeps argv[0] as it was; setsid -f detaches it from this run; fd 9 (the lock)
            # is not inherited, or pcscd would hold the lock for its whole life.
            setsid -f bash -c 'exec -a "$0" "$@"' "${record[@]:1:1}" "${record[0]}" "${record[@]:2}" \
                </dev/null >/dev/null 2>&1 9>&-
            local i
            for ((i = 0; i < 200; i++)); do
                [[ -S $pcscd_socket ]] && any_pcscd && break
                sleep 0.1
            done
            any_pcscd || { say "pcscd did not start again"; status=1; }
        fi
        rm -f "$state/machine-pcscd"
    fi
    rm -f /tmp/tessera-e2e-pcscd.log
    exec 9>&-
}

cleanup_accounts() {
    mkdir -p -m 0700 "$state"
    exec 8>>"$state/accounts.lock"
    flock -w "$lock_wait" 8 || {
        say "test processes still hold $state/accounts.lock after ${lock_wait}s; accounts kept"
        return 1
    }
    local user
    while read -r user; do
        if userdel "$user"; then say "removed test account $user"; else status=1; fi
    done < <(getent passwd | awk -F: -v c="$comment" '$5 == c { print $1 }')
    exec 8>&-
}

cleanup_legacy_accounts() {
    mkdir -p -m 0700 "$state"
    exec 8>>"$state/accounts.lock"
    flock -w "$lock_wait" 8 || { say "test processes still hold $state/accounts.lock"; return 1; }
    local name uid gecos home shell
    for name in tessera-alice tessera-bob; do
        IFS=: read -r _ _ uid _ gecos home shell < <(getent passwd "$name") || continue
        if ((uid < 1000)) && [[ -z $gecos && $shell == /usr/sbin/nologin && ! -e $home ]]; then
            if userdel "$name"; then say "removed unmarked test account $name"; else status=1; fi
        else
            say "kept $name: not an account the old harness made (uid $uid, comment '$gecos', $shell, $home)"
        fi
    done
    exec 8>&-
}

cleanup_files() {
    local dir pid
    for dir in /tmp/tessera-e2e-[0-9]*-*; do
        [[ -d $dir ]] || continue
        pid=${dir#/tmp/tessera-e2e-}
        pid=${pid%%-*}
        # A live process of that pid may be a running test (or, rarely, a new process that reused
        # the pid): leave its directory.
        kill -0 "$pid" 2>/dev/null && continue
        rm -rf -- "$dir" && say "removed $dir"
    done
}

cleanup_pam() {
    local file pid
    for file in /etc/pam.d/tessera-test-[0-9]*-*; do
        [[ -f $file ]] || continue
        pid=${file#/etc/pam.d/tessera-test-}
        pid=${pid%%-*}
        kill -0 "$pid" 2>/dev/null && continue
        rm -f -- "$file" && say "removed $file"
    done
    compgen -G '/etc/pam.d/tessera-demo*' >/dev/null ||
        compgen -G '/etc/pam.d/tessera-bench-*' >/dev/null || return 0
    { exec 9>>"$pcsc_lock"; } 2>/dev/null || exec 9<"$pcsc_lock"
    flock -w "$lock_wait" 9 || { say "$pcsc_lock still locked after ${lock_wait}s"; return 1; }
    for file in /etc/pam.d/tessera-demo* /etc/pam.d/tessera-bench-*; do
        [[ -e $file ]] || continue
        rm -f -- "$file" && say "removed $file, left by a demo or benchmark that was killed"
    done
    exec 9>&-
}

cleanup_package() {
    [[ -f $state/package ]] || return 0
    # The tests' lock: no package test is between installing and purging while we look.
    { exec 7>>"$dpkg_lock"; } 2>/dev/null || exec 7<"$dpkg_lock"
    flock -w "$lock_wait" 7 || { say "$dpkg_lock still locked after ${lock_wait}s"; return 1; }
    if [[ -f $state/package ]]; then
        local known
        known=$(dpkg-query -W -f='${Status}' tessera 2>/dev/null || true)
        if [[ -n $known && $known != *not-installed ]]; then
            say "purging the package tessera, installed by a test that was killed"
            DEBIAN_FRONTEND=noninteractive dpkg -P tessera || status=1
        fi
        rm -f "$state/package"
    fi
    exec 7>&-
}

for part in "${parts[@]}"; do
    case $part in
        pcscd) cleanup_pcscd || status=1 ;;
        accounts) cleanup_accounts || status=1 ;;
        files) cleanup_files || status=1 ;;
        pam) cleanup_pam || status=1 ;;
        package) cleanup_package || status=1 ;;
        legacy-accounts) cleanup_legacy_accounts || status=1 ;;
        *) say "unknown part $part (pcscd, accounts, files, pam, package, legacy-accounts)"; exit 2 ;;
    esac
done
exit "$status"
