#!/usr/bin/env bash
# The Tessera story on a simulated PIV card, step by step: enroll, authenticate, validate, pull the
# card, watch the token die; then the same with a simulated FIDO security key plugged in over USB
# HID (a socket in the daemon's simulated_hid_dir): enroll with a touch, authenticate with PIN and
# touch, validate, pull the key; then desktop login through pam_tessera.so with pamtester and a
# mock logind (scripts/demo/desktop-login.sh; as root only).
#
# Everything runs against private instances — a system-type dbus-daemon in a temp dir with the
# shipped policy (scripts/demo/system-bus.sh), the simulator on the first vpcd reader, tesserad with
# a temp state dir — and everything started here is stopped on exit, pcscd included when (and only
# when) this script started it; the PAM services the desktop act writes in /etc/pam.d are removed on
# exit too, Ctrl-C and failures included. Waits are bounded and say what they waited for.
# Environment: TESSERA_BIN_DIR (default target/release), TESSERA_DEMO_TIMEOUT (seconds per wait,
# default 20), TESSERA_DEMO_USER (default: the current user).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=$(cd "${TESSERA_BIN_DIR:-$repo/target/release}" 2>/dev/null && pwd) || {
    echo "demo: binary directory ${TESSERA_BIN_DIR:-$repo/target/release} missing; run \`make build\`" >&2
    exit 1
}
timeout_s=${TESSERA_DEMO_TIMEOUT:-20}
user=${TESSERA_DEMO_USER:-$(id -un)}
readonly pin=123456
readonly vpcd=127.0.0.1:35963
readonly bus_name=org.tessera.Tessera1
# Shared with the end-to-end tests (tests/common): one user of pcscd and the vpcd readers at a time.
readonly pcsc_lock=/tmp/tessera-e2e-pcsc.lock
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

work=$(mktemp -d /tmp/tessera-demo.XXXXXX)
pids=()       # processes this script started, in start order
names=()      # their names, for messages
created=()    # files outside $work this script wrote, removed on exit
bus_addr=""

# shellcheck source=scripts/demo/system-bus.sh
source "$repo/scripts/demo/system-bus.sh"
# shellcheck source=scripts/demo/desktop-login.sh
source "$repo/scripts/demo/desktop-login.sh"

# --- plumbing --------------------------------------------------------------------------------------

if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
info() { printf '    %s\n' "$*"; }
die() {
    printf '\ndemo: FAILED: %s\n' "$*" >&2
    exit 1
}

# start NAME CMD... — run CMD in the background, stdout to $work/NAME.out, stderr to $work/NAME.log.
# fd 9 (the pcsc lock) is closed for it, so a straggler cannot keep the lock after we are gone.
start() {
    local name=$1
    shift
    # Created here, before the child opens them, so that a wait that greps them never finds none.
    : >"$work/$name.out"
    : >"$work/$name.log"
    "$@" >"$work/$name.out" 2>"$work/$name.log" 9>&- </dev/null &
    pids+=("$!")
    names+=("$name")
}

pid_of() {
    local i
    for i in "${!names[@]}"; do
        [[ ${names[i]} == "$1" ]] && { echo "${pids[i]}"; return 0; }
    done
    return 1
}

# stop PID — SIGTERM, SIGKILL after 5 s, reap.
stop() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

forget() { # forget NAME — drop a process that has already been stopped from the cleanup list
    local i
    for i in "${!names[@]}"; do
        [[ ${names[i]} == "$1" ]] && unset 'pids[i]' 'names[i]'
    done
    pids=("${pids[@]}")
    names=("${names[@]}")
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM HUP
    ((${#created[@]} == 0)) || rm -f -- "${created[@]}"
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        stop "${pids[i]}"
    done
    if ((rc != 0)); then
        for f in "$work"/*.log "$work"/*.out; do
            [[ -s $f ]] || continue
            printf -- '--- %s (last 20 lines) ---\n' "${f##*/}" >&2
            tail -n 20 "$f" >&2
        done
        echo "demo: logs kept in $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# wait_for WHAT CMD... — poll CMD every 100 ms for up to $timeout_s seconds.
wait_for() {
    local what=$1 deadline=$((SECONDS + timeout_s))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || die "timed out after ${timeout_s}s waiting for $what"
        sleep 0.1
    done
}

alive() { # alive NAME — is the process we started under NAME still running?
    local pid
    pid=$(pid_of "$1") && kill -0 "$pid" 2>/dev/null
}

# ready_or_dead NAME CMD... — run CMD once; if it fails and NAME has exited, stop with its log.
ready_or_dead() {
    local name=$1
    shift
    "$@" && return 0
    alive "$name" || die "$name exited during start-up (log: $work/$name.log)"
    return 1
}

# until_ready NAME CMD... — wait for CMD to succeed while NAME keeps running.
until_ready() { wait_for "$1" ready_or_dead "$@"; }

pcscd_alive() { # a zombie pcscd (exited, not yet reaped) does not count
    ps -C pcscd -o stat= 2>/dev/null | grep -qv '^Z'
}

have_readers() { pcsc_scan -r 2>/dev/null | grep -q 'Virtual PCD 00 00'; }

bus_has_owner() {
    dbus-send --bus="$bus_addr" --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus.NameHasOwner "string:$1" 2>/dev/null | grep -q 'boolean true'
}

tessera() { "$bin_dir/tessera" --bus "$bus_addr" "$@"; }

card_listed() { tessera status 2>/dev/null | grep -q 'Virtual PCD 00 00'; }

show() { # show CMD... — print a command, then run it
    printf '    $ %s\n' "$*"
    "$@"
}

# --- the story -------------------------------------------------------------------------------------

for b in tesserad tessera tessera-sim; do
    [[ -x $bin_dir/$b ]] || die "$bin_dir/$b missing; run \`make build\`"
done
for t in dbus-daemon dbus-send pcscd pcsc_scan flock ps; do
    command -v "$t" >/dev/null || die "$t not found; run scripts/install-deps.sh"
done
if why_not=$(desktop_login_possible 2>&1); then
    desktop_login_requirements
fi
chmod 755 "$work"

step "Waiting for exclusive use of pcscd and the vpcd readers ($pcsc_lock)"
# Append mode creates the file without truncating; a lock file another user created may only be
# readable for us, which is enough for flock.
{ exec 9>>"$pcsc_lock"; } 2>/dev/null || exec 9<"$pcsc_lock"
flock -n 9 || {
    info "another demo or test run holds it; waiting up to 15 minutes. Open by:"
    # A leaked lock shows here, e.g. a pcscd started under `flock FILE cmd` (use `flock -o`).
    find /proc/[0-9]*/fd -lname "$pcsc_lock" 2>/dev/null | cut -d/ -f3 | sort -u | grep -vx "$$" |
        while read -r p; do
            c=$(cat "/proc/$p/comm" 2>/dev/null) && info "  $p $c"
        done || true
    flock -w 900 9 || die "$pcsc_lock still locked after 15 minutes"
}

step "PC/SC daemon"
if pcscd_alive; then
    info "pcscd is already running; using it (and leaving it running)"
else
    [[ $(id -u) -eq 0 ]] || die "pcscd is not running and starting it needs root"
    mkdir -p /run/pcscd
    start pcscd pcscd -f
    info "started pcscd (pid $(pid_of pcscd)); it is stopped when the demo ends"
fi
if pid_of pcscd >/dev/null; then
    until_ready pcscd have_readers
else
    wait_for "the vpcd readers" have_readers
fi
show pcsc_scan -r

step "Private D-Bus (system-type, with the policy Tessera installs)"
write_system_bus_config "$work/bus" "$work"
start dbus-daemon dbus-daemon --config-file="$work/bus.conf" --nofork --print-address
until_ready dbus-daemon grep -q '^unix:' "$work/dbus-daemon.out"
bus_addr=$(head -n 1 "$work/dbus-daemon.out")
info "bus address: $bus_addr"

step "Insert the simulated card: tessera-sim on $vpcd (reader \"Virtual PCD 00 00\")"
start tessera-sim "$bin_dir/tessera-sim" piv --vpcd "$vpcd" --state "$work/card.json"
until_ready tessera-sim grep -qw ready "$work/tessera-sim.out"
info "simulator connected"

step "Start tesserad (token lifetime 10 minutes; simulated USB keys from $work/hid)"
mkdir -p "$work/hid"
cat >"$work/tessera.toml" <<EOF
[token]
lifetime = "10m"
[device]
simulated_hid_dir = "$work/hid"
# Desktop login: a PAM \`reuse\` may succeed within 15 minutes of the device login, and a pulled
# device locks the login session (the defaults, spelled out).
[pam]
reuse = true
max_age = "15m"
[session]
on_removal = "lock"
EOF
show tessera config check "$work/tessera.toml"
start tesserad "$bin_dir/tesserad" --bus "$bus_addr" --state-dir "$work/state" \
    --config "$work/tessera.toml"
until_ready tesserad bus_has_owner "$bus_name"
info "$bus_name is on the bus"

step "Status"
# tesserad takes its name first and finds readers and cards after, so wait for the card to show.
until_ready tesserad card_listed
show tessera status

step "Enroll $user with the card in slot 9a (PIN on stdin)"
printf '    $ echo %s | tessera enroll --user %s --pin-stdin\n' "$pin" "$user"
enrollment=$(printf '%s\n' "$pin" | tessera enroll --user "$user" --pin-stdin) || die "enroll failed"
info "enrollment id: $enrollment"

step "Authenticate: challenge the card, get a session token"
printf '    $ echo %s | tessera authenticate --user %s --pin-stdin\n' "$pin" "$user"
token=$(printf '%s\n' "$pin" | tessera authenticate --user "$user" --pin-stdin) ||
    die "authenticate failed"
[[ -n $token ]] || die "authenticate printed no token"
info "token: ${token:0:32}… (${#token} characters)"

step "Validate the token"
printf '    $ tessera validate "$token"\n'
tessera validate "$token" || die "validate failed for a fresh token"

step "The policy that applies to $user, and where each rule comes from"
show tessera policy show "$user"

step "Refresh: a new token for the same card session; the old one is revoked"
printf '    $ tessera refresh "$token"\n'
old_token=$token
token=$(tessera refresh "$old_token") || die "refresh failed"
info "new token: ${token:0:32}…"
if out=$(tessera validate "$old_token" 2>&1); then
    die "the refreshed token still validates"
fi
info "old token: $out"

step "Live sessions of $user"
show tessera sessions "$user"

step "Watch for revocations"
start watch "$bin_dir/tessera" --bus "$bus_addr" watch
# `watch` prints `watching` once it has subscribed, so no signal can slip past it.
until_ready watch grep -q '^watching' "$work/watch.out"
sed 's/^/    /' "$work/watch.out"

step "Pull the card (stop the simulator)"
stop "$(pid_of tessera-sim)"
forget tessera-sim
info "card removed"

step "The daemon revokes the token"
wait_for "a TokenRevoked signal from tessera watch" grep -q TokenRevoked "$work/watch.out"
grep TokenRevoked "$work/watch.out" | sed 's/^/    /'

step "Validate again"
printf '    $ tessera validate "$token"\n'
if out=$(tessera validate "$token" 2>&1); then
    printf '%s\n' "$out"
    die "validate still succeeds after the card was pulled"
fi
printf '%s\n' "$out" | sed 's/^/    /'
grep -q TokenRevoked <<<"$out" || die "validate failed, but not with TokenRevoked"

# --- act 2: a FIDO security key ----------------------------------------------------------------

readonly key_socket=$work/hid/key.sock key_control=$work/key.control

key_listed() { tessera status 2>/dev/null | grep -q 'kind: fido'; }

# in_background NAME ARGS... — `tessera ARGS...` with the PIN on stdin, in the background (stdout
# to $work/NAME.out, stderr, where the CLI's cues go, to $work/NAME.log).
in_background() {
    local name=$1
    shift
    printf '%s\n' "$pin" | "$bin_dir/tessera" --bus "$bus_addr" "$@" \
        >"$work/$name.out" 2>"$work/$name.log" 9>&- &
    pids+=("$!")
    names+=("$name")
}

# touch_when_asked NAME — waits for NAME's "Touch your key" cue, touches the key, waits for NAME.
touch_when_asked() {
    local name=$1 pid rc=0
    until_ready "$name" grep -q 'Touch your key' "$work/$name.log"
    sed 's/^/    /' "$work/$name.log"
    printf '    $ tessera-sim touch --control %s\n' "$key_control"
    "$bin_dir/tessera-sim" touch --control "$key_control" || die "the touch did not reach the key"
    pid=$(pid_of "$name")
    wait "$pid" || rc=$?
    forget "$name"
    ((rc == 0)) || die "$name failed: $(cat "$work/$name.log")"
}

step "Plug in a simulated FIDO security key (USB HID; touched only when told)"
start tessera-key "$bin_dir/tessera-sim" fido --hid-socket "$key_socket" --state "$work/key.json" \
    --touch manual --control "$key_control"
until_ready tessera-key grep -qw ready "$work/tessera-key.out"
until_ready tesserad key_listed
show tessera status

step "Enroll $user with the key: the PIN, then a touch"
printf '    $ echo %s | tessera enroll --user %s --pin-stdin\n' "$pin" "$user"
in_background enroll-key enroll --user "$user" --pin-stdin
touch_when_asked enroll-key
info "enrollment id: $(cat "$work/enroll-key.out")"

step "Authenticate with the key: PIN and touch"
printf '    $ echo %s | tessera authenticate --user %s --pin-stdin\n' "$pin" "$user"
in_background auth-key authenticate --user "$user" --pin-stdin
touch_when_asked auth-key
token=$(cat "$work/auth-key.out")
[[ -n $token ]] || die "authenticate printed no token"
info "token: ${token:0:32}… (${#token} characters)"
printf '    $ tessera validate "$token"\n'
tessera validate "$token" || die "validate failed for the key's fresh token"

step "Pull the key (stop its simulator)"
revoked_before=$(grep -c TokenRevoked "$work/watch.out" || true)
stop "$(pid_of tessera-key)"
forget tessera-key
more_revoked() { (($(grep -c TokenRevoked "$work/watch.out" || true) > revoked_before)); }
wait_for "a TokenRevoked signal for the key's token" more_revoked
grep TokenRevoked "$work/watch.out" | tail -n 1 | sed 's/^/    /'
if out=$(tessera validate "$token" 2>&1); then
    die "validate still succeeds after the key was pulled"
fi
printf '%s\n' "$out" | sed 's/^/    /'
grep -q TokenRevoked <<<"$out" || die "validate failed, but not with TokenRevoked"

# --- act 3: desktop login through PAM (scripts/demo/desktop-login.sh) ---------------------------

if [[ -z $why_not ]]; then
    desktop_login_act
else
    step "Desktop login through PAM: skipped, $why_not"
fi

step "Done: each token died with its device. Stopping everything this demo started."
