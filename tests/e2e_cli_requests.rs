//! `tessera authenticate` against the request contract (README, "Requests"), under a
//! pseudo-terminal: prompts only when the daemon asks, no echo, the last-try confirmation and
//! SubmitLastTryPin, "Insert your card or key…", "Touch your key…", Ctrl-C → Cancel and exit 130,
//! and the one error format when a request fails.
//!
//! The other end is a small scripted `org.tessera.Tessera1` served in this process on a private
//! dbus-daemon: it plays each state of the contract on cue, which the real daemon and the simulator
//! cannot all be made to do on demand (a touch, a prompt that is a last try from the start), and it
//! records every call the CLI makes. `tests/e2e_cli.rs` runs the same flows against the real
//! tesserad and simulator.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod e2e_cli_pty;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Bus;
use e2e_cli_pty::{tessera_in_pty, Session};
use zbus::message::Header;
use zbus::names::{BusName, OwnedUniqueName};
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};
use zbus::{interface, Connection};

const PIN: &str = "123456";
const WRONG_PIN: &str = "654321";
const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJyb290In0.c2lnbmF0dXJl";
const DEVICE: &str = "/org/tessera/Tessera1/devices/Virtual_20PCD_2000_2000";

/// How the scripted request behaves.
#[derive(Clone, Copy, PartialEq)]
enum Script {
    /// pin-needed (3 tries); a wrong PIN comes back with the retries less one.
    Pin,
    /// pin-needed with one try left: SubmitPin is refused with PinWouldBlock.
    LastTry,
    /// waiting-for-device for a second, then pin-needed.
    Insert,
    /// pin-needed; after the right PIN, touch-needed for a moment, then the token.
    Touch,
    /// waiting-for-device, then Failed(Timeout).
    Timeout,
    /// pin-needed, then Failed(Timeout) a second later while the prompt is up.
    PinTimeout,
    /// StartUnblock: puk-needed, then new-pin-needed, then Completed.
    Unblock,
}

#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Log {
    fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
    fn calls(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.tessera.Tessera1.Error")]
enum FakeError {
    #[zbus(error)]
    ZBus(zbus::Error),
    PinWouldBlock(String),
    InvalidArgument(String),
}

struct FakeManager {
    script: Script,
    log: Arc<Log>,
}

#[interface(name = "org.tessera.Tessera1.Manager")]
impl FakeManager {
    async fn start_authentication(
        &self,
        user: &str,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        let mut keys: Vec<String> = options
            .iter()
            .map(|(k, v)| format!("{k}={:?}", &**v))
            .collect();
        keys.sort();
        self.log
            .push(format!("StartAuthentication {user:?} {}", keys.join(" ")));
        let path = OwnedObjectPath::try_from("/org/tessera/Tessera1/requests/1").unwrap();
        let sender = OwnedUniqueName::from(header.sender().unwrap().to_owned());
        let request = FakeRequest {
            script: self.script,
            log: self.log.clone(),
            sender: sender.clone(),
            retries: Mutex::new(if self.script == Script::LastTry { 1 } else { 3 }),
            state: Mutex::new("working".into()),
        };
        conn.object_server().at(&path, request).await?;
        let given = options
            .get("pin")
            .and_then(|v| <&str>::try_from(&**v).ok().map(str::to_owned));
        let conn = conn.clone();
        let script = self.script;
        let p = path.clone();
        // After the reply: the contract sends no signal of a request before the reply naming it.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let emitter = emitter(&conn, &p, &sender);
            match script {
                Script::Insert | Script::Timeout => {
                    progress(&conn, &emitter, "waiting-for-device", HashMap::new()).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if script == Script::Timeout {
                        let _ = FakeRequest::failed(
                            &emitter,
                            "org.tessera.Tessera1.Error.Timeout",
                            "no device was inserted within 1s",
                        )
                        .await;
                        remove(&conn, &p).await;
                        return;
                    }
                    progress(&conn, &emitter, "pin-needed", prompt(3, None)).await;
                }
                Script::LastTry => {
                    progress(&conn, &emitter, "pin-needed", prompt(1, None)).await;
                }
                // Started by StartUnblock, never here.
                Script::Unblock => {}
                // A PIN given up front answers the first prompt, which is then never shown.
                Script::Pin if given.as_deref() == Some(PIN) => {
                    progress(&conn, &emitter, "working", device_only()).await;
                    let _ = FakeRequest::completed(&emitter, TOKEN).await;
                    remove(&conn, &p).await;
                }
                Script::Pin if given.is_some() => {
                    progress(&conn, &emitter, "pin-needed", prompt(2, Some("PinInvalid"))).await;
                }
                Script::Pin | Script::Touch => {
                    progress(&conn, &emitter, "pin-needed", prompt(3, None)).await;
                }
                Script::PinTimeout => {
                    progress(&conn, &emitter, "pin-needed", prompt(3, None)).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = FakeRequest::failed(
                        &emitter,
                        "org.tessera.Tessera1.Error.Timeout",
                        "no PIN was given within 1s",
                    )
                    .await;
                    remove(&conn, &p).await;
                }
            }
        });
        Ok(path)
    }
}

#[interface(name = "org.tessera.Tessera1.Manager")]
impl FakeUnblockManager {
    async fn start_unblock(
        &self,
        device: ObjectPath<'_>,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        self.log.push(format!(
            "StartUnblock {} options={}",
            device.as_str(),
            options.len()
        ));
        let path = OwnedObjectPath::try_from("/org/tessera/Tessera1/requests/1").unwrap();
        let sender = OwnedUniqueName::from(header.sender().unwrap().to_owned());
        let request = FakeRequest {
            script: Script::Unblock,
            log: self.log.clone(),
            sender: sender.clone(),
            retries: Mutex::new(3),
            state: Mutex::new("working".into()),
        };
        conn.object_server().at(&path, request).await?;
        let (conn, p) = (conn.clone(), path.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let emitter = emitter(&conn, &p, &sender);
            progress(&conn, &emitter, "puk-needed", prompt(3, None)).await;
        });
        Ok(path)
    }
}

struct FakeUnblockManager {
    log: Arc<Log>,
}

struct FakeRequest {
    script: Script,
    log: Arc<Log>,
    sender: OwnedUniqueName,
    retries: Mutex<u32>,
    state: Mutex<String>,
}

#[interface(name = "org.tessera.Tessera1.Request")]
impl FakeRequest {
    async fn submit_pin(
        &self,
        pin: &str,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), FakeError> {
        self.log.push(format!("SubmitPin {pin}"));
        if *self.retries.lock().unwrap() == 1 {
            return Err(FakeError::PinWouldBlock(
                "PIN not tried: only 1 retry left, spending it could block the card; unblock it with the PUK".into(),
            ));
        }
        self.answer(pin, conn, &header).await
    }

    async fn submit_last_try_pin(
        &self,
        pin: &str,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), FakeError> {
        self.log.push(format!("SubmitLastTryPin {pin}"));
        self.answer(pin, conn, &header).await
    }

    async fn cancel(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), FakeError> {
        self.log.push("Cancel".into());
        let path: OwnedObjectPath = header.path().unwrap().to_owned().into();
        let conn = conn.clone();
        let sender = self.sender.clone();
        tokio::spawn(async move {
            let emitter = emitter(&conn, &path, &sender);
            let _ = FakeRequest::failed(
                &emitter,
                "org.tessera.Tessera1.Error.Cancelled",
                "the request was cancelled",
            )
            .await;
            remove(&conn, &path).await;
        });
        Ok(())
    }

    #[zbus(property)]
    async fn state(&self) -> String {
        self.state.lock().unwrap().clone()
    }

    #[zbus(signal)]
    async fn progress(
        emitter: &SignalEmitter<'_>,
        state: &str,
        details: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn completed(emitter: &SignalEmitter<'_>, result: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn failed(emitter: &SignalEmitter<'_>, error: &str, message: &str) -> zbus::Result<()>;
}

impl FakeRequest {
    async fn answer(
        &self,
        pin: &str,
        conn: &Connection,
        header: &Header<'_>,
    ) -> Result<(), FakeError> {
        let state = self.state.lock().unwrap().clone();
        if self.script == Script::Unblock {
            let path: OwnedObjectPath = header.path().unwrap().to_owned().into();
            let (conn, sender) = (conn.clone(), self.sender.clone());
            tokio::spawn(async move {
                let emitter = emitter(&conn, &path, &sender);
                if state == "puk-needed" {
                    progress(&conn, &emitter, "new-pin-needed", prompt(3, None)).await;
                } else {
                    let _ = FakeRequest::completed(&emitter, "").await;
                    remove(&conn, &path).await;
                }
            });
            return Ok(());
        }
        if state != "pin-needed" {
            return Err(FakeError::InvalidArgument("not waiting for a PIN".into()));
        }
        let path: OwnedObjectPath = header.path().unwrap().to_owned().into();
        let right = pin == PIN;
        let retries = {
            let mut r = self.retries.lock().unwrap();
            if right {
                *r = 3;
            } else {
                *r -= 1;
            }
            *r
        };
        let (conn, sender, script) = (conn.clone(), self.sender.clone(), self.script);
        tokio::spawn(async move {
            let emitter = emitter(&conn, &path, &sender);
            if !right {
                progress(
                    &conn,
                    &emitter,
                    "pin-needed",
                    prompt(retries, Some("PinInvalid")),
                )
                .await;
                return;
            }
            progress(&conn, &emitter, "working", device_only()).await;
            if script == Script::Touch {
                progress(&conn, &emitter, "touch-needed", device_only()).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let _ = FakeRequest::completed(&emitter, TOKEN).await;
            remove(&conn, &path).await;
        });
        Ok(())
    }
}

/// The device the prompts name.
struct FakeDevice;

#[interface(name = "org.tessera.Tessera1.Device")]
impl FakeDevice {
    #[zbus(property)]
    async fn name(&self) -> String {
        "Test Card".into()
    }
}

fn emitter<'a>(
    conn: &Connection,
    path: &'a OwnedObjectPath,
    to: &'a OwnedUniqueName,
) -> SignalEmitter<'a> {
    SignalEmitter::new(conn, path.as_ref())
        .unwrap()
        .set_destination(BusName::Unique(to.as_ref()))
}

/// Emits Progress and keeps State in step.
async fn progress(
    conn: &Connection,
    e: &SignalEmitter<'_>,
    state: &str,
    details: HashMap<&str, Value<'_>>,
) {
    if let Ok(iface) = conn
        .object_server()
        .interface::<_, FakeRequest>(e.path())
        .await
    {
        *iface.get().await.state.lock().unwrap() = state.to_owned();
    }
    FakeRequest::progress(e, state, details).await.unwrap();
}

async fn remove(conn: &Connection, path: &OwnedObjectPath) {
    let _ = conn.object_server().remove::<FakeRequest, _>(path).await;
}

fn device_only() -> HashMap<&'static str, Value<'static>> {
    HashMap::from([(
        "device",
        Value::from(ObjectPath::from_static_str_unchecked(DEVICE)),
    )])
}

fn prompt(retries: u32, last_error: Option<&'static str>) -> HashMap<&'static str, Value<'static>> {
    let mut d = device_only();
    d.insert("kind", Value::from("piv"));
    d.insert("retries", Value::from(retries));
    d.insert("min_length", Value::from(6u32));
    d.insert("max_length", Value::from(8u32));
    d.insert("last_try", Value::from(retries == 1));
    if let Some(e) = last_error {
        d.insert("last_error", Value::from(e));
    }
    d
}

/// A private bus with the scripted daemon on it.
struct Fake {
    bus: Bus,
    log: Arc<Log>,
    runtime: tokio::runtime::Runtime,
    _conn: Connection,
}

impl Fake {
    fn start(script: Script) -> Fake {
        let bus = Bus::start();
        let log = Arc::new(Log::default());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let conn = runtime.block_on(async {
            zbus::connection::Builder::address(bus.address())
                .unwrap()
                .name("org.tessera.Tessera1")
                .unwrap()
                .serve_at(
                    "/org/tessera/Tessera1/Manager",
                    FakeManager {
                        script,
                        log: log.clone(),
                    },
                )
                .unwrap()
                .serve_at(DEVICE, FakeDevice)
                .unwrap()
                .build()
                .await
                .unwrap()
        });
        Fake {
            bus,
            log,
            runtime,
            _conn: conn,
        }
    }

    fn authenticate(&self, steps: serde_json::Value) -> Session {
        tessera_in_pty(
            self.bus.address(),
            &["authenticate", "--user", "root"],
            steps,
        )
    }

    fn request_gone(&self) -> bool {
        self.runtime.block_on(async {
            self._conn
                .object_server()
                .interface::<_, FakeRequest>("/org/tessera/Tessera1/requests/1")
                .await
                .is_err()
        })
    }
}

fn assert_no_echo(s: &Session) {
    for secret in [PIN, WRONG_PIN] {
        assert!(!s.transcript.contains(secret), "echoed: {}", s.transcript);
    }
}

#[test]
fn wrong_pin_then_right_one_without_echo() {
    let fake = Fake::start(Script::Pin);
    let s = fake.authenticate(serde_json::json!([
        ["expect", "PIN for root on Test Card (3 tries left): "],
        ["send", format!("{WRONG_PIN}\r")],
        ["expect", "PIN for root on Test Card (2 tries left): "],
        ["send", format!("{PIN}\r")],
        ["expect", TOKEN],
    ]));
    assert_eq!(s.failed, None, "{}", s.transcript);
    assert_eq!(s.code, Some(0), "{}", s.transcript);
    assert!(s.transcript.contains("Wrong PIN."), "{}", s.transcript);
    assert_no_echo(&s);
    let calls = fake.log.calls();
    assert!(
        calls[0].starts_with("StartAuthentication \"root\" "),
        "{calls:?}"
    );
    // From a terminal the request waits for a card.
    assert!(calls[0].contains("wait=Bool(true)"), "{calls:?}");
    // No PIN in the start options: it is asked only at pin-needed.
    assert!(!calls[0].contains("pin="), "{calls:?}");
    assert_eq!(
        calls[1..],
        [format!("SubmitPin {WRONG_PIN}"), format!("SubmitPin {PIN}")]
    );
}

#[test]
fn last_try_is_confirmed_and_spent_deliberately() {
    let fake = Fake::start(Script::LastTry);
    let s = fake.authenticate(serde_json::json!([
        ["expect", "(1 try left): "],
        ["send", format!("{PIN}\r")],
        [
            "expect",
            "Last try before the card blocks — type the PIN again to use it: "
        ],
        ["send", format!("{PIN}\r")],
        ["expect", TOKEN],
    ]));
    assert_eq!(s.failed, None, "{}", s.transcript);
    assert_eq!(s.code, Some(0), "{}", s.transcript);
    assert_no_echo(&s);
    assert_eq!(fake.log.calls()[1..], [format!("SubmitLastTryPin {PIN}")]);
}

#[test]
fn last_try_from_standard_input_is_never_spent() {
    let fake = Fake::start(Script::LastTry);
    let out = common::run(
        std::process::Command::new(common::bin("tessera")).args([
            "--bus",
            fake.bus.address(),
            "authenticate",
        ]),
        format!("{PIN}\n").as_bytes(),
        Duration::from_secs(30),
    );
    let (name, msg) = common::stack::parse_err(&out);
    assert_eq!(name, "PinWouldBlock", "{msg}");
    let calls = fake.log.calls();
    assert!(calls[0].contains("wait=Bool(false)"), "{calls:?}");
    assert_eq!(
        calls[1..],
        [format!("SubmitPin {PIN}"), "Cancel".to_owned()]
    );
}

#[test]
fn a_wrong_pin_on_standard_input_ends_with_its_error() {
    let fake = Fake::start(Script::Pin);
    let out = common::run(
        std::process::Command::new(common::bin("tessera")).args([
            "--bus",
            fake.bus.address(),
            "authenticate",
        ]),
        format!("{WRONG_PIN}\n").as_bytes(),
        Duration::from_secs(30),
    );
    let (name, msg) = common::stack::parse_err(&out);
    assert_eq!(
        (name.as_str(), msg.as_str()),
        ("PinInvalid", "wrong PIN, 2 retries left")
    );
    assert_eq!(
        fake.log.calls()[1..],
        [format!("SubmitPin {WRONG_PIN}"), "Cancel".to_owned()]
    );
    assert!(common::wait_until(Duration::from_secs(5), || fake.request_gone()));
}

#[test]
fn ctrl_c_at_the_prompt_cancels_and_exits_130() {
    let fake = Fake::start(Script::Pin);
    let s = fake.authenticate(serde_json::json!([
        ["expect", "(3 tries left): "],
        ["interrupt"]
    ]));
    assert_eq!(s.failed, None, "{}", s.transcript);
    assert_eq!(s.code, Some(130), "{}", s.transcript);
    assert!(
        s.transcript
            .contains("tessera: Cancelled: the request was cancelled"),
        "{}",
        s.transcript
    );
    assert_eq!(fake.log.calls()[1..], ["Cancel".to_owned()]);
    assert!(common::wait_until(Duration::from_secs(5), || fake.request_gone()));
}

#[test]
fn insert_your_card_then_the_pin() {
    let fake = Fake::start(Script::Insert);
    let s = fake.authenticate(serde_json::json!([
        ["expect", "Insert your card or key…"],
        ["expect", "(3 tries left): "],
        ["send", format!("{PIN}\r")],
        ["expect", TOKEN],
    ]));
    assert_eq!(s.failed, None, "{}", s.transcript);
    assert_eq!(s.code, Some(0), "{}", s.transcript);
    let insert = s.transcript.find("Insert your card").unwrap();
    let pin = s.transcript.find("PIN for").unwrap();
    assert!(insert < pin, "{}", s.transcript);
}

#[test]
fn touch_your_key() {
    let fake = Fake::start(Script::Touch);
    let s = fake.authenticate(serde_json::json!([
        ["expect", "(3 tries left): "],
        ["send", format!("{PIN}\r")],
        ["expect", "Touch your key…"],
        ["expect", TOKEN],
    ]));
    assert_eq!(s.failed, None, "{}", s.transcript);
    assert_eq!(s.code, Some(0), "{}", s.transcript);
}

#[test]
fn a_failed_request_is_reported_in_the_one_format() {
    let fake = Fake::start(Script::Timeout);
    let s = fake.authenticate(serde_json::json!([["expect", "Insert your card or key…"]]));
    assert_eq!(s.failed, None, "{}", s.transcript);
    assert_eq!(s.code, Some(1), "{}", s.transcript);
    assert!(
        s.transcript
            .contains("tessera: Timeout: no device was inserted within 1s"),
        "{}",
        s.transcript
    );
    assert!(!s.transcript.contains("PIN"), "{}", s.transcript);
}

#[test]
fn a_request_ending_during_the_prompt_is_reported_at_once() {
    let fake = Fake::start(Script::PinTimeout);
    let s = fake.authenticate(serde_json::json!([
        ["expect", "(3 tries left): "],
        ["expect", "tessera: Timeout: no PIN was given within 1s"],
    ]));
    assert_eq!(s.failed, None, "{}", s.transcript);
    assert_eq!(s.code, Some(1), "{}", s.transcript);
    // Nothing was submitted, and nothing cancelled: the request had ended.
    assert_eq!(fake.log.calls().len(), 1, "{:?}", fake.log.calls());
}

#[test]
fn unblock_asks_the_puk_then_the_new_pin_twice() {
    let bus = Bus::start();
    let log = Arc::new(Log::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _conn = runtime.block_on(async {
        zbus::connection::Builder::address(bus.address())
            .unwrap()
            .name("org.tessera.Tessera1")
            .unwrap()
            .serve_at(
                "/org/tessera/Tessera1/Manager",
                FakeUnblockManager { log: log.clone() },
            )
            .unwrap()
            .serve_at(DEVICE, FakeDevice)
            .unwrap()
            .build()
            .await
            .unwrap()
    });
    let s = tessera_in_pty(
        bus.address(),
        &["unblock", "--device", DEVICE],
        serde_json::json!([
            ["expect", "PUK for Test Card (3 tries left): "],
            ["send", "12345678\r"],
            ["expect", "New PIN for Test Card: "],
            ["send", "24681357\r"],
            ["expect", "Type the new PIN again: "],
            ["send", "24681357\r"],
            ["expect", "unblocked"],
        ]),
    );
    assert_eq!(s.failed, None, "{}", s.transcript);
    assert_eq!(s.code, Some(0), "{}", s.transcript);
    for secret in ["12345678", "24681357"] {
        assert!(!s.transcript.contains(secret), "echoed: {}", s.transcript);
    }
    assert_eq!(
        log.calls(),
        [
            format!("StartUnblock {DEVICE} options=0"),
            "SubmitPin 12345678".to_owned(),
            "SubmitPin 24681357".to_owned(),
        ]
    );
}

#[test]
fn pin_stdin_gives_the_pin_up_front() {
    for (pin, ok) in [(PIN, true), (WRONG_PIN, false)] {
        let fake = Fake::start(Script::Pin);
        let out = common::run(
            std::process::Command::new(common::bin("tessera")).args([
                "--bus",
                fake.bus.address(),
                "authenticate",
                "--pin-stdin",
            ]),
            format!("{pin}\n").as_bytes(),
            Duration::from_secs(30),
        );
        let calls = fake.log.calls();
        assert!(
            calls[0].contains(&format!("pin=Str(\"{pin}\")")),
            "{calls:?}"
        );
        if ok {
            assert!(out.status.success(), "{out:?}");
            assert_eq!(common::stdout(&out).trim(), TOKEN);
            assert_eq!(calls.len(), 1, "{calls:?}");
        } else {
            // The refusal comes back as a prompt; with no second line that is the answer.
            let (name, msg) = common::stack::parse_err(&out);
            assert_eq!(
                (name.as_str(), msg.as_str()),
                ("PinInvalid", "wrong PIN, 2 retries left")
            );
            assert_eq!(calls[1..], ["Cancel".to_owned()]);
        }
    }
}

#[test]
fn a_last_try_with_no_line_left_is_pin_would_block() {
    // The PIN given up front was not tried (one try left): the prompt comes back as a last try,
    // and from standard input it is never spent.
    let fake = Fake::start(Script::LastTry);
    let out = common::run(
        std::process::Command::new(common::bin("tessera")).args([
            "--bus",
            fake.bus.address(),
            "authenticate",
            "--pin-stdin",
        ]),
        format!("{PIN}\n").as_bytes(),
        Duration::from_secs(30),
    );
    let (name, msg) = common::stack::parse_err(&out);
    assert_eq!(name, "PinWouldBlock", "{msg}");
    assert!(msg.contains("only 1 retry left"), "{msg}");
    assert_eq!(fake.log.calls()[1..], ["Cancel".to_owned()]);
}
