//! End-to-end tests of authorisation through polkit (issue 9 §4): the real `tesserad` on a private
//! bus run with the system bus's default-deny configuration and the shipped policy
//! (`dbus/org.tessera.Tessera1.conf`, as in `daemon/tests/system_bus.rs`), python-dbusmock's
//! `polkitd` template as `org.freedesktop.PolicyKit1`, and a non-root test user calling through the
//! `tessera` CLI (or dbus-python, where the test needs the caller's bus name); pcscd + vpcd with
//! `tessera-sim piv` where an enrollment is needed.
//!
//! What polkit answers is set with the mock's `SetAllowed`; what tesserad asked is read back from
//! the mock's call log (`GetCalls`), so the subject polkit saw is checked, not assumed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use common::stack::{parse_err, BUS_NAME, DEVICE_PATH, PIN};
use common::system_stack::{stock_system_config, Activation};
use common::{bin, run, stderr, stdout, test_user, wait_until, Child, PcscGuard, TestDir};

const ENROLL: &str = "org.tessera.Tessera1.enroll";
const MANAGE: &str = "org.tessera.Tessera1.manage";
const AUTHENTICATE_OTHER: &str = "org.tessera.Tessera1.authenticate-other-user";
const POLKIT: &str = "org.freedesktop.PolicyKit1";
/// The non-root caller of every test.
const BOB: &str = "tessera-bob";
const WAIT: Duration = Duration::from_secs(20);
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

const SHIPPED_BUS_POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/dbus/org.tessera.Tessera1.conf"
);
const SHIPPED_POLKIT_POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/polkit/org.tessera.Tessera1.policy"
);

/// dbus-python lives in the system's Python, not in whatever `python3` comes first in PATH.
const PYTHON: &str = "/usr/bin/python3";

/// Controls the polkitd mock: `<address> <method> <json args>`; GetCalls prints one JSON line per
/// logged call, `[method, arg...]`.
const MOCK_CONTROL: &str = r#"
import json, sys
import dbus
bus = dbus.bus.BusConnection(sys.argv[1])
mock = bus.get_object('org.freedesktop.PolicyKit1', '/org/freedesktop/PolicyKit1/Authority',
                      introspect=False)
method, args = sys.argv[2], json.loads(sys.argv[3])
if method == 'SetAllowed':
    args = [dbus.Array(args[0], signature='s')]
ret = mock.get_dbus_method(method, 'org.freedesktop.DBus.Mock')(*args)
if method == 'GetCalls':
    for _stamp, name, call_args in ret:
        print(json.dumps([str(name)] + list(call_args)))
"#;

/// Run as the test user: prints its own unique bus name, then calls Manager.ListSessions(argv[2])
/// and prints "ok" or the D-Bus error name.
const LIST_SESSIONS_AS_ME: &str = r#"
import sys
import dbus
bus = dbus.bus.BusConnection(sys.argv[1])
print(bus.get_unique_name(), flush=True)
manager = bus.get_object('org.tessera.Tessera1', '/org/tessera/Tessera1/Manager', introspect=False)
try:
    manager.ListSessions(sys.argv[2], dbus_interface='org.tessera.Tessera1.Manager')
    print('ok')
except dbus.exceptions.DBusException as e:
    print(e.get_dbus_name())
"#;

/// One test's world. Field order is drop order: the daemon first, then polkit, the card, the bus,
/// the files, and last the pcsc lock.
struct World {
    daemon: Option<Child>,
    polkit: Option<Child>,
    sim: Option<Child>,
    _bus: Child,
    address: String,
    dir: TestDir,
    _pcsc: Option<PcscGuard>,
}

impl World {
    /// A system-type bus, the polkitd mock when `polkit` (denying everything until told
    /// otherwise), a fresh simulated card in reader 0 when `card`, and tesserad, waited for.
    fn start(card: bool, polkit: bool) -> World {
        test_user(BOB);
        let pcsc = card.then(common::pcsc_lock);
        let dir = TestDir::new();
        let (bus, address) = system_bus(dir.path());
        let mut world = World {
            daemon: None,
            polkit: None,
            sim: None,
            _bus: bus,
            address,
            dir,
            _pcsc: pcsc,
        };
        if card {
            let mut sim = Child::spawn(
                "sim",
                Command::new(bin("tessera-sim"))
                    .args(["piv", "--vpcd", common::VPCD_ADDR_0, "--state"])
                    .arg(world.path("card.json")),
                world.dir.path(),
            );
            sim.wait_for_line("ready", WAIT);
            world.sim = Some(sim);
        }
        if polkit {
            world.start_polkit();
        }
        let config = world.path("tessera.toml");
        std::fs::write(&config, "").unwrap();
        let daemon = Child::spawn(
            "tesserad",
            Command::new(bin("tesserad"))
                .env("TESSERA_LOG", "debug")
                .args(["--bus", &world.address, "--state-dir"])
                .arg(world.path("state"))
                .arg("--config")
                .arg(&config),
            world.dir.path(),
        );
        world.daemon = Some(daemon);
        assert!(
            wait_until(WAIT, || world.has_owner(BUS_NAME)),
            "tesserad did not take its name:\n{}",
            world.daemon_log()
        );
        if card {
            assert!(
                wait_until(WAIT, || stdout(&world.cli_as("root", &["status"], ""))
                    .contains(DEVICE_PATH)),
                "the card never showed up:\n{}",
                world.daemon_log()
            );
        }
        world
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// python-dbusmock's polkitd template on this bus, once it owns org.freedesktop.PolicyKit1.
    fn start_polkit(&mut self) {
        assert!(self.polkit.is_none());
        let mock = Child::spawn(
            "polkitd-mock",
            Command::new(PYTHON)
                .args(["-m", "dbusmock", "--system", "-t", "polkitd"])
                .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address),
            self.dir.path(),
        );
        self.polkit = Some(mock);
        assert!(
            wait_until(WAIT, || self.has_owner(POLKIT)),
            "the polkitd mock did not take {POLKIT}"
        );
    }

    /// Stops the polkitd mock and waits until its name is gone.
    fn stop_polkit(&mut self) {
        self.polkit.take().expect("no polkit mock").kill();
        assert!(wait_until(WAIT, || !self.has_owner(POLKIT)));
    }

    /// Whether `name` has an owner on this bus (asked with dbus-send, not our code).
    fn has_owner(&self, name: &str) -> bool {
        common::has_owner(&self.address, name)
    }

    /// `tessera --bus <bus> <args>` as `user` (runuser: no groups beyond the user's own).
    fn cli_as(&self, user: &str, args: &[&str], stdin: &str) -> Output {
        run(
            Command::new("runuser")
                .args(["-u", user, "--"])
                .arg(bin("tessera"))
                .args(["--bus", &self.address])
                .args(args),
            stdin.as_bytes(),
            CLI_TIMEOUT,
        )
    }

    /// The CLI as `user`, which must succeed; its stdout.
    fn ok_as(&self, user: &str, args: &[&str], stdin: &str) -> String {
        let out = self.cli_as(user, args, stdin);
        assert!(
            out.status.success(),
            "{user}: tessera {args:?} failed: {}\n--- tesserad ---\n{}",
            stderr(&out),
            self.daemon_log()
        );
        stdout(&out)
    }

    /// The CLI as `user`, which must fail with AccessDenied.
    fn denied_as(&self, user: &str, args: &[&str], stdin: &str) {
        let out = self.cli_as(user, args, stdin);
        let (name, message) = parse_err(&out);
        assert_eq!(name, "AccessDenied", "{user}: tessera {args:?}: {message}");
    }

    /// Calls a method of the mock's control interface (org.freedesktop.DBus.Mock); its stdout.
    fn mock(&self, method: &str, args: Value) -> String {
        let out = run(
            Command::new(PYTHON)
                .args(["-c", MOCK_CONTROL, &self.address, method])
                .arg(args.to_string()),
            b"",
            CLI_TIMEOUT,
        );
        assert!(out.status.success(), "mock {method}: {}", stderr(&out));
        stdout(&out)
    }

    /// polkit says yes to exactly `actions` from now on.
    fn allow(&self, actions: &[&str]) {
        self.mock("SetAllowed", serde_json::json!([actions]));
    }

    /// Every CheckAuthorization the mock received since the last [`World::forget_calls`]:
    /// (subject kind, subject details, action id, details, flags, cancellation id).
    fn checks(&self) -> Vec<Check> {
        self.mock("GetCalls", serde_json::json!([]))
            .lines()
            .map(|l| serde_json::from_str::<Vec<Value>>(l).unwrap())
            .filter(|call| call[0] == "CheckAuthorization")
            .map(|call| Check {
                subject_kind: call[1][0].as_str().unwrap().to_owned(),
                subject: call[1][1].clone(),
                action: call[2].as_str().unwrap().to_owned(),
                details: call[3].clone(),
                flags: call[4].as_u64().unwrap(),
                cancellation_id: call[5].as_str().unwrap().to_owned(),
            })
            .collect()
    }

    /// The actions asked about since the last [`World::forget_calls`], in order.
    fn asked(&self) -> Vec<String> {
        self.checks().into_iter().map(|c| c.action).collect()
    }

    fn forget_calls(&self) {
        self.mock("ClearCalls", serde_json::json!([]));
    }

    fn daemon_log(&self) -> String {
        self.daemon
            .as_ref()
            .map(Child::stderr_text)
            .unwrap_or_default()
    }

    /// Root enrolls the card and authenticates: root's token.
    fn root_token(&self) -> String {
        self.ok_as("root", &["enroll", "--pin-stdin"], &format!("{PIN}\n"));
        let token = self.ok_as(
            "root",
            &["authenticate", "--pin-stdin"],
            &format!("{PIN}\n"),
        );
        token.trim().to_owned()
    }

    /// `tessera validate` of `token` as root: Ok, or the error name.
    fn validate(&self, token: &str) -> Result<(), String> {
        let out = self.cli_as("root", &["validate", "-"], &format!("{token}\n"));
        if out.status.success() {
            Ok(())
        } else {
            Err(parse_err(&out).0)
        }
    }
}

/// One CheckAuthorization call as the mock logged it.
#[derive(Debug)]
struct Check {
    subject_kind: String,
    subject: Value,
    action: String,
    details: Value,
    flags: u64,
    cancellation_id: String,
}

/// A private bus run with the system bus's configuration, our shipped policy, and a rule letting
/// root own polkit's name (polkit's own file grants it to user polkitd) and anyone call it.
fn system_bus(dir: &Path) -> (Child, String) {
    let socket = dir.join("system_bus");
    let polkit_conf = dir.join("polkit-mock.conf");
    std::fs::write(
        &polkit_conf,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="{POLKIT}"/>
  </policy>
  <policy context="default">
    <allow send_destination="{POLKIT}"/>
  </policy>
</busconfig>
"#
        ),
    )
    .unwrap();
    // No activation either: the machine's polkitd must not be started on this bus.
    let config = stock_system_config(
        &socket,
        &[Path::new(SHIPPED_BUS_POLICY), &polkit_conf],
        Activation::None,
    );
    let conf = dir.join("system.conf");
    std::fs::write(&conf, config).unwrap();
    let mut bus = Child::spawn(
        "dbus-daemon",
        Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address"]),
        dir,
    );
    let address = bus
        .wait_for_line("unix:", Duration::from_secs(10))
        .trim()
        .to_owned();
    (bus, address)
}

/// The JSON objects `tessera --json` printed, one per line.
fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn enrolling_ones_own_account_needs_the_enroll_action() {
    let world = World::start(true, true);
    let pin = format!("{PIN}\n");

    // polkit says no: refused before the card is touched, though the uid rules would allow it.
    world.denied_as(BOB, &["enroll", "--pin-stdin"], &pin);
    assert_eq!(world.asked(), [ENROLL]);
    assert!(json_lines(&world.ok_as(BOB, &["enrollments", "--json"], "")).is_empty());

    // Authorised for enroll (and nothing else): bob's own enrollment is made.
    world.allow(&[ENROLL]);
    world.forget_calls();
    world.ok_as(BOB, &["enroll", "--pin-stdin"], &pin);
    assert_eq!(world.asked(), [ENROLL]);
    let mine = json_lines(&world.ok_as(BOB, &["enrollments", "--json"], ""));
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["user"], BOB);

    // The enroll action is no licence for another account: that is manage's, which polkit refuses.
    world.forget_calls();
    world.denied_as(BOB, &["enroll", "--user", "root", "--pin-stdin"], &pin);
    assert_eq!(world.asked(), [MANAGE]);
    assert!(json_lines(&world.ok_as("root", &["enrollments", "--json"], "")).is_empty());
}

#[test]
fn other_accounts_sessions_and_enrollments_need_manage() {
    let world = World::start(true, true);
    let token = world.root_token();
    let root_sessions = ["sessions", "--json", "root"];

    // polkit refuses manage: nothing of root's is shown or touched.
    for args in [
        &root_sessions[..],
        &["enrollments", "--json", "root"],
        &["policy", "show", "root"],
        &["revoke", "--all", "--user", "root"],
    ] {
        world.denied_as(BOB, args, "");
    }
    assert_eq!(world.asked(), [MANAGE; 4]);
    assert_eq!(world.validate(&token), Ok(()));
    let enrollment = json_lines(&world.ok_as("root", &["enrollments", "--json"], ""))[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    world.forget_calls();
    world.denied_as(BOB, &["unenroll", &enrollment], "");
    assert_eq!(world.asked(), [MANAGE]);

    // Bob's own account needs nothing from polkit.
    world.forget_calls();
    assert!(json_lines(&world.ok_as(BOB, &["sessions", "--json"], "")).is_empty());
    assert!(json_lines(&world.ok_as(BOB, &["sessions", "--json", BOB], "")).is_empty());
    world.ok_as(BOB, &["policy", "show"], "");
    world.ok_as(BOB, &["enrollments", BOB], "");
    assert!(world.asked().is_empty(), "{:?}", world.asked());

    // Authorised for manage: bob sees root's session, ends it, and removes root's enrollment.
    world.allow(&[MANAGE]);
    let sessions = json_lines(&world.ok_as(BOB, &root_sessions, ""));
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["user"], "root");
    let listed = json_lines(&world.ok_as(BOB, &["enrollments", "--json", "root"], ""));
    assert_eq!(listed[0]["id"], enrollment.as_str());
    assert!(world
        .ok_as(BOB, &["policy", "show", "root"], "")
        .contains("lifetime"));
    world.ok_as(BOB, &["revoke", "--all", "--user", "root"], "");
    assert_eq!(world.validate(&token), Err("TokenRevoked".to_owned()));
    world.ok_as(BOB, &["unenroll", &enrollment], "");
    assert!(json_lines(&world.ok_as("root", &["enrollments", "--json"], "")).is_empty());
}

#[test]
fn authenticating_as_another_user_needs_authenticate_other_user() {
    let world = World::start(true, true);
    world.ok_as(
        "root",
        &["enroll", "--pin-stdin"],
        &format!(
            "{PIN}
"
        ),
    );
    let as_root = ["authenticate", "--user", "root", "--pin-stdin"];
    let pin = format!(
        "{PIN}
"
    );

    // Refused, and manage is no substitute.
    world.denied_as(BOB, &as_root, &pin);
    world.allow(&[MANAGE]);
    world.denied_as(BOB, &as_root, &pin);
    assert_eq!(world.asked(), [AUTHENTICATE_OTHER; 2]);

    // Authorised: bob gets a token for root, from root's card.
    world.allow(&[AUTHENTICATE_OTHER]);
    let token = world.ok_as(BOB, &as_root, &pin).trim().to_owned();
    let out = world.cli_as(
        "root",
        &["validate", "--json", "-"],
        &format!(
            "{token}
"
        ),
    );
    assert!(out.status.success(), "{out:?}");
    let claims: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(claims["sub"], "root", "{claims}");

    // His own account needs no action (he has no enrollment, which the core says).
    world.forget_calls();
    let out = world.cli_as(BOB, &["authenticate", "--pin-stdin", "--no-wait"], &pin);
    assert_eq!(parse_err(&out).0, "NotEnrolled");
    assert!(world.asked().is_empty(), "{:?}", world.asked());
}

/// A caller whose polkit check waits (a person typing a password into their agent) holds up
/// nobody else, and gets the answer when it comes.
#[test]
fn a_caller_waiting_for_polkit_holds_up_nobody_else() {
    let world = World::start(false, true);
    world.allow(&[MANAGE]);
    world.mock("SimulateHangActions", serde_json::json!([[MANAGE]]));
    let mut waiting = Child::spawn(
        "bob-waiting",
        Command::new("runuser")
            .args(["-u", BOB, "--"])
            .arg(bin("tessera"))
            .args(["--bus", &world.address, "sessions", "--json", "root"]),
        world.dir.path(),
    );
    assert!(wait_until(WAIT, || world.asked() == [MANAGE]));
    // Meanwhile the daemon answers others at once.
    let started = std::time::Instant::now();
    world.ok_as("root", &["jwks"], "");
    world.ok_as(BOB, &["sessions"], "");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(waiting.try_wait().is_none(), "answered before polkit did");
    world.mock("ReleaseHangingCalls", serde_json::json!([]));
    let status = waiting
        .wait_exit(WAIT)
        .expect("still waiting after polkit answered");
    assert!(status.success(), "{}", waiting.stderr_text());
}

#[test]
fn rotating_the_key_and_reloading_need_manage() {
    let world = World::start(false, true);
    let kids = || -> Vec<String> {
        let jwks: Value = serde_json::from_str(&world.ok_as("root", &["jwks"], "")).unwrap();
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    let before = kids();

    world.denied_as(BOB, &["rotate-key"], "");
    world.denied_as(BOB, &["reload"], "");
    assert_eq!(world.asked(), [MANAGE, MANAGE]);
    assert_eq!(kids(), before);

    world.allow(&[MANAGE]);
    // The daemon refuses a rotation within the second its active key was made (at start-up).
    std::thread::sleep(Duration::from_millis(1100));
    world.ok_as(BOB, &["rotate-key"], "");
    world.ok_as(BOB, &["reload"], "");
    let after = kids();
    assert!(
        after.len() > before.len() && before.iter().all(|k| after.contains(k)),
        "no new signing key: {before:?} -> {after:?}"
    );

    // Root never asks polkit. (Not rotate-key again: two rotations within one second are refused.)
    world.forget_calls();
    world.ok_as("root", &["reload"], "");
    world.ok_as("root", &["sessions", BOB], "");
    assert!(world.asked().is_empty(), "{:?}", world.asked());
}

#[test]
fn without_polkit_the_uid_rules_decide() {
    let mut world = World::start(true, false);
    // No polkit: bob enrolls his own account, and nobody else's.
    world.ok_as(BOB, &["enroll", "--pin-stdin"], &format!("{PIN}\n"));
    assert_eq!(
        json_lines(&world.ok_as(BOB, &["enrollments", "--json"], "")).len(),
        1
    );
    world.ok_as(BOB, &["sessions"], "");
    for args in [
        &["sessions", "root"][..],
        &["revoke", "--all", "--user", "root"],
        &["enrollments", "root"],
        &["rotate-key"],
        &["reload"],
    ] {
        world.denied_as(BOB, args, "");
    }

    // polkit arrives (saying yes to everything), is asked at once, and leaves again: the uid rules
    // are back, nothing of its answers is kept.
    world.start_polkit();
    world.mock("AllowUnknown", serde_json::json!([true]));
    world.ok_as(BOB, &["sessions", "root"], "");
    assert_eq!(world.asked(), [MANAGE]);
    world.stop_polkit();
    world.denied_as(BOB, &["sessions", "root"], "");
    world.ok_as(BOB, &["sessions"], "");
}

#[test]
fn polkit_is_asked_about_the_callers_bus_name() {
    let world = World::start(false, true);
    world.allow(&[MANAGE]);
    let daemon_name = {
        let out = run(
            Command::new("dbus-send")
                .arg(format!("--bus={}", world.address))
                .args([
                    "--print-reply=literal",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.GetNameOwner",
                ])
                .arg(format!("string:{BUS_NAME}")),
            b"",
            CLI_TIMEOUT,
        );
        assert!(out.status.success(), "{out:?}");
        stdout(&out).trim().to_owned()
    };
    let out = run(
        Command::new("runuser").args([
            "-u",
            BOB,
            "--",
            PYTHON,
            "-c",
            LIST_SESSIONS_AS_ME,
            &world.address,
            "root",
        ]),
        b"",
        CLI_TIMEOUT,
    );
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    let (bob_name, answer) = (&lines[0], &lines[1]);
    assert_eq!(answer, "ok", "{}", world.daemon_log());
    assert!(bob_name.starts_with(':') && *bob_name != daemon_name);

    let checks = world.checks();
    assert_eq!(checks.len(), 1, "{checks:?}");
    let check = &checks[0];
    assert_eq!(check.subject_kind, "system-bus-name");
    assert_eq!(check.subject, serde_json::json!({ "name": bob_name }));
    assert_eq!(check.action, MANAGE);
    assert_eq!(check.details, serde_json::json!({}));
    assert_eq!(check.flags, 1, "AllowUserInteraction");
    assert_eq!(check.cancellation_id, "");
}

/// A polkit that fails (rather than answers) denies, even what the uid rules alone would allow.
#[test]
fn a_failing_polkit_denies() {
    let world = World::start(false, true);
    // Replaces the template's CheckAuthorization (a mock method of the same name wins).
    world.mock(
        "AddMethod",
        serde_json::json!([
            "org.freedesktop.PolicyKit1.Authority",
            "CheckAuthorization",
            "(sa{sv})sa{ss}us",
            "(bba{ss})",
            "raise dbus.exceptions.DBusException('backend broken', \
             name='org.freedesktop.PolicyKit1.Error.Failed')"
        ]),
    );
    world.allow(&[ENROLL, MANAGE]);
    // Enroll of bob's own account: without polkit the daemon would go on to the (absent) device
    // and answer NoDevice; a failing polkit stops it first.
    let out = run(
        Command::new("runuser")
            .args(["-u", BOB, "--", "gdbus", "call", "--address"])
            .args([
                world.address.as_str(),
                "--dest",
                BUS_NAME,
                "--object-path",
                "/org/tessera/Tessera1/Manager",
                "--method",
                "org.tessera.Tessera1.Manager.Enroll",
                "",
                "/org/tessera/Tessera1/devices/none",
                "{}",
            ]),
        b"",
        CLI_TIMEOUT,
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("org.tessera.Tessera1.Error.AccessDenied"),
        "{}",
        stderr(&out)
    );
    world.denied_as(BOB, &["sessions", "root"], "");
    world.denied_as(BOB, &["rotate-key"], "");
    // What needs no action still works.
    world.ok_as(BOB, &["sessions"], "");
    assert!(
        world.daemon_log().contains("backend broken"),
        "the cause is logged"
    );
}

/// The shipped action file is valid against polkit's DTD (package polkitd ships it; xmllint is
/// libxml2-utils) and says what issue 9 asks of each action.
#[test]
fn the_shipped_policy_is_valid() {
    let dtd = "/usr/share/polkit-1/policyconfig-1.dtd";
    let out = run(
        Command::new("xmllint").args([
            "--nonet",
            "--noout",
            "--dtdvalid",
            dtd,
            SHIPPED_POLKIT_POLICY,
        ]),
        b"",
        CLI_TIMEOUT,
    );
    assert!(out.status.success(), "xmllint: {}", stderr(&out));
    let xml = std::fs::read_to_string(SHIPPED_POLKIT_POLICY).unwrap();
    let defaults = |id: &str| -> [String; 3] {
        let action = xml
            .split(&format!("<action id=\"{id}\">"))
            .nth(1)
            .unwrap_or_else(|| panic!("no action {id}"));
        let action = action.split("</action>").next().unwrap();
        ["allow_any", "allow_inactive", "allow_active"].map(|key| {
            action
                .split(&format!("<{key}>"))
                .nth(1)
                .and_then(|v| v.split(&format!("</{key}>")).next())
                .unwrap_or_else(|| panic!("{id}: no {key}"))
                .to_owned()
        })
    };
    assert_eq!(defaults(ENROLL), ["no", "no", "auth_self_keep"]);
    assert_eq!(
        defaults(AUTHENTICATE_OTHER),
        ["auth_admin", "auth_admin", "auth_admin"]
    );
    assert_eq!(
        defaults(MANAGE),
        ["auth_admin_keep", "auth_admin_keep", "auth_admin_keep"]
    );
    assert_eq!(xml.matches("<action id=").count(), 3);
}
