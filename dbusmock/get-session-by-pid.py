# The body of GetSessionByPID(u) -> o for python-dbusmock's logind template, added with
# org.freedesktop.DBus.Mock.AddMethod by the tests (tests/common/logind.rs) and the demo
# (scripts/demo/desktop-login.sh). Real logind finds a process's session from its cgroup; a machine
# without systemd has none, so the mock reads MOCK_LOGIND_SESSION=<id> from /proc/<pid>/environ
# and answers logind's NoSessionForPID without it. dbusmock runs the body with `args` and `dbus`
# in scope and returns `ret`.
sid = None
try:
    with open("/proc/%d/environ" % args[0], "rb") as f:
        for var in f.read().split(b"\0"):
            if var.startswith(b"MOCK_LOGIND_SESSION="):
                sid = var.split(b"=", 1)[1].decode()
except OSError:
    pass
if sid is None:
    raise dbus.exceptions.DBusException("PID %d does not belong to any known session" % args[0],
                                        name="org.freedesktop.login1.NoSessionForPID")
ret = dbus.ObjectPath("/org/freedesktop/login1/session/" + sid)
