//! The first login after boot finds no tesserad on the bus: pam_tessera.so starts it through the
//! bus's activation (StartServiceByName), as systemd does for the shipped activation file, and the
//! login goes on. The bus here is a system-type one whose only service directory is the test's
//! own, holding an activation file that runs this checkout's tesserad directly (dbus-daemon spawns
//! it itself, there being no systemd and no activation helper on this machine's test buses).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::pam::{pamtester, PamService};
use common::stack::{Stack, BUS_NAME, PIN};
use common::system_stack::{shipped_policy, stock_system_config, Activation};
use common::{ask_bus, bin, stdout, Bus};

const PAM_WAIT: Duration = Duration::from_secs(60);

/// The test's service directory, next to the bus socket.
fn service_dir(socket: &Path) -> std::path::PathBuf {
    socket.with_file_name("system-services")
}

/// The stock system-bus configuration with no standard service directories, and the test's own.
fn activating_bus_config(socket: &Path) -> String {
    let dir = service_dir(socket);
    std::fs::create_dir_all(&dir).unwrap();
    let include = socket.with_file_name("servicedir.conf");
    std::fs::write(
        &include,
        format!(
            "<busconfig>\n  <servicedir>{}</servicedir>\n</busconfig>\n",
            dir.display()
        ),
    )
    .unwrap();
    stock_system_config(socket, &[&shipped_policy(), &include], Activation::None)
}

/// The daemon the bus started, killed when the test ends however it ends.
struct Activated(Option<u32>);

impl Drop for Activated {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// The pid of the connection owning `name` (asked with dbus-send), if any.
fn owner_pid(address: &str, name: &str) -> Option<u32> {
    let out = ask_bus(address, "GetConnectionUnixProcessID", name);
    stdout(&out)
        .split_whitespace()
        .skip_while(|w| *w != "uint32")
        .nth(1)
        .and_then(|p| p.parse().ok())
}

#[test]
fn a_login_with_no_daemon_running_starts_it_by_bus_activation() {
    let mut stack = Stack::on_bus(|| Bus::start_with(activating_bus_config));
    let card = stack.path("card.json");
    let config = stack.path("activated.toml");
    std::fs::write(&config, "").unwrap();
    stack.start_sim(&card, &[]);
    stack.start_daemon("");
    stack.wait_device(true);
    stack.enroll(PIN, &["--user", "root"]);
    // stop_daemon waits until the name is released: no daemon owns it now.
    stack.stop_daemon();

    let socket = stack
        .bus_address()
        .strip_prefix("unix:path=")
        .and_then(|rest| rest.split(',').next())
        .expect("a unix:path bus address")
        .to_owned();
    std::fs::write(
        service_dir(Path::new(&socket)).join(format!("{BUS_NAME}.service")),
        format!(
            "[D-BUS Service]\nName={BUS_NAME}\nExec={} --bus {} --state-dir {} --config {}\nUser=root\n",
            bin("tesserad").display(),
            stack.bus_address(),
            stack.path("state").display(),
            config.display()
        ),
    )
    .unwrap();

    let service = PamService::auth("timeout=30");
    let login = pamtester(
        stack.bus_address(),
        &service,
        "root",
        &["authenticate"],
        &[],
        &format!("{PIN}\n"),
        PAM_WAIT,
    );
    let daemon = Activated(owner_pid(stack.bus_address(), BUS_NAME));
    login.assert_ok();
    assert!(
        daemon.0.is_some(),
        "no tesserad owns {BUS_NAME} after the login"
    );
}
