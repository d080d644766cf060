//! The python-dbusmock template of Tessera's API (`dbusmock/tessera.py`) speaks the contract our
//! own client speaks: the `tessera` CLI and the client crate's proxies and request follower run
//! against it unchanged, on a private system-type bus. What a desktop integrator's greeter test
//! relies on is checked here: prompts and PINs, unicast request signals, device objects, tokens and
//! their claims, binding to a login session, reuse and logout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod dbusmock_mock;
mod e2e_cli_pty;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use dbusmock_mock::{Mock, PIN};
use e2e_cli_pty::tessera_in_pty;
use futures_util::StreamExt;
use tessera_client::request::{Listener, Update};
use tessera_client::{DeviceProxy, ManagerProxy, Progress, RequestProxy};
use zbus::message::Type as MessageType;
use zbus::zvariant::{OwnedValue, Value};
use zbus::{MatchRule, MessageStream};

const MANAGER: &str = "org.tessera.Tessera1.Manager";

fn tessera(mock: &Mock, args: &[&str], stdin: &[u8]) -> std::process::Output {
    common::run(
        Command::new(common::bin("tessera"))
            .args(["--bus", mock.address()])
            .args(args),
        stdin,
        Duration::from_secs(30),
    )
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_str(common::stdout(out).trim()).expect("JSON")
}

/// A mock with one PIV card, enrolled for root.
fn mock_with_card() -> Mock {
    let mock = Mock::start();
    mock.add_device("piv", "pcsc", "Mock Card");
    mock.enroll("root", "piv");
    mock
}

#[test]
fn the_cli_authenticates_with_the_pin_on_standard_input() {
    let mock = mock_with_card();
    let out = tessera(
        &mock,
        &["authenticate", "--user", "root"],
        format!("{PIN}\n").as_bytes(),
    );
    assert!(out.status.success(), "{out:?}\n{}", mock.log());
    let token = common::stdout(&out).trim().to_owned();
    assert!(token.starts_with("tessera-mock."), "{token}");

    // The PIN went to the request object the CLI started, at its prompt (not up front).
    let started = mock.calls("StartAuthentication");
    assert_eq!(started.len(), 1, "{started:?}");
    assert!(!started[0][1].contains("pin"), "{started:?}");
    assert_eq!(
        mock.calls("SubmitPin"),
        [vec![
            "/org/tessera/Tessera1/requests/1".to_owned(),
            PIN.to_owned()
        ]]
    );
    assert!(mock.active_requests().is_empty());

    // The token is one the mock knows, with the claims (and types) the CLI prints.
    let claims = json(&tessera(
        &mock,
        &[
            "--json",
            "check",
            &token,
            "--audience",
            "tessera",
            "--amr",
            "pin",
        ],
        b"",
    ));
    assert_eq!(claims["sub"], "root");
    assert_eq!(claims["aud"], "tessera");
    assert_eq!(
        claims["amr"],
        serde_json::json!(["hwk", "sc", "pin", "mfa"])
    );
    assert_eq!(claims["login_session"], "");
    assert_eq!(claims["seat"], "");
    assert!(claims["exp"].as_u64() > claims["iat"].as_u64(), "{claims}");
    assert!(
        claims["cnf"]["jkt"].as_str().is_some_and(|j| !j.is_empty()),
        "{claims}"
    );
    for key in ["iss", "jti", "sid", "enr"] {
        assert!(
            claims[key].as_str().is_some_and(|v| !v.is_empty()),
            "{key}: {claims}"
        );
    }

    // A relying service with another audience is refused, by name.
    let out = tessera(&mock, &["check", &token, "--audience", "pam:sudo"], b"");
    let (name, msg) = common::stack::parse_err(&out);
    assert_eq!(name, "TokenInvalid", "{msg}");

    // Listed as a session; revoked by the CLI, then refused.
    let sessions = json(&tessera(&mock, &["--json", "sessions", "root"], b""));
    assert_eq!(sessions["jti"], claims["jti"]);
    assert!(tessera(&mock, &["revoke", &token], b"").status.success());
    let (name, _) = common::stack::parse_err(&tessera(&mock, &["validate", &token], b""));
    assert_eq!(name, "TokenRevoked");
}

#[test]
fn a_wrong_pin_then_the_right_one_at_the_terminal_prompts() {
    let mock = mock_with_card();
    let s = tessera_in_pty(
        mock.address(),
        &["authenticate", "--user", "root"],
        serde_json::json!([
            ["expect", "PIN for root on Mock Card (3 tries left): "],
            ["send", "654321\r"],
            ["expect", "PIN for root on Mock Card (2 tries left): "],
            ["send", format!("{PIN}\r")],
            ["expect", "tessera-mock."],
        ]),
    );
    assert_eq!(s.failed, None, "{}\n{}", s.transcript, mock.log());
    assert_eq!(s.code, Some(0), "{}", s.transcript);
    assert!(s.transcript.contains("Wrong PIN."), "{}", s.transcript);
    assert!(!s.transcript.contains(PIN), "echoed: {}", s.transcript);
    // From a terminal the CLI asks the request to wait for a card.
    assert!(mock.calls("StartAuthentication")[0][1].contains("wait"));
}

#[test]
fn insert_the_card_then_touch_the_key_then_a_scripted_failure() {
    let mock = Mock::start();
    mock.enroll("root", "fido");
    mock.script("root", &["waiting-for-device", "touch-needed", "completed"]);
    let s = std::thread::scope(|scope| {
        let cli = scope.spawn(|| {
            tessera_in_pty(
                mock.address(),
                &["authenticate", "--user", "root"],
                serde_json::json!([
                    ["expect", "Insert your card or key…"],
                    ["expect", "Touch your key…"],
                    ["expect", "tessera-mock."],
                ]),
            )
        });
        // The CLI shows "Insert your card or key…" until the key is plugged in.
        assert!(common::wait_until(Duration::from_secs(20), || !mock
            .calls("StartAuthentication")
            .is_empty()));
        std::thread::sleep(Duration::from_millis(500));
        mock.add_device("fido", "hid", "Mock Key");
        cli.join().unwrap()
    });
    assert_eq!(s.failed, None, "{}\n{}", s.transcript, mock.log());
    assert_eq!(s.code, Some(0), "{}", s.transcript);
    assert!(mock.calls("SubmitPin").is_empty());

    // A scripted error name ends the next request with Failed(that error).
    mock.script("root", &["working", "Timeout"]);
    let (name, msg) =
        common::stack::parse_err(&tessera(&mock, &["authenticate", "--user", "root"], b""));
    assert_eq!(
        (name.as_str(), msg.as_str()),
        ("Timeout", "mock: scripted Timeout")
    );
}

#[test]
fn the_client_crate_follows_a_request_its_signals_unicast() {
    let mock = mock_with_card();
    let other = mock.connect();
    mock.runtime.block_on(async {
        let conn = mock.conn();
        // Someone else on the bus listening to every Request signal hears none of this request.
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .interface("org.tessera.Tessera1.Request")
            .unwrap()
            .build();
        let mut overheard = MessageStream::for_match_rule(rule, &other, None)
            .await
            .unwrap();

        let listener = Listener::new(conn).await.unwrap();
        let manager = ManagerProxy::new(conn).await.unwrap();
        let options = HashMap::from([("audience", Value::from("pam:login"))]);
        let path = manager.start_authentication("root", options).await.unwrap();
        let mut request = listener.follow(conn, path.clone()).await.unwrap();

        // Another connection may neither answer the prompt nor read the state.
        let foreign = RequestProxy::builder(&other)
            .path(path.clone())
            .unwrap()
            .build()
            .await
            .unwrap();
        let mut states = Vec::new();
        let token = loop {
            match request.next().await.unwrap() {
                Some(Update::Progress(Progress::PinNeeded(prompt))) => {
                    states.push("pin-needed".to_owned());
                    assert_eq!(
                        prompt.device.as_ref().map(|d| d.as_str()),
                        Some("/org/tessera/Tessera1/devices/Mock_20Reader_200")
                    );
                    assert_eq!((prompt.kind.as_str(), prompt.retries), ("piv", Some(3)));
                    assert_eq!((prompt.min_length, prompt.max_length), (6, 8));
                    assert!(!prompt.last_try);
                    let e = foreign.submit_pin(PIN).await.unwrap_err();
                    assert!(e.to_string().contains("AccessDenied"), "{e}");
                    let e = foreign.state().await.unwrap_err();
                    assert!(e.to_string().contains("AccessDenied"), "{e}");
                    assert_eq!(request.proxy().state().await.unwrap(), "pin-needed");
                    request.proxy().submit_pin(PIN).await.unwrap();
                }
                Some(Update::Progress(p)) => states.push(p.state().to_owned()),
                Some(Update::Completed(token)) => break token,
                Some(Update::Failed(e)) => panic!("failed: {e}"),
                None => panic!("ended without a result"),
            }
        };
        assert_eq!(states, ["working", "pin-needed", "working"]);

        // The audience asked for is the token's.
        let claims = manager
            .check_token(
                &token,
                HashMap::from([("audience", Value::from("pam:login"))]),
            )
            .await
            .unwrap();
        assert_eq!(string(&claims, "aud"), "pam:login");

        let heard = tokio::time::timeout(Duration::from_millis(300), overheard.next()).await;
        assert!(heard.is_err(), "another connection heard {heard:?}");
    });
}

#[test]
fn a_request_ends_when_its_connection_leaves() {
    let mock = mock_with_card();
    let client = mock.connect();
    let path = mock.runtime.block_on(async {
        let manager = ManagerProxy::new(&client).await.unwrap();
        manager
            .start_authentication("root", HashMap::new())
            .await
            .unwrap()
    });
    assert_eq!(mock.active_requests(), [path]);
    mock.runtime.block_on(client.close()).unwrap();
    assert!(
        common::wait_until(Duration::from_secs(5), || mock.active_requests().is_empty()),
        "{}",
        mock.log()
    );
}

#[test]
fn devices_come_and_go_and_their_tokens_with_them() {
    let mock = Mock::start();
    mock.enroll("root", "piv");
    let card = mock.add_device("piv", "nfc", "Mock Card");
    mock.runtime.block_on(async {
        let device = DeviceProxy::builder(mock.conn())
            .path(card.clone())
            .unwrap()
            .build()
            .await
            .unwrap();
        assert_eq!(device.kind().await.unwrap(), "piv");
        assert_eq!(device.transport().await.unwrap(), "nfc");
        assert_eq!(device.name().await.unwrap(), "Mock Card");
        assert_eq!(device.reader().await.unwrap(), "Mock Reader 0");
    });
    let status = common::stdout(&tessera(&mock, &["status"], b""));
    assert!(status.contains("Mock Card"), "{status}");

    // StartEnrollment through the CLI, the PIN given up front; then listed.
    let out = tessera(
        &mock,
        &["enroll", "--user", "alice", "--pin-stdin"],
        format!("{PIN}\n").as_bytes(),
    );
    let id = common::stdout(&out).trim().to_owned();
    assert!(
        out.status.success() && id.starts_with("mock-piv-"),
        "{out:?}"
    );
    let listed = json(&tessera(&mock, &["--json", "enrollments", "alice"], b""));
    assert_eq!(
        (listed["id"].as_str(), listed["kind"].as_str()),
        (Some(id.as_str()), Some("piv"))
    );
    assert!(
        mock.calls("SubmitPin").is_empty(),
        "the PIN up front answers the prompt"
    );

    let token: String = mock.mock("IssueToken", &("root", HashMap::<&str, Value>::new()));
    // A token of another insertion survives the removal.
    let out = tessera(
        &mock,
        &["authenticate", "--user", "root"],
        format!("{PIN}\n").as_bytes(),
    );
    let from_card = common::stdout(&out).trim().to_owned();
    assert!(from_card.starts_with("tessera-mock."), "{out:?}");

    let () = mock.mock("RemoveDevice", &(card.clone(),));
    let (name, msg) = common::stack::parse_err(&tessera(&mock, &["validate", &from_card], b""));
    assert_eq!(name, "TokenRevoked");
    assert!(msg.contains("device-removed"), "{msg}");
    assert!(tessera(&mock, &["validate", &token], b"").status.success());
    let status = common::stdout(&tessera(&mock, &["status"], b""));
    assert!(!status.contains("Mock Card"), "{status}");

    // With no device and no waiting, the request is refused at once.
    let (name, _) = common::stack::parse_err(&tessera(
        &mock,
        &["authenticate", "--user", "root", "--no-wait"],
        format!("{PIN}\n").as_bytes(),
    ));
    assert_eq!(name, "NoDevice");
}

#[test]
fn bind_reuse_and_end_a_login_session() {
    let mock = mock_with_card();
    let out = tessera(
        &mock,
        &["authenticate", "--user", "root"],
        format!("{PIN}\n").as_bytes(),
    );
    let token = common::stdout(&out).trim().to_owned();

    // BindSession: a new token carries the session and seat; the old one died ("bound").
    let bound: String = mock
        .call(
            MANAGER,
            "BindSession",
            &(
                token.as_str(),
                HashMap::from([("session", Value::from("c7"))]),
            ),
        )
        .unwrap();
    let claims = json(&tessera(&mock, &["--json", "validate", &bound], b""));
    assert_eq!(
        (claims["login_session"].as_str(), claims["seat"].as_str()),
        (Some("c7"), Some("seat0"))
    );
    let (name, msg) = common::stack::parse_err(&tessera(&mock, &["validate", &token], b""));
    assert_eq!(name, "TokenRevoked");
    assert!(msg.contains("bound"), "{msg}");

    // ReuseSession: the caller's login session is MOCK_LOGIND_SESSION in its environment.
    let reuse = |session: Option<&str>, max_age: u32| {
        let mut cmd = Command::new("gdbus");
        cmd.args([
            "call",
            "--address",
            mock.address(),
            "--dest",
            "org.tessera.Tessera1",
        ])
        .args(["--object-path", "/org/tessera/Tessera1/Manager"])
        .args([
            "--method",
            "org.tessera.Tessera1.Manager.ReuseSession",
            "root",
        ])
        .arg(format!(
            "{{'service': <'sudo'>, 'max_age': <uint32 {max_age}>}}"
        ))
        .env_remove("MOCK_LOGIND_SESSION");
        if let Some(s) = session {
            cmd.env("MOCK_LOGIND_SESSION", s);
        }
        common::run(&mut cmd, b"", Duration::from_secs(10))
    };
    let out = reuse(Some("c7"), 900);
    assert!(out.status.success(), "{out:?}");
    let jti = format!("'jti': <'{}'>", claims["jti"].as_str().unwrap());
    assert!(common::stdout(&out).contains(&jti), "{out:?}");
    // Another session, no session, or an authentication older than max_age: nothing to reuse.
    std::thread::sleep(Duration::from_millis(1100));
    for (session, max_age) in [(Some("c8"), 900), (None, 900), (Some("c7"), 0)] {
        let out = reuse(session, max_age);
        assert!(
            common::stderr(&out).contains("org.tessera.Tessera1.Error.NoLoginSession"),
            "{session:?} {max_age}: {out:?}"
        );
    }
    // Nor does this process's own connection count: it has no login session.
    let e = mock
        .call::<_, HashMap<String, OwnedValue>>(
            MANAGER,
            "ReuseSession",
            &("root", HashMap::<&str, Value>::new()),
        )
        .unwrap_err();
    assert!(e.to_string().contains("NoLoginSession"), "{e}");

    // EndSession at logout; then nothing is left to reuse.
    let () = mock
        .call(MANAGER, "EndSession", &(bound.as_str(),))
        .unwrap();
    let (name, msg) = common::stack::parse_err(&tessera(&mock, &["validate", &bound], b""));
    assert_eq!(name, "TokenRevoked");
    assert!(msg.contains("logout"), "{msg}");
    assert!(!reuse(Some("c7"), 900).status.success());

    // SetReuse answers for a user without the rules; FailNext injects any error once.
    let () = mock.mock("SetReuse", &("root", "c9", true));
    let claims: HashMap<String, OwnedValue> = mock
        .call(
            MANAGER,
            "ReuseSession",
            &("root", HashMap::<&str, Value>::new()),
        )
        .unwrap();
    assert_eq!(string(&claims, "login_session"), "c9");
    let () = mock.mock(
        "FailNext",
        &("ReuseSession", "AccessDenied", "reuse is off for sudo"),
    );
    let e = mock
        .call::<_, HashMap<String, OwnedValue>>(
            MANAGER,
            "ReuseSession",
            &("root", HashMap::<&str, Value>::new()),
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("org.tessera.Tessera1.Error.AccessDenied"),
        "{e}"
    );
}

#[test]
fn ctrl_c_cancels_and_the_last_try_is_spent_deliberately() {
    let mock = mock_with_card();
    let s = tessera_in_pty(
        mock.address(),
        &["authenticate", "--user", "root"],
        serde_json::json!([["expect", "(3 tries left): "], ["interrupt"]]),
    );
    assert_eq!(s.code, Some(130), "{}\n{}", s.transcript, mock.log());
    assert!(
        s.transcript
            .contains("tessera: Cancelled: the request was cancelled"),
        "{}",
        s.transcript
    );
    assert_eq!(mock.calls("Cancel").len(), 1);
    assert!(common::wait_until(Duration::from_secs(5), || mock
        .active_requests()
        .is_empty()));

    let () = mock.mock("SetPin", &(PIN, 1u32));
    let s = tessera_in_pty(
        mock.address(),
        &["authenticate", "--user", "root"],
        serde_json::json!([
            ["expect", "(1 try left): "],
            ["send", format!("{PIN}\r")],
            [
                "expect",
                "Last try before the card blocks — type the PIN again to use it: "
            ],
            ["send", format!("{PIN}\r")],
            ["expect", "tessera-mock."],
        ]),
    );
    assert_eq!(s.code, Some(0), "{}\n{}", s.transcript, mock.log());
    assert!(mock.calls("SubmitPin").is_empty(), "{}", mock.log());
    assert_eq!(mock.calls("SubmitLastTryPin").len(), 1);
}

#[test]
fn a_greeter_request_takes_the_user_the_device_is_enrolled_for() {
    let mock = Mock::start();
    mock.enroll("alice", "piv");
    mock.enroll("bob", "fido");
    mock.add_device("fido", "hid", "Mock Key");
    mock.script("", &["touch-needed", "completed"]);
    let greeter = |mock: &Mock| {
        mock.runtime.block_on(async {
            let conn = mock.conn();
            let listener = Listener::new(conn).await.unwrap();
            let manager = ManagerProxy::new(conn).await.unwrap();
            let options = HashMap::from([("any_user", Value::from(true))]);
            let path = manager.start_authentication("", options).await.unwrap();
            let mut request = listener.follow(conn, path).await.unwrap();
            loop {
                match request.next().await.unwrap() {
                    Some(Update::Completed(token)) => {
                        let claims = manager.validate_token(&token).await.unwrap();
                        return Ok(string(&claims, "sub"));
                    }
                    Some(Update::Failed(e)) => return Err(e.name().to_string()),
                    Some(Update::Progress(_)) => {}
                    None => panic!("ended without a result"),
                }
            }
        })
    };
    assert_eq!(greeter(&mock).as_deref(), Ok("bob"));
    mock.enroll("carol", "fido");
    let e = greeter(&mock).unwrap_err();
    assert_eq!(e, "UserAmbiguous");
}

#[test]
fn selecting_a_device_then_pulling_it_mid_request() {
    let mock = Mock::start();
    mock.enroll("root", "fido");
    let first = mock.add_device("fido", "hid", "Key A");
    let second = mock.add_device("fido", "sim", "Key B");
    mock.script(
        "root",
        &["selecting-device", "uv-needed", "pin-needed", "completed"],
    );
    let updates = mock.runtime.block_on(async {
        let conn = mock.conn();
        let listener = Listener::new(conn).await.unwrap();
        let manager = ManagerProxy::new(conn).await.unwrap();
        let path = manager
            .start_authentication("root", HashMap::new())
            .await
            .unwrap();
        let mut request = listener.follow(conn, path).await.unwrap();
        let mut seen = Vec::new();
        loop {
            match request.next().await.unwrap() {
                Some(Update::Progress(Progress::SelectingDevice { devices })) => {
                    assert_eq!(devices, [first.clone(), second.clone()]);
                    seen.push("selecting-device".to_owned());
                }
                Some(Update::Progress(Progress::PinNeeded(prompt))) => {
                    // A FIDO PIN's bounds; then the key is pulled while the prompt is up.
                    assert_eq!(
                        (prompt.kind.as_str(), prompt.min_length, prompt.max_length),
                        ("fido", 4, 63)
                    );
                    assert_eq!(prompt.device.as_ref(), Some(&first));
                    seen.push("pin-needed".to_owned());
                    let () = mock_call(conn, "RemoveDevice", &(first.clone(),)).await;
                }
                Some(Update::Progress(p)) => seen.push(p.state().to_owned()),
                Some(Update::Failed(e)) => {
                    seen.push(e.name().to_owned());
                    return seen;
                }
                other => panic!("{other:?}"),
            }
        }
    });
    assert_eq!(
        updates,
        [
            "selecting-device",
            "uv-needed",
            "pin-needed",
            "DeviceRemoved"
        ]
    );
    assert!(mock.active_requests().is_empty());

    // SetReuse(.., false): no reuse for root, whatever is bound.
    let () = mock.mock("SetReuse", &("root", "c1", false));
    let e = mock
        .call::<_, HashMap<String, OwnedValue>>(
            MANAGER,
            "ReuseSession",
            &("root", HashMap::<&str, Value>::new()),
        )
        .unwrap_err();
    assert!(e.to_string().contains("NoLoginSession"), "{e}");
    // A script step the template does not know is refused when it is set.
    let e = mock
        .call::<_, ()>(
            dbusmock_mock::MOCK_IFACE,
            "SetScript",
            &("root", ["complete"]),
        )
        .unwrap_err();
    assert!(e.to_string().contains("unknown step"), "{e}");
}

/// A Mock method called from inside the runtime.
async fn mock_call<B, R>(conn: &zbus::Connection, method: &str, body: &B) -> R
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
    R: serde::de::DeserializeOwned + zbus::zvariant::Type,
{
    conn.call_method(
        Some(dbusmock_mock::BUS_NAME),
        dbusmock_mock::MANAGER_PATH,
        Some(dbusmock_mock::MOCK_IFACE),
        method,
        body,
    )
    .await
    .unwrap()
    .body()
    .deserialize()
    .unwrap()
}

#[test]
fn template_parameters_and_the_request_timeout() {
    let mock = Mock::with_parameters(Some(r#"{"pin": "24681357", "seat": "seat1"}"#));
    mock.add_device("piv", "pcsc", "Mock Card");
    mock.enroll("root", "piv");
    let out = tessera(&mock, &["authenticate", "--user", "root"], b"24681357\n");
    let token = common::stdout(&out).trim().to_owned();
    assert!(
        token.starts_with("tessera-mock."),
        "{out:?}\n{}",
        mock.log()
    );
    let bound: String = mock
        .call(
            MANAGER,
            "BindSession",
            &(
                token.as_str(),
                HashMap::from([("session", Value::from("c1"))]),
            ),
        )
        .unwrap();
    let claims = json(&tessera(&mock, &["--json", "validate", &bound], b""));
    assert_eq!(claims["seat"], "seat1");
    // A session id the daemon would refuse is refused here too.
    let e = mock
        .call::<_, String>(
            MANAGER,
            "BindSession",
            &(
                bound.as_str(),
                HashMap::from([("session", Value::from("c1/../x"))]),
            ),
        )
        .unwrap_err();
    assert!(e.to_string().contains("InvalidArgument"), "{e}");

    // The request's "timeout" ends it with Failed(Timeout) while it waits for a device.
    mock.script("root", &["waiting-for-device", "completed"]);
    let () = mock.mock(
        "RemoveDevice",
        &("/org/tessera/Tessera1/devices/Mock_20Reader_200",),
    );
    let started = std::time::Instant::now();
    let out = tessera(
        &mock,
        &["authenticate", "--user", "root", "--wait", "--timeout", "1"],
        b"",
    );
    // (The CLI said "Insert your card or key…" first: the request waited for one.)
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = common::stderr(&out);
    assert!(err.starts_with("Insert your card or key…\n"), "{err}");
    assert!(
        err.contains("tessera: Timeout: the request did not end within 1s"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

fn string(dict: &HashMap<String, OwnedValue>, key: &str) -> String {
    match dict.get(key).map(|v| &**v) {
        Some(Value::Str(s)) => s.as_str().to_owned(),
        other => panic!("{key}: {other:?}"),
    }
}
