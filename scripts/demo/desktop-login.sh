# shellcheck shell=bash
# Act 3 of scripts/demo.sh, sourced by it (its plumbing: step, info, die, start, stop, forget,
# pid_of, until_ready, wait_for, card_listed, tessera, $work, $bin_dir, $bus_addr, $vpcd, $user,
# $pin): desktop login through pam_tessera.so. A mock logind (python-dbusmock's logind template)
# holds login session c1 of the user; pamtester logs in with the card (PIN on stdin) and
# open_session binds the token to c1; a sudo-like `reuse` then succeeds without the card; the card
# is pulled and the daemon has logind lock c1, after which reuse is refused; the card comes back
# and a fresh login works again.
#
# The PAM services are /etc/pam.d/tessera-demo (login) and /etc/pam.d/tessera-demo-sudo (reuse),
# loading the module from the demo's binary directory by absolute path. They are written only while
# the demo holds the pcsc lock and removed by demo.sh's exit trap (also on Ctrl-C or failure);
# scripts/test-cleanup.sh (part `pam`) removes them after a demo killed outright.

readonly pam_login=/etc/pam.d/tessera-demo pam_sudo=/etc/pam.d/tessera-demo-sudo
readonly pam_marker="Written by Tessera's scripts/demo.sh for its desktop-login act"
readonly pam_module=$bin_dir/libpam_tessera.so
readonly login1=org.freedesktop.login1
# The Debian python that has python-dbusmock (a `python3` earlier in PATH may not).
readonly mock_python=/usr/bin/python3
readonly runtime_dir=$work/run-user

# The mock's GetSessionByPID (real logind finds a process's session from its cgroup; this machine
# may have no systemd): it reads MOCK_LOGIND_SESSION=<id> from the process's environment, as the
# tests' mock does. pamtester runs with that variable set.
get_session_by_pid=$(<"$repo/dbusmock/get-session-by-pid.py")
readonly get_session_by_pid

# desktop_login_possible — can this run show the act? Says why not on stderr.
desktop_login_possible() {
    # The module trusts only a daemon running as root, and the services live in /etc/pam.d.
    [[ $(id -u) -eq 0 ]] && return 0
    echo "it needs root (/etc/pam.d, a daemon running as root)" >&2
    return 1
}

# desktop_login_requirements — dies unless everything the act runs is here (checked before the
# demo starts anything, so a missing tool fails it early).
desktop_login_requirements() {
    local t
    for t in pamtester busctl timeout stdbuf; do
        command -v "$t" >/dev/null || die "$t not found; run scripts/install-deps.sh"
    done
    "$mock_python" -c 'import dbusmock' 2>/dev/null ||
        die "python3-dbusmock not found for $mock_python; run scripts/install-deps.sh"
    [[ -f $pam_module ]] || die "$pam_module missing; run \`make build\`"
    for t in "$pam_login" "$pam_sudo"; do
        pam_service_ours "$t"
    done
}

# pam_service_ours FILE — dies if FILE exists without the demo's mark: someone else's service.
pam_service_ours() {
    [[ -e $1 ]] || return 0
    grep -qF "$pam_marker" "$1" ||
        die "$1 exists and was not written by this demo; move it away and run again"
}

mock() { # mock METHOD SIGNATURE ARGS... — the mock's org.freedesktop.DBus.Mock interface
    busctl --address="$bus_addr" call "$login1" /org/freedesktop/login1 \
        org.freedesktop.DBus.Mock "$@" >/dev/null
}

logind_up() { busctl --address="$bus_addr" status "$login1" >/dev/null 2>&1; }

# write_pam_service FILE — stdin, under a marking first line, to FILE. Registered for the exit trap
# before it is written. A file of that name without the mark is someone else's: the demo stops.
write_pam_service() {
    local file=$1
    if [[ -e $file ]]; then
        pam_service_ours "$file"
        info "replacing $file, left by an earlier demo that was killed"
    fi
    created+=("$file")
    { printf '# %s (pid %s); removed when it ends.\n' "$pam_marker" "$$"; cat; } >"$file"
}

# pam SESSION INPUT SERVICE OPS... — pamtester for $user in mock login session SESSION, INPUT on its
# stdin (the conversation's answers); prints the command and pamtester's output, returns its
# status. Bounded twice: the module gives up after its timeout=, timeout(1) after that.
pam() {
    local session=$1 input=$2 service=$3 rc=0
    shift 3
    printf '    $ %sMOCK_LOGIND_SESSION=%s pamtester -v %s %s %s\n' \
        "${input:+echo $input | }" "$session" "$service" "$user" "$*"
    printf '%s\n' "$input" |
        env DBUS_SYSTEM_BUS_ADDRESS="$bus_addr" MOCK_LOGIND_SESSION="$session" \
            timeout -k 5 $((timeout_s + 40)) stdbuf -o0 -e0 pamtester -v "$service" "$user" "$@" \
            >"$work/pamtester.out" 2>&1 9>&- || rc=$?
    # Unbuffered, its lines come in order; the PIN typed after a prompt is not echoed, so the next
    # line would follow the prompt on the same one.
    sed -e 's/\(: \)\(pamtester: \)/\1\n\2/' "$work/pamtester.out" | sed 's/^/    /'
    return "$rc"
}

reuse_refused() { # quietly: does a reuse in session c1 fail now?
    ! pam c1 "" tessera-demo-sudo authenticate >/dev/null
}

insert_card() { # the card of act 1 (its state file) back in the reader, and listed by the daemon
    start tessera-sim "$bin_dir/tessera-sim" piv --vpcd "$vpcd" --state "$work/card.json"
    until_ready tessera-sim grep -qw ready "$work/tessera-sim.out"
    until_ready tesserad card_listed
}

lock_logged() { grep -q 'LockSession "c1"' "$work/logind.out"; }

desktop_login_act() {
    local uid f call
    uid=$(id -u "$user")

    step "Desktop login: a mock logind on the bus, with login session c1 of $user on seat0"
    # PYTHONUNBUFFERED: its call log is read as it comes.
    start logind env DBUS_SYSTEM_BUS_ADDRESS="$bus_addr" PYTHONUNBUFFERED=1 \
        "$mock_python" -m dbusmock --system -t logind
    until_ready logind logind_up
    mock AddMethod sssss org.freedesktop.login1.Manager GetSessionByPID u o "$get_session_by_pid"
    mock AddSession ssusb c1 seat0 "$uid" "$user" true
    info "python-dbusmock's logind owns $login1 (its calls are logged in $work/logind.out)"
    info "it finds a process's session from MOCK_LOGIND_SESSION in its environment (real logind:"
    info "from its cgroup), so pamtester runs with it below"

    step "Two PAM services that load $pam_module"
    # pam_env stands in for pam_systemd, which puts these two in a real login's PAM environment.
    mkdir -m 0700 "$runtime_dir"
    printf 'XDG_SESSION_ID DEFAULT=c1\nXDG_RUNTIME_DIR DEFAULT=%s\n' "$runtime_dir" \
        >"$work/pam_env.conf"
    write_pam_service "$pam_login" <<EOF
auth     required  $pam_module kinds=piv timeout=30
account  required  pam_permit.so
session  required  pam_env.so readenv=0 user_readenv=0 conffile=$work/pam_env.conf
session  optional  pam_keyinit.so force revoke
session  required  $pam_module
EOF
    # sudo would have `auth sufficient ... reuse` followed by the card and the password; alone here,
    # so that a refusal shows as one.
    write_pam_service "$pam_sudo" <<EOF
auth     required  $pam_module reuse max_age=5m
account  required  pam_permit.so
EOF
    for f in "$pam_login" "$pam_sudo"; do
        info "$f:"
        sed -e '1d' -e 's/^/      /' "$f"
    done

    step "Insert the card again"
    insert_card
    info "card back in \"Virtual PCD 00 00\""

    step "Log in as $user with the card: authenticate (PIN from the conversation), open_session"
    pam c1 "$pin" tessera-demo authenticate open_session || die "the card login failed"

    step "open_session bound the token to login session c1 and left it for the user's programs"
    printf '    $ XDG_RUNTIME_DIR=%s tessera token | tessera validate\n' "$runtime_dir"
    XDG_RUNTIME_DIR=$runtime_dir tessera token | tessera validate | sed 's/^/    /' ||
        die "the session's token does not validate"
    XDG_RUNTIME_DIR=$runtime_dir tessera token | tessera validate --json |
        grep -q '"login_session": *"c1"' || die "the session's token is not bound to c1"

    step "sudo-like: verify once. The login session's token counts; no card, no PIN"
    pam c1 "" tessera-demo-sudo authenticate || die "reuse failed in the login session"
    ! grep -q 'PIN for' "$work/pamtester.out" || die "reuse asked for a PIN"
    info "from another login session (c2) it does not count:"
    if pam c2 "" tessera-demo-sudo authenticate; then
        die "reuse succeeded from another login session"
    fi

    step "Pull the card: the daemon has logind lock session c1"
    stop "$(pid_of tessera-sim)"
    forget tessera-sim
    wait_for "the mock logind to be asked LockSession \"c1\"" lock_logged
    call=$(grep -m 1 'LockSession "c1"' "$work/logind.out")
    # Its log line is "<epoch seconds> <call>".
    info "the mock logind was called: ${call#* }"

    step "sudo-like again: refused, the token died with the card"
    wait_for "reuse to be refused" reuse_refused
    if pam c1 "" tessera-demo-sudo authenticate; then
        die "reuse still succeeds after the card was pulled"
    fi

    step "Insert the card and log in afresh; then verify once works again"
    insert_card
    pam c1 "$pin" tessera-demo authenticate open_session || die "the fresh card login failed"
    pam c1 "" tessera-demo-sudo authenticate || die "reuse failed after the fresh login"
}
