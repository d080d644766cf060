# shellcheck shell=bash
# The demo's private bus, sourced by scripts/demo.sh: a system-type bus, as tesserad and
# pam_tessera.so meet on in a real installation, with the policy Tessera ships. The PAM module talks
# to the system bus only (DBUS_SYSTEM_BUS_ADDRESS), so the desktop-login act needs this type; the
# other acts run on it too, and so show the shipped policy at work.
#
# The configuration is the machine's stock /usr/share/dbus-1/system.conf (default deny for method
# calls and names) with the socket moved into the demo's directory and everything that would reach
# the machine's own bus set-up taken out: the messagebus account, forking, the pid file, syslog,
# service activation (an installed polkitd or logind must not start on it) and system.d. Included
# instead: dbus/org.tessera.Tessera1.conf from this checkout and dbusmock/mock-logind.conf for
# the mock logind (the tests include the same file). tests/common/system_stack.rs builds the tests'
# system-type bus the same way.

readonly stock_system_conf=/usr/share/dbus-1/system.conf

# write_system_bus_config SOCKET DIR — writes DIR/bus.conf, listening on SOCKET. Not root: the
# shipped policy lets only root own org.tessera.Tessera1, so DIR/demo-owner.conf lets this user own
# it too (the desktop-login act, which needs a daemon running as root, is skipped then).
write_system_bus_config() {
    local socket=$1 dir=$2 includes f
    includes=("$repo/dbus/org.tessera.Tessera1.conf"
        "$repo/dbusmock/mock-logind.conf")
    if [[ $(id -u) -ne 0 ]]; then
        includes+=("$dir/demo-owner.conf")
        cat >"$dir/demo-owner.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="$(id -un)">
    <allow own="$bus_name"/>
  </policy>
</busconfig>
EOF
    fi
    for f in "$stock_system_conf" "${includes[@]}"; do
        [[ -r $f ]] || die "$f missing (the stock one is in package dbus-daemon)"
    done
    # Line by line: each element dropped here stands on a line of its own in the stock file.
    SOCKET=$socket INCLUDES=$(printf '%s\n' "${includes[@]}") awk '
        BEGIN { n = split(ENVIRON["INCLUDES"], inc, "\n") }
        /<user>|<fork\/>|<pidfile>|<syslog\/>|<servicehelper>/ { next }
        /<includedir>|<include |<standard_system_servicedirs\/>/ { next }
        /<listen>/ { print "  <listen>unix:path=" ENVIRON["SOCKET"] "</listen>"; listen++; next }
        /<\/busconfig>/ { for (i = 1; i <= n; i++) print "  <include>" inc[i] "</include>" }
        { print }
        END { if (listen != 1) exit 1 }
    ' "$stock_system_conf" >"$dir/bus.conf" ||
        die "$stock_system_conf has no single <listen> line to replace; cannot build the demo bus"
    grep -q '<type>system</type>' "$dir/bus.conf" || die "$stock_system_conf is not a system bus"
}
