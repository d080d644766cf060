//! The client side of the FIDO end-to-end tests: a request followed from its Start call to its
//! last signal, answering PIN prompts as told, and the Manager's `TokenRevoked` signals. Built on
//! the request tests' client (`tests/e2e_requests_client`); shared by `tests/e2e_fido*.rs`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt as _;
use tessera_client::proxy::TokenRevoked;
use tessera_client::ManagerProxy;
use zbus::zvariant::{OwnedObjectPath, Value};

use crate::common::fido::{KeyOptions, Published, SimKey, TouchMode, FIDO_PIN};
use crate::common::stack::Stack;
use crate::e2e_requests_client::{Client, Signal};

/// Upper bound of the wait for a TokenRevoked signal.
pub const REVOKE_WAIT: Duration = Duration::from_secs(20);
pub const CANCELLED: &str = "org.tessera.Tessera1.Error.Cancelled";

/// The full D-Bus name of Tessera error `name`.
pub fn error(name: &str) -> String {
    format!("org.tessera.Tessera1.Error.{name}")
}

/// What a followed request did: every signal in order, and how it ended.
#[derive(Debug)]
pub struct Run {
    pub path: OwnedObjectPath,
    pub signals: Vec<Signal>,
    /// `Completed`'s result, or `Failed`'s (error name, message).
    pub outcome: Result<String, (String, String)>,
}

impl Run {
    /// The Progress states in order (without Completed/Failed).
    pub fn states(&self) -> Vec<&str> {
        self.signals
            .iter()
            .map(Signal::name)
            .filter(|n| *n != "Completed" && *n != "Failed")
            .collect()
    }

    pub fn saw(&self, state: &str) -> bool {
        self.states().contains(&state)
    }

    /// The Progress signals of `state`.
    pub fn all(&self, state: &str) -> Vec<&Signal> {
        self.signals.iter().filter(|s| s.name() == state).collect()
    }

    /// The result of a completed request (a token or an enrollment id); panics otherwise.
    pub fn result(&self) -> &str {
        match &self.outcome {
            Ok(r) => r,
            Err((e, m)) => panic!("request failed: {e}: {m}\nsignals: {:?}", self.signals),
        }
    }

    /// The token of a completed authentication; panics unless it looks like a JWT.
    pub fn token(&self) -> &str {
        let t = self.result();
        assert_eq!(t.split('.').count(), 3, "not a JWT: {t}");
        t
    }

    /// The error name of a failed request; panics if it completed.
    pub fn failure(&self) -> (&str, &str) {
        match &self.outcome {
            Ok(r) => panic!(
                "request completed ({r}), a failure was expected: {:?}",
                self.signals
            ),
            Err((e, m)) => (e, m),
        }
    }
}

/// How to answer the PIN prompts of a followed request.
#[derive(Clone, Debug)]
pub enum Pins {
    /// Never: a prompt fails the test.
    None,
    /// These PINs, one per prompt, in order; then fail the test at the next prompt.
    Each(Vec<String>),
}

impl Pins {
    pub fn right() -> Pins {
        Pins::Each(vec![FIDO_PIN.to_owned()])
    }
}

/// Follows request `path` to its end, answering PIN prompts from `pins` (with SubmitLastTryPin
/// when the prompt says `last_try`) and, with `touch`, each "touch-needed" with one touch of that
/// key (`--touch manual`); other keys touch themselves.
pub async fn follow(
    client: &mut Client,
    path: OwnedObjectPath,
    pins: Pins,
    touch: Option<&SimKey>,
) -> Run {
    let request = client.request(&path).await;
    let mut answers = match pins {
        Pins::None => Vec::new(),
        Pins::Each(v) => v,
    }
    .into_iter();
    let mut signals = Vec::new();
    loop {
        let s = client.next(&path).await;
        signals.push(s.clone());
        match &s {
            Signal::Completed(r) => {
                return Run {
                    path,
                    signals,
                    outcome: Ok(r.clone()),
                }
            }
            Signal::Failed(e, m) => {
                return Run {
                    path,
                    signals,
                    outcome: Err((e.clone(), m.clone())),
                }
            }
            Signal::Progress(state, _) if state == "pin-needed" => {
                let Some(pin) = answers.next() else {
                    panic!("an unexpected PIN prompt: {signals:?}");
                };
                if s.bool_detail("last_try") {
                    request.submit_last_try_pin(&pin).await.unwrap();
                } else {
                    request.submit_pin(&pin).await.unwrap();
                }
            }
            Signal::Progress(state, _) if state == "touch-needed" => {
                if let Some(key) = touch {
                    tokio::task::block_in_place(|| key.touch());
                }
            }
            Signal::Progress(..) => {}
        }
    }
}

/// StartEnrollment of `user` with `device`, followed to its end (PIN prompts answered from
/// `pins`, touches left to the key).
pub async fn enroll(
    client: &mut Client,
    user: &str,
    device: &str,
    pins: Pins,
    touch: Option<&SimKey>,
) -> Run {
    let path = client
        .start_enroll(user, device, HashMap::new())
        .await
        .unwrap_or_else(|e| panic!("StartEnrollment({user:?}, {device}): {e}"));
    follow(client, path, pins, touch).await
}

/// StartAuthentication of `user` with `options`, followed to its end.
pub async fn authenticate(
    client: &mut Client,
    user: &str,
    options: HashMap<&str, Value<'_>>,
    pins: Pins,
    touch: Option<&SimKey>,
) -> Run {
    let path = client
        .start_auth(user, options)
        .await
        .unwrap_or_else(|e| panic!("StartAuthentication({user:?}): {e}"));
    follow(client, path, pins, touch).await
}

/// Options naming one device.
pub fn on_device(device: &str) -> HashMap<&'static str, Value<'static>> {
    let path = zbus::zvariant::ObjectPath::try_from(device.to_owned()).unwrap();
    HashMap::from([("device", Value::from(path))])
}

/// The `jti` claim of a token, read from its payload (no validation: that is the daemon's).
pub fn jti(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    let claims: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON claims");
    claims["jti"].as_str().expect("jti claim").to_owned()
}

/// The Manager's TokenRevoked signals, subscribed before whatever should cause them.
pub struct Revocations {
    stream: std::pin::Pin<Box<dyn futures_util::Stream<Item = TokenRevoked> + Send>>,
}

impl Revocations {
    pub async fn subscribe(client: &Client) -> Revocations {
        let manager = ManagerProxy::new(&client.conn).await.unwrap();
        Revocations {
            stream: Box::pin(manager.receive_token_revoked().await.unwrap()),
        }
    }

    /// Waits for the TokenRevoked of `jti` and returns its reason; other tokens' are skipped.
    pub async fn reason_of(&mut self, jti: &str) -> String {
        let deadline = tokio::time::Instant::now() + REVOKE_WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("no TokenRevoked of {jti} within {REVOKE_WAIT:?}"))
                .expect("TokenRevoked stream ended");
            let args = next.args().unwrap();
            if args.jti() == &jti {
                return (*args.reason()).to_owned();
            }
        }
    }
}

/// A stack whose daemon watches for simulated HID keys (`config` after the `[device]` table),
/// one key `alpha` plugged in with `options` and published, and a client on the stack's bus.
pub async fn plugged(options: &KeyOptions, config: &str) -> (Stack, SimKey, Published, Client) {
    plugged_device(options, "", config).await
}

/// [`plugged`] with more keys of the daemon's `[device]` table.
pub async fn plugged_device(
    options: &KeyOptions,
    device_keys: &str,
    config: &str,
) -> (Stack, SimKey, Published, Client) {
    let mut stack = Stack::new();
    let key = stack.plug_key("alpha", options);
    let toml = stack.fido_config_device(device_keys, config);
    stack.start_daemon(&toml);
    let device = stack.wait_key(&key);
    let client = Client::connect(stack.bus_address()).await;
    (stack, key, device, client)
}

/// [`plugged`], and the key enrolled for root with its PIN (when it asks) and a touch; the
/// enrollment id last.
pub async fn enrolled(
    options: &KeyOptions,
    config: &str,
) -> (Stack, SimKey, Published, Client, String) {
    enrolled_device(options, "", config).await
}

/// [`enrolled`] with more keys of the daemon's `[device]` table.
pub async fn enrolled_device(
    options: &KeyOptions,
    device_keys: &str,
    config: &str,
) -> (Stack, SimKey, Published, Client, String) {
    let (stack, key, device, mut client) = plugged_device(options, device_keys, config).await;
    let touch = matches!(options.touch, TouchMode::Manual).then_some(&key);
    let run = enroll(&mut client, "", &device.path, Pins::right(), touch).await;
    let id = run.result().to_owned();
    (stack, key, device, client, id)
}
