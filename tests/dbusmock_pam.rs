//! `pam_tessera.so` (target/debug/libpam_tessera.so, `cargo build -p pam-tessera`) under
//! pamtester against the python-dbusmock template `dbusmock/tessera.py` instead of the daemon: the
//! module and the template agree on the contract, so desktop integrators can test a PAM stack
//! without a device. A scripted PIN logs in; a scripted failure is a PAM failure by the module's
//! table; reuse succeeds only for a token bound to the caller's own login session; a greeter
//! login without a user name takes the user the key is enrolled for; the session phase binds the
//! token and ends it.
//!
//! Each test's PAM service is a `tests/common/pam.rs` [`PamService`]:
//! `/etc/pam.d/tessera-test-<pid>-<n>`, removed when the test ends (and by
//! `scripts/test-cleanup.sh` if it is killed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod dbusmock_mock;

use std::collections::HashMap;
use std::time::Duration;

use common::pam::{pamtester_cmd, PamCode, PamRun, PamService};
use dbusmock_mock::{Mock, PIN};
use zbus::zvariant::Value;

/// `auth required <module> <args>`, an account phase that lets everyone in, and the module's
/// session phase. pam_keyinit first gives the session a keyring of its own, as login stacks do:
/// the module puts the token there, and that keyring goes with pamtester (without it the key would
/// land in root's user-session keyring and outlive the test).
fn login_service(args: &str) -> PamService {
    PamService::new(&format!(
        "auth required {{module}} {args}\naccount required pam_permit.so\n\
         session required pam_keyinit.so force revoke\n\
         session required {{module}} {args}\n"
    ))
}

/// As `sudo` would use it: reuse, else nothing (pam_deny stands for the password modules).
fn reuse_service(args: &str) -> PamService {
    PamService::new(&format!(
        "auth sufficient {{module}} reuse {args}\nauth requisite pam_deny.so\n\
         account required pam_permit.so\n"
    ))
}

/// pamtester as root with `ops`, the conversation's answers on stdin; `env` for pamtester's own
/// process (MOCK_LOGIND_SESSION: its login session for the template), `pam_env` into PAM's.
fn pamtester(
    mock: &Mock,
    service: &PamService,
    ops: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
    pam_env: &[&str],
) -> PamRun {
    let extra: Vec<&str> = pam_env.iter().flat_map(|e| ["-E", e]).collect();
    let mut cmd = pamtester_cmd(mock.address(), service, "root", ops, &extra);
    cmd.env_remove("MOCK_LOGIND_SESSION")
        .envs(env.iter().copied());
    PamRun {
        output: common::run(&mut cmd, stdin.as_bytes(), Duration::from_secs(40)),
    }
}

fn assert_ok(run: &PamRun, mock: &Mock) {
    assert!(
        run.succeeded(),
        "{}\n--- mock ---\n{}",
        run.text(),
        mock.log()
    );
}

fn mock_with_card() -> Mock {
    let mock = Mock::start();
    mock.add_device("piv", "pcsc", "Mock Card");
    mock.enroll("root", "piv");
    mock
}

#[test]
fn a_scripted_pin_logs_in() {
    let mock = mock_with_card();
    let service = login_service("timeout=20");
    let out = pamtester(
        &mock,
        &service,
        &["authenticate"],
        &format!("{PIN}\n"),
        &[],
        &[],
    );
    assert_ok(&out, &mock);
    assert!(out.text().contains("PIN for Mock Card"), "{}", out.text());
    // The PIN reached the request at its prompt, and the token was checked for this service.
    assert_eq!(mock.calls("SubmitPin")[0][1], PIN);
    let audience = format!("pam:{}", service.name());
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
    let service = login_service("timeout=20");
    // Failed(Timeout) → PAM_AUTH_ERR.
    mock.script("", &["working", "Timeout"]);
    let out = pamtester(&mock, &service, &["authenticate"], "", &[], &[]);
    out.assert_failed(PamCode::AuthErr);
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
    out.assert_failed(PamCode::MaxTries);
    assert_eq!(mock.calls("SubmitLastTryPin").len(), 1, "{}", mock.log());
    // A user without enrollments: NotEnrolled → PAM_USER_UNKNOWN; nothing was started.
    let mock = Mock::start();
    mock.add_device("piv", "pcsc", "Mock Card");
    let out = pamtester(&mock, &service, &["authenticate"], "", &[], &[]);
    out.assert_failed(PamCode::UserUnknown);
    assert!(mock.active_requests().is_empty());
}

#[test]
fn reuse_needs_a_token_of_the_callers_own_login_session() {
    let mock = mock_with_card();
    let service = reuse_service("max_age=5m");
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
    pamtester(&mock, &service, &["authenticate"], "", &c7, &[]).assert_failed(PamCode::AuthErr);
    // A token of session c8, and one of c7 authenticated 10 minutes ago: neither counts.
    issue("c8", 0);
    issue("c7", 600);
    pamtester(&mock, &service, &["authenticate"], "", &c7, &[]).assert_failed(PamCode::AuthErr);
    // A fresh one of c7 does, without a device being asked.
    issue("c7", 0);
    let out = pamtester(&mock, &service, &["authenticate"], "", &c7, &[]);
    assert_ok(&out, &mock);
    assert!(mock.calls("StartAuthentication").is_empty());
    let reused = mock.calls("ReuseSession");
    assert!(reused.iter().all(|c| c[0] == "root"), "{reused:?}");
    // With allow_remote the module passes it on, and the template takes it.
    let lax = reuse_service("max_age=5m allow_remote");
    assert_ok(
        &pamtester(&mock, &lax, &["authenticate"], "", &c7, &[]),
        &mock,
    );
    let passed = mock.calls("ReuseSession");
    assert!(
        passed.last().is_some_and(|c| c[1].contains("allow_remote")),
        "{passed:?}"
    );
    // Reuse off for the service (the daemon's AccessDenied): a failure, not a pass.
    let () = mock.mock(
        "FailNext",
        &("ReuseSession", "AccessDenied", "reuse is off for sudo"),
    );
    pamtester(&mock, &service, &["authenticate"], "", &c7, &[]).assert_failed(PamCode::AuthErr);
}

#[test]
fn login_binds_the_session_reuse_follows_and_removal_ends_it() {
    let mock = Mock::start();
    let card = mock.add_device("piv", "pcsc", "Mock Card");
    mock.enroll("root", "piv");
    let login = login_service("timeout=20");
    let sudo = reuse_service("max_age=15m");
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
    // The user's programs find the bound token, which the template knows as bound to c7.
    let file = mock.dir().join("tessera/token");
    let token =
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let claims: HashMap<String, zbus::zvariant::OwnedValue> = mock
        .call(
            "org.tessera.Tessera1.Manager",
            "ValidateToken",
            &(token.trim(),),
        )
        .unwrap();
    assert_eq!(
        claims.get("login_session").map(|v| format!("{:?}", &**v)),
        Some(format!("{:?}", Value::from("c7")))
    );

    // sudo in that session: reused without a device; from another session it is not.
    let started = mock.calls("StartAuthentication").len();
    assert_ok(
        &pamtester(&mock, &sudo, &["authenticate"], "", &c7, &[]),
        &mock,
    );
    assert_eq!(mock.calls("StartAuthentication").len(), started);
    let c8 = [("MOCK_LOGIND_SESSION", "c8")];
    pamtester(&mock, &sudo, &["authenticate"], "", &c8, &[]).assert_failed(PamCode::AuthErr);

    // The card is pulled: its tokens die, reuse fails.
    let () = mock.mock("RemoveDevice", &(card,));
    pamtester(&mock, &sudo, &["authenticate"], "", &c7, &[]).assert_failed(PamCode::AuthErr);
}

#[test]
fn close_session_ends_the_bound_token() {
    let mock = mock_with_card();
    let login = login_service("timeout=20");
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
    assert!(!common::pam::exists(&mock.dir().join("tessera/token")));
    // Nothing is left for a reuse in that session.
    let sudo = reuse_service("max_age=15m");
    let c7 = [("MOCK_LOGIND_SESSION", "c7")];
    pamtester(&mock, &sudo, &["authenticate"], "", &c7, &[]).assert_failed(PamCode::AuthErr);
}

#[test]
fn a_greeter_login_without_a_user_name_takes_the_enrolled_user() {
    let mock = Mock::start();
    mock.enroll("tessera-nobody-a", "piv");
    mock.enroll("tessera-nobody-b", "fido");
    mock.add_device("fido", "hid", "Mock Key");
    mock.script("", &["touch-needed", "completed"]);
    let service = login_service("timeout=20");
    let greeter = || {
        let mut cmd = pamtester_cmd(mock.address(), &service, "", &["authenticate"], &[]);
        PamRun {
            output: common::run(&mut cmd, b"", Duration::from_secs(40)),
        }
    };
    let out = greeter();
    assert_ok(&out, &mock);
    assert!(
        out.text().contains("Touch your security key"),
        "{}",
        out.text()
    );
    let started = mock.calls("StartAuthentication");
    assert_eq!(started[0][0], "", "{started:?}");
    assert!(started[0][1].contains("any_user"), "{started:?}");
    // The token the module checked is the key's user's.
    let checked = mock.calls("CheckToken");
    let claims: HashMap<String, zbus::zvariant::OwnedValue> = mock
        .call(
            "org.tessera.Tessera1.Manager",
            "ValidateToken",
            &(checked[0][0].as_str(),),
        )
        .unwrap();
    assert_eq!(
        claims.get("sub").map(|v| format!("{:?}", &**v)),
        Some(format!("{:?}", Value::from("tessera-nobody-b")))
    );
    // Two accounts enrolled with that kind of key: UserAmbiguous, a failure.
    mock.enroll("tessera-nobody-c", "fido");
    greeter().assert_failed(PamCode::AuthErr);
}
