//! A [`Stack`] on a private system-type bus: the machine's stock system-bus configuration
//! (`/usr/share/dbus-1/system.conf`, default deny for method calls) on a socket of the test's own,
//! with the shipped `dbus/org.tessera.Tessera1.conf` and, for the logind mock
//! ([`super::logind`]), a policy letting root own `org.freedesktop.login1` and everyone call it,
//! as logind's own policy file does. Nothing of the machine's `system.d` is read.

use std::path::{Path, PathBuf};

use super::stack::Stack;
use super::Bus;

/// A stack (pcsc lock, no card, no daemon yet) on a new system-type bus.
pub fn system_stack() -> Stack {
    Stack::on_bus(|| Bus::start_with(system_bus_config))
}

/// The system-type configuration for a bus listening on `socket`; the logind policy is written
/// next to the socket.
pub fn system_bus_config(socket: &Path) -> String {
    let login1 = socket.with_file_name("org.freedesktop.login1.conf");
    std::fs::write(&login1, LOGIN1_POLICY).expect("write the logind mock's bus policy");
    stock_system_config(socket, &[&shipped_policy(), &login1], Activation::Standard)
}

/// Whether a system-type test bus may start services the machine has installed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// The stock `<standard_system_servicedirs/>` stays.
    Standard,
    /// Nothing is activatable (polkitd installed on the machine must not be started on it).
    None,
}

/// Debian's stock system-bus configuration on `socket`, with the machine's account, daemonising,
/// pid file, syslog, activation helper and policy directories taken out, and `includes` added.
pub fn stock_system_config(socket: &Path, includes: &[&Path], activation: Activation) -> String {
    let stock = std::fs::read_to_string("/usr/share/dbus-1/system.conf")
        .expect("dbus-daemon's /usr/share/dbus-1/system.conf (package dbus-daemon or dbus)");
    let mut out = String::new();
    for line in stock.lines() {
        let t = line.trim();
        if t.starts_with("<user>")
            || t == "<fork/>"
            || t.starts_with("<pidfile>")
            || t == "<syslog/>"
            || t.starts_with("<servicehelper>")
            || t.starts_with("<includedir>")
            || t.starts_with("<include ")
            || (activation == Activation::None && t == "<standard_system_servicedirs/>")
        {
            continue;
        }
        if t.starts_with("<listen>") {
            out.push_str(&format!(
                "  <listen>unix:path={}</listen>\n",
                socket.display()
            ));
            continue;
        }
        if t == "</busconfig>" {
            for include in includes {
                out.push_str(&format!("  <include>{}</include>\n", include.display()));
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `dbus/org.tessera.Tessera1.conf` of this checkout, found from the package being tested (the
/// workspace root or `daemon/`).
pub fn shipped_policy() -> PathBuf {
    let mut dir = Some(Path::new(env!("CARGO_MANIFEST_DIR")));
    while let Some(d) = dir {
        let candidate = d.join("dbus/org.tessera.Tessera1.conf");
        if candidate.is_file() {
            return candidate;
        }
        dir = d.parent();
    }
    panic!(
        "dbus/org.tessera.Tessera1.conf not found above {}",
        env!("CARGO_MANIFEST_DIR")
    );
}

/// The bus policy for the logind mock (dbusmock/mock-logind.conf, which the demo's bus includes
/// too): root owns the name; anyone may call it.
const LOGIN1_POLICY: &str = include_str!("../../dbusmock/mock-logind.conf");
