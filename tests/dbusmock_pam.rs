//! `pam_tessera.so` (target/debug/libpam_tessera.so, `cargo build -p pam-tessera`) under
//! pamtester against the python-dbusmock template `dbusmock/tessera.py` instead of the daemon: the
//! module and the template agree on the contract, so desktop integrators can test a PAM stack
//! without a device. A scripted PIN logs in; a scripted failure is a PAM failure by the module's
//! table; reuse succeeds only for a token bound to the caller's own login session; the session
//! phase binds the token and ends it.
//!
//! Each test writes a PAM service `/etc/pam.d/tessera-test-<pid>-<n>`, the pattern that
//! `tests/common/pam.rs` uses and `scripts/test-cleanup.sh` removes once `<pid>` is gone; the
//! [`Service`] guard removes it when the test ends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod dbusmock_mock;

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dbusmock_mock::{Mock, PIN};
use zbus::zvariant::Value;

/// A test PAM service loading the module by its absolute path; removed on drop.
struct Service {
    name: String,
    path: PathBuf,
}

impl Service {
    /// `lines` with `{module}` replaced by the module's path.
    fn new(lines: &str) -> Service {
        // Counted from 100 so that names never meet those of tests/common/pam.rs in one process.
        static N: AtomicU32 = AtomicU32::new(100);
        let name = format!(
            "tessera-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let path = PathBuf::from("/etc/pam.d").join(&name);
        let module = common::bin("libpam_tessera.so");
        fs::write(
            &path,
            lines.replace("{module}", &module.display().to_string()),
        )
        .unwrap_or_else(|e| panic!("write {} (the tests run as root): {e}", path.display()));
        Service { name, path }
    }

    /// `auth required <module> <args>` and an account phase that lets everyone in.
    fn auth(args: &str) -> Service {
        Service::new(&format!(
            "auth required {{module}} {args}\naccount required pam_permit.so\n\
             session required {{module}} {args}\n"
        ))
    }

    /// As `sudo` would use it: reuse, else nothing (pam_deny stands for the password modules).
    fn reuse(args: &str) -> Service {
        Service::new(&format!(
            "auth sufficient {{module}} reuse {args}\nauth requisite pam_deny.so\n\
             account required pam_permit.so\n"
        ))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// pamtester as `user` with `ops`, the conversation's answers on stdin; `env` for pamtester's own
/// process (MOCK_LOGIND_SESSION: its login session for the template), `pam_env` into PAM's.
fn pamtester(
    mock: &Mock,
    service: &Service,
    ops: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
    pam_env: &[&str],
) -> Output {
    let mut cmd = Command::new("pamtester");
    cmd.env("DBUS_SYSTEM_BUS_ADDRESS", mock.address())
        .env_remove("MOCK_LOGIND_SESSION")
        .envs(env.iter().copied())
        .arg("-v");
    for e in pam_env {
        cmd.args(["-E", e]);
    }
    cmd.arg(&service.name).arg("root").args(ops);
    common::run(&mut cmd, stdin.as_bytes(), Duration::from_secs(40))
}

fn text(out: &Output) -> String {
    format!("{}{}", common::stdout(out), common::stderr(out))
}

fn assert_ok(out: &Output, mock: &Mock) {
    assert!(
        out.status.success(),
        "{}\n--- mock ---\n{}",
        text(out),
        mock.log()
    );
}

/// Fails with pam_strerror's words for the code.
fn assert_failed(out: &Output, message: &str) {
    assert!(
        !out.status.success() && text(out).contains(message),
        "expected {message:?}: {}",
        text(out)
    );
}

const AUTH_ERR: &str = "Authentication failure";
const USER_UNKNOWN: &str = "User not known to the underlying authentication module";
const MAXTRIES: &str = "Have exhausted maximum number of retries for service";

fn mock_with_card() -> Mock {
    let mock = Mock::start();
    mock.add_device("piv", "pcsc", "Mock Card");
    mock.enroll("root", "piv");
    mock
}

#[test]
fn a_scripted_pin_logs_in() {
    let mock = mock_with_card();
    let service = Service::auth("timeout=20");
    let out = pamtester(
        &mock,
        &service,
        &["authenticate"],
        &format!("{PIN}\n"),
        &[],
        &[],
    );
    assert_ok(&out, &mock);
    assert!(text(&out).contains("PIN for Mock Card"), "{}", text(&out));
    // The PIN reached the request at its prompt, and the token was checked for this service.
    assert_eq!(mock.calls("SubmitPin")[0][1], PIN);
    let audience = format!("pam:{}", service.name);
    let started = mock.calls("StartAuthentication");
    assert!(started[0][1].contains(&audience), "{started:?}");
    let checked = mock.calls("CheckToken");
    assert_eq!(checked.len(), 1, "{checked:?}");
    assert!(checked[0][1].contains(&audience), "{checked:?}");
    assert!(mock.active_requests().is_empty());
}

#[test]
fn scripted_failures_are_pam_failures() {
    let mock = mock_with_card();
    let service = Service::auth("timeout=20");
    // Failed(Timeout) → PAM_AUTH_ERR.
    mock.script("", &["working", "Timeout"]);
    let out = pamtester(&mock, &service, &["authenticate"], "", &[], &[]);
    assert_failed(&out, AUTH_ERR);
    // Failed(PinBlocked) after a wrong last try → PAM_MAXTRIES.
    mock.script("", &["pin-needed", "completed"]);
    let () = mock.mock("SetPin", &(PIN, 1u32));
    let out = pamtester(
        &mock,
        &service,
        &["authenticate"],
        "000000\n000000\n",
        &[],
        &[],
    );
    assert_failed(&out, MAXTRIES);
    // A user without enrollments: NotEnrolled → PAM_USER_UNKNOWN; nothing was started.
    let mock = Mock::start();
    mock.add_device("piv", "pcsc", "Mock Card");
    let out = pamtester(&mock, &service, &["authenticate"], "", &[], &[]);
    assert_failed(&out, USER_UNKNOWN);
    assert!(mock.active_requests().is_empty());
}

#[test]
fn reuse_needs_a_token_of_the_callers_own_login_session() {
    let mock = mock_with_card();
    let service = Service::reuse("max_age=5m");
    let issue = |session: &str, age: u64| -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let options = HashMap::from([
            ("login_session", Value::from(session)),
            ("auth_time", Value::from(now - age)),
        ]);
        mock.mock("IssueToken", &("root", options))
    };
    // Nothing bound to c7 yet.
    let c7 = [("MOCK_LOGIND_SESSION", "c7")];
    assert_failed(
        &pamtester(&mock, &service, &["authenticate"], "", &c7, &[]),
        AUTH_ERR,
    );
    // A token of session c8, and one of c7 authenticated 10 minutes ago: neither counts.
    issue("c8", 0);
    issue("c7", 600);
    assert_failed(
        &pamtester(&mock, &service, &["authenticate"], "", &c7, &[]),
        AUTH_ERR,
    );
    // A fresh one of c7 does, without a device being asked.
    issue("c7", 0);
    let out = pamtester(&mock, &service, &["authenticate"], "", &c7, &[]);
    assert_ok(&out, &mock);
    assert!(mock.calls("StartAuthentication").is_empty());
    let reused = mock.calls("ReuseSession");
    assert!(reused.iter().all(|c| c[0] == "root"), "{reused:?}");
    // Reuse off for the service (the daemon's AccessDenied): a failure, not a pass.
    let () = mock.mock(
        "FailNext",
        &("ReuseSession", "AccessDenied", "reuse is off for sudo"),
    );
    assert_failed(
        &pamtester(&mock, &service, &["authenticate"], "", &c7, &[]),
        AUTH_ERR,
    );
}

#[test]
fn login_binds_the_session_reuse_follows_and_removal_ends_it() {
    let mock = Mock::start();
    let card = mock.add_device("piv", "pcsc", "Mock Card");
    mock.enroll("root", "piv");
    let login = Service::auth("timeout=20");
    let sudo = Service::reuse("max_age=15m");
    let runtime = format!("XDG_RUNTIME_DIR={}", mock.dir().display());
    let pam_env = ["XDG_SESSION_ID=c7", runtime.as_str()];
    let c7 = [("MOCK_LOGIND_SESSION", "c7")];

    // Login: authenticate, then open_session binds the token to c7.
    let out = pamtester(
        &mock,
        &login,
        &["authenticate", "open_session"],
        &format!("{PIN}\n"),
        &c7,
        &pam_env,
    );
    assert_ok(&out, &mock);
    let bound = mock.calls("BindSession");
    assert_eq!(bound.len(), 1, "{bound:?}");
    assert!(bound[0][1].contains("c7"), "{bound:?}");

    // sudo in that session: reused without a device; from another session it is not.
    let started = mock.calls("StartAuthentication").len();
    assert_ok(
        &pamtester(&mock, &sudo, &["authenticate"], "", &c7, &[]),
        &mock,
    );
    assert_eq!(mock.calls("StartAuthentication").len(), started);
    let c8 = [("MOCK_LOGIND_SESSION", "c8")];
    assert_failed(
        &pamtester(&mock, &sudo, &["authenticate"], "", &c8, &[]),
        AUTH_ERR,
    );

    // The card is pulled: its tokens die, reuse fails.
    let () = mock.mock("RemoveDevice", &(card,));
    assert_failed(
        &pamtester(&mock, &sudo, &["authenticate"], "", &c7, &[]),
        AUTH_ERR,
    );
}

#[test]
fn close_session_ends_the_bound_token() {
    let mock = mock_with_card();
    let login = Service::auth("timeout=20");
    let runtime = format!("XDG_RUNTIME_DIR={}", mock.dir().display());
    let pam_env = ["XDG_SESSION_ID=c7", runtime.as_str()];
    let out = pamtester(
        &mock,
        &login,
        &["authenticate", "open_session", "close_session"],
        &format!("{PIN}\n"),
        &[],
        &pam_env,
    );
    assert_ok(&out, &mock);
    assert_eq!(mock.calls("BindSession").len(), 1, "{}", mock.log());
    assert_eq!(mock.calls("EndSession").len(), 1, "{}", mock.log());
    // Nothing is left for a reuse in that session.
    let sudo = Service::reuse("max_age=15m");
    let c7 = [("MOCK_LOGIND_SESSION", "c7")];
    assert_failed(
        &pamtester(&mock, &sudo, &["authenticate"], "", &c7, &[]),
        AUTH_ERR,
    );
}
