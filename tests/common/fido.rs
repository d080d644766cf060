//! Simulated FIDO security keys for the end-to-end tests: `tessera-sim fido` plugged in as a USB key
//! (a Unix socket in the daemon's `[device] simulated_hid_dir`) or laid on an NFC reader (vpcd
//! reader 1), its touches and power cycles, and the daemon configuration that watches for them.
//!
//! What lives here is how to start, touch and pull a key and find the Device object the daemon
//! publishes for it; what Tessera must answer is asserted in `tests/e2e_fido*.rs`. The simulator's
//! command line is the one in the shared brief (`tessera-sim fido --state FILE [--hid-socket PATH]
//! [--vpcd ADDR] [--pin PIN | --no-pin] [--touch auto|delay:MS|manual] [--control SOCKET] …`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use super::stack::{Stack, CLI_TIMEOUT, WAIT};
use super::{bin, run, stderr, stdout, wait_until, Child, VPCD_ADDR_1, VPCD_READER_1};

/// The PIN of a fresh simulated key (`tessera-sim fido` default).
pub const FIDO_PIN: &str = "123456";
/// The PIN retries of a fresh simulated key.
pub const FIDO_RETRIES: u32 = 8;
/// The relying-party id the daemon uses unless configured otherwise.
pub const DEFAULT_RP_ID: &str = "pam://tessera";
/// The directory (under the test's directory) the daemon watches for simulated HID keys.
const HID_DIR: &str = "hid";

/// How the user answers a key's request for presence (`--touch`).
#[derive(Clone, Debug, Default)]
pub enum TouchMode {
    /// Touched at once.
    #[default]
    Auto,
    /// Touched after this long.
    Delay(Duration),
    /// Only when the test calls [`SimKey::touch`].
    Manual,
}

/// The flags of one simulated key; `KeyOptions::default()` is a CTAP 2.1 key with PIN 123456 that
/// is touched at once.
#[derive(Clone, Debug, Default)]
pub struct KeyOptions {
    pub touch: TouchMode,
    /// No PIN set on the key (`--no-pin`).
    pub no_pin: bool,
    /// A PIN other than [`FIDO_PIN`].
    pub pin: Option<String>,
    /// `--retries N`.
    pub retries: Option<u8>,
    /// An old key that speaks only U2F (`--u2f-only`).
    pub u2f_only: bool,
    /// `--algorithms`, e.g. "es256,eddsa".
    pub algorithms: Option<String>,
    /// `--fault`, e.g. "counter-regression" or "stall-on-sign=5000".
    pub fault: Option<String>,
}

impl KeyOptions {
    pub fn manual() -> KeyOptions {
        KeyOptions {
            touch: TouchMode::Manual,
            ..KeyOptions::default()
        }
    }

    pub fn no_pin() -> KeyOptions {
        KeyOptions {
            no_pin: true,
            ..KeyOptions::default()
        }
    }

    pub fn u2f_only() -> KeyOptions {
        KeyOptions {
            u2f_only: true,
            ..KeyOptions::default()
        }
    }

    pub fn fault(fault: &str) -> KeyOptions {
        KeyOptions {
            fault: Some(fault.to_owned()),
            ..KeyOptions::default()
        }
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec!["--touch".to_owned()];
        args.push(match &self.touch {
            TouchMode::Auto => "auto".to_owned(),
            TouchMode::Delay(d) => format!("delay:{}", d.as_millis()),
            TouchMode::Manual => "manual".to_owned(),
        });
        if self.no_pin {
            args.push("--no-pin".to_owned());
        } else if let Some(pin) = &self.pin {
            args.extend(["--pin".to_owned(), pin.clone()]);
        }
        if let Some(n) = self.retries {
            args.extend(["--retries".to_owned(), n.to_string()]);
        }
        if self.u2f_only {
            args.push("--u2f-only".to_owned());
        }
        if let Some(a) = &self.algorithms {
            args.extend(["--algorithms".to_owned(), a.clone()]);
        }
        if let Some(f) = &self.fault {
            args.extend(["--fault".to_owned(), f.clone()]);
        }
        args
    }
}

/// Where a simulated key is attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attach {
    /// A USB key: the socket `<hid dir>/<name>.sock`.
    Hid,
    /// An NFC key on vpcd reader 1 (the PIV card keeps reader 0).
    Nfc,
}

/// One running `tessera-sim fido`. Dropping it pulls the key (SIGTERM, then SIGKILL).
pub struct SimKey {
    /// The key's name in this test (the socket's stem for a HID key).
    pub name: String,
    pub attach: Attach,
    /// The persistent state (`--state`): the same key comes back from it.
    pub state: PathBuf,
    /// `--control`, for `tessera-sim touch` and `power-cycle`.
    pub control: PathBuf,
    /// The HID socket (HID keys only).
    pub socket: Option<PathBuf>,
    child: Child,
}

impl SimKey {
    /// One touch (`--touch manual`); returns once the key has taken it.
    pub fn touch(&self) {
        let out = run(
            Command::new(bin("tessera-sim"))
                .args(["touch", "--control"])
                .arg(&self.control),
            b"",
            CLI_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "tessera-sim touch {}: {}{}",
            self.name,
            stdout(&out),
            stderr(&out)
        );
    }

    /// Starts `tessera-sim touch` without waiting for the key to take the touch.
    pub fn touch_later(&self, dir: &Path) -> Child {
        Child::spawn(
            &format!("touch-{}", self.name),
            Command::new(bin("tessera-sim"))
                .args(["touch", "--control"])
                .arg(&self.control),
            dir,
        )
    }

    /// Clears PIN_AUTH_BLOCKED as unplugging and plugging the key in again would.
    pub fn power_cycle(&self) {
        let out = run(
            Command::new(bin("tessera-sim"))
                .args(["power-cycle", "--control"])
                .arg(&self.control),
            b"",
            CLI_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "tessera-sim power-cycle {}: {}",
            self.name,
            stderr(&out)
        );
    }

    /// Pulls the key: SIGTERM, which the simulator answers by closing its connections, removing
    /// its socket and exiting 0. Returns the state file, to plug the same key in again.
    pub fn pull(mut self) -> PathBuf {
        self.child.signal(Signal::SIGTERM);
        let status = self.child.wait_exit(WAIT);
        assert!(
            status.is_some_and(|s| s.success()),
            "simulated key {} exit: {status:?}\n{}",
            self.name,
            self.child.stderr_text()
        );
        if let Some(socket) = &self.socket {
            assert!(
                !socket.exists(),
                "{} still exists after the key exited",
                socket.display()
            );
        }
        self.state.clone()
    }

    /// Whether the simulator is still running (a hostile key's faults must not kill it).
    pub fn running(&mut self) -> bool {
        self.child.try_wait().is_none()
    }

    /// Everything the simulator logged so far.
    pub fn log(&self) -> String {
        self.child.stderr_text()
    }

    /// The key's persisted state, as JSON (0600, written by the simulator).
    pub fn state_json(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(&self.state).expect("read key state"))
            .expect("key state is JSON")
    }
}

/// A present device as `tessera status --json` lists it.
#[derive(Clone, Debug)]
pub struct Published {
    pub path: String,
    pub id: String,
    pub kind: String,
    pub transport: String,
    pub name: String,
    pub reader: String,
}

impl Stack {
    /// The directory the daemon watches for simulated HID keys (created on first use).
    pub fn hid_dir(&self) -> PathBuf {
        let dir = self.path(HID_DIR);
        std::fs::create_dir_all(&dir).expect("create the simulated HID directory");
        dir
    }

    /// A daemon configuration that watches [`Stack::hid_dir`] for simulated keys, followed by
    /// `rest` (TOML that must not open `[device]` again: see [`Stack::fido_config_device`]).
    pub fn fido_config(&self, rest: &str) -> String {
        self.fido_config_device("", rest)
    }

    /// [`Stack::fido_config`] with more keys of the `[device]` table (e.g. `touch_timeout = "1s"`).
    pub fn fido_config_device(&self, device_keys: &str, rest: &str) -> String {
        format!(
            "[device]\nsimulated_hid_dir = {:?}\n{device_keys}\n{rest}",
            self.hid_dir().display().to_string()
        )
    }

    /// Plugs in a USB key named `name` with a fresh (or, if it exists, the same) state file
    /// `<name>.json`, waiting for the simulator's `ready`.
    pub fn plug_key(&mut self, name: &str, options: &KeyOptions) -> SimKey {
        let state = self.path(&format!("{name}.json"));
        self.plug_key_with_state(name, &state, options)
    }

    /// Plugs in the key whose state is `state` (e.g. the one a pulled key left) as `name`.
    pub fn plug_key_with_state(
        &mut self,
        name: &str,
        state: &Path,
        options: &KeyOptions,
    ) -> SimKey {
        let socket = self.hid_dir().join(format!("{name}.sock"));
        let control = self.path(&format!("{name}.control"));
        let mut cmd = Command::new(bin("tessera-sim"));
        cmd.args(["fido", "--state"])
            .arg(state)
            .arg("--hid-socket")
            .arg(&socket)
            .arg("--control")
            .arg(&control)
            .args(options.args());
        self.spawn_key(name, Attach::Hid, state, control, Some(socket), &mut cmd)
    }

    /// Lays the key `name` (state `<name>.json`) on NFC reader 1.
    pub fn tap_nfc_key(&mut self, name: &str, options: &KeyOptions) -> SimKey {
        let state = self.path(&format!("{name}.json"));
        let control = self.path(&format!("{name}.control"));
        let mut cmd = Command::new(bin("tessera-sim"));
        cmd.args(["fido", "--state"])
            .arg(&state)
            .args(["--vpcd", VPCD_ADDR_1, "--control"])
            .arg(&control)
            .args(options.args());
        self.spawn_key(name, Attach::Nfc, &state, control, None, &mut cmd)
    }

    fn spawn_key(
        &mut self,
        name: &str,
        attach: Attach,
        state: &Path,
        control: PathBuf,
        socket: Option<PathBuf>,
        cmd: &mut Command,
    ) -> SimKey {
        let label = self.label(&format!("key-{name}"));
        let mut child = Child::spawn(&label, cmd, &self.path(""));
        child.wait_for_line("ready", WAIT);
        SimKey {
            name: name.to_owned(),
            attach,
            state: state.to_owned(),
            control,
            socket,
            child,
        }
    }

    /// The present devices, as `tessera status --json` lists them.
    pub fn devices(&self) -> Vec<Published> {
        let out = self.cli(&["--json", "status"], "");
        assert!(out.status.success(), "tessera status: {}", stderr(&out));
        stdout(&out)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("status JSON");
                let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                Published {
                    path: s("path"),
                    id: s("id"),
                    kind: s("kind"),
                    transport: s("transport"),
                    name: s("name"),
                    reader: s("reader"),
                }
            })
            .collect()
    }

    /// Waits until the daemon publishes a FIDO device for `key`, and returns it. A HID key is the
    /// one whose id, reader or name mentions its socket; an NFC key the "fido" device on reader 1.
    pub fn wait_key(&self, key: &SimKey) -> Published {
        let mut last = Vec::new();
        let mut found = None;
        let ok = wait_until(WAIT, || {
            last = self.devices();
            found = last.iter().find(|d| is_key(d, key)).cloned();
            found.is_some()
        });
        assert!(
            ok,
            "no FIDO device for key {} within {WAIT:?}; present: {last:?}\n--- tesserad ---\n{}",
            key.name,
            self.daemon_log()
        );
        found.expect("found")
    }

    /// Waits until no device of `key` is published any more.
    pub fn wait_key_gone(&self, key_name: &str, attach: &Attach) {
        let mut last = Vec::new();
        let ok = wait_until(WAIT, || {
            last = self.devices();
            !last.iter().any(|d| names_key(d, key_name, attach))
        });
        assert!(
            ok,
            "the device of key {key_name} still published after {WAIT:?}: {last:?}"
        );
    }
}

fn is_key(d: &Published, key: &SimKey) -> bool {
    names_key(d, &key.name, &key.attach)
}

fn names_key(d: &Published, name: &str, attach: &Attach) -> bool {
    if d.kind != "fido" {
        return false;
    }
    match attach {
        // Tests give their keys distinct names ("alpha", "bravo"), none a part of another.
        Attach::Hid => {
            d.transport != "nfc" && [&d.id, &d.reader, &d.name].iter().any(|s| s.contains(name))
        }
        Attach::Nfc => d.reader == VPCD_READER_1 || d.id.contains("Virtual_20PCD_2000_2001"),
    }
}
