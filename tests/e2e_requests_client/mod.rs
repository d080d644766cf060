//! The client side of the request tests: one bus connection that starts requests and reads their
//! signals in the order the bus delivered them. Shared by `tests/e2e_requests*.rs`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tessera_client::{ManagerProxy as RequestsProxy, RequestProxy};
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};
use zbus::{Connection, MatchRule, MessageStream};

/// Upper bound of a wait for one signal.
pub const SIGNAL_WAIT: Duration = Duration::from_secs(20);
/// The Request interface.
pub const REQUEST_IFACE: &str = "org.tessera.Tessera1.Request";
/// Parent of the request objects.
pub const REQUESTS_PATH: &str = "/org/tessera/Tessera1/requests";

/// A signal of a request, as received.
#[derive(Debug, Clone)]
pub enum Signal {
    Progress(String, HashMap<String, OwnedValue>),
    Completed(String),
    Failed(String, String),
}

impl Signal {
    /// The state of a Progress, "Completed" or "Failed".
    pub fn name(&self) -> &str {
        match self {
            Signal::Progress(s, _) => s,
            Signal::Completed(_) => "Completed",
            Signal::Failed(..) => "Failed",
        }
    }

    /// A detail of a Progress (panics on other signals or a missing key).
    pub fn detail(&self, key: &str) -> &OwnedValue {
        match self {
            Signal::Progress(_, d) => d
                .get(key)
                .unwrap_or_else(|| panic!("no detail {key:?} in {self:?}")),
            other => panic!("not a Progress: {other:?}"),
        }
    }

    pub fn has_detail(&self, key: &str) -> bool {
        matches!(self, Signal::Progress(_, d) if d.contains_key(key))
    }

    pub fn u32_detail(&self, key: &str) -> u32 {
        u32::try_from(self.detail(key)).unwrap()
    }

    pub fn bool_detail(&self, key: &str) -> bool {
        bool::try_from(self.detail(key)).unwrap()
    }

    pub fn str_detail(&self, key: &str) -> String {
        match &**self.detail(key) {
            Value::Str(s) => s.as_str().to_owned(),
            Value::ObjectPath(p) => p.as_str().to_owned(),
            other => panic!("{key} is not a string: {other:?}"),
        }
    }
}

/// One connection to the test bus, listening to the Request signals sent to it.
pub struct Client {
    pub conn: Connection,
    signals: MessageStream,
    /// Signals read from the stream that belong to another request than the one waited for.
    pending: Vec<(OwnedObjectPath, Signal)>,
}

impl Client {
    /// Connects to `address`; the stream listens before any request is started, so no signal sent
    /// right after a Start* reply is missed.
    pub async fn connect(address: &str) -> Client {
        let conn = zbus::connection::Builder::address(address)
            .unwrap()
            .build()
            .await
            .unwrap();
        let rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface(REQUEST_IFACE)
            .unwrap()
            .build();
        let signals = MessageStream::for_match_rule(rule, &conn, Some(1024))
            .await
            .unwrap();
        Client {
            conn,
            signals,
            pending: Vec::new(),
        }
    }

    pub async fn manager(&self) -> RequestsProxy<'static> {
        RequestsProxy::new(&self.conn).await.unwrap()
    }

    pub async fn request(&self, path: &OwnedObjectPath) -> RequestProxy<'static> {
        RequestProxy::builder(&self.conn)
            .path(path.clone())
            .unwrap()
            .build()
            .await
            .unwrap()
    }

    /// StartAuthentication(user, options).
    pub async fn start_auth(
        &self,
        user: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath> {
        self.manager()
            .await
            .start_authentication(user, options)
            .await
    }

    /// StartEnrollment(user, device, options).
    pub async fn start_enroll(
        &self,
        user: &str,
        device: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath> {
        let device = ObjectPath::try_from(device).unwrap();
        self.manager()
            .await
            .start_enrollment(user, &device, options)
            .await
    }

    /// StartUnblock(device, options).
    pub async fn start_unblock(
        &self,
        device: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath> {
        let device = ObjectPath::try_from(device).unwrap();
        self.manager().await.start_unblock(&device, options).await
    }

    /// The next signal of request `path`; panics after [`SIGNAL_WAIT`].
    pub async fn next(&mut self, path: &OwnedObjectPath) -> Signal {
        self.next_within(path, SIGNAL_WAIT)
            .await
            .unwrap_or_else(|| panic!("no signal of {} within {SIGNAL_WAIT:?}", path.as_str()))
    }

    /// The next signal of request `path`, if one arrives within `wait`.
    pub async fn next_within(&mut self, path: &OwnedObjectPath, wait: Duration) -> Option<Signal> {
        if let Some(i) = self.pending.iter().position(|(p, _)| p == path) {
            return Some(self.pending.remove(i).1);
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = match tokio::time::timeout(left, self.signals.next()).await {
                Ok(Some(m)) => m.unwrap(),
                Ok(None) => panic!("signal stream ended"),
                Err(_) => return None,
            };
            let Some((from, signal)) = parse(&msg) else {
                continue;
            };
            if &from == path {
                return Some(signal);
            }
            self.pending.push((from, signal));
        }
    }

    /// The next signal of `path` that is not a "working" Progress (which may come between prompts).
    pub async fn next_after_work(&mut self, path: &OwnedObjectPath) -> Signal {
        loop {
            let s = self.next(path).await;
            if s.name() != "working" {
                return s;
            }
        }
    }

    /// Every Request signal delivered to this connection so far (read without waiting beyond a
    /// round trip to the daemon, which orders everything it sent before its reply).
    pub async fn drain(&mut self) -> Vec<(OwnedObjectPath, Signal)> {
        let peer = zbus::fdo::PeerProxy::builder(&self.conn)
            .destination("org.tessera.Tessera1")
            .unwrap()
            .path("/org/tessera/Tessera1/Manager")
            .unwrap()
            .build()
            .await
            .unwrap();
        peer.ping().await.unwrap();
        let mut all = std::mem::take(&mut self.pending);
        while let Ok(Some(Ok(msg))) =
            tokio::time::timeout(Duration::from_millis(50), self.signals.next()).await
        {
            if let Some(s) = parse(&msg) {
                all.push(s);
            }
        }
        all
    }
}

fn parse(msg: &zbus::Message) -> Option<(OwnedObjectPath, Signal)> {
    let header = msg.header();
    if header.interface().map(|i| i.as_str()) != Some(REQUEST_IFACE) {
        return None;
    }
    let path = OwnedObjectPath::from(header.path()?.to_owned());
    let signal = match header.member()?.as_str() {
        "Progress" => {
            let (state, details): (String, HashMap<String, OwnedValue>) =
                msg.body().deserialize().unwrap();
            Signal::Progress(state, details)
        }
        "Completed" => Signal::Completed(msg.body().deserialize().unwrap()),
        "Failed" => {
            let (e, m): (String, String) = msg.body().deserialize().unwrap();
            Signal::Failed(e, m)
        }
        _ => return None,
    };
    Some((path, signal))
}

/// The D-Bus error name and message of a failed call.
pub fn error_name<T: std::fmt::Debug>(r: zbus::Result<T>) -> (String, String) {
    match r {
        Err(zbus::Error::MethodError(name, msg, _)) => {
            (name.as_str().to_owned(), msg.unwrap_or_default())
        }
        Err(zbus::Error::FDO(e)) => {
            use zbus::DBusError as _;
            (
                e.name().as_str().to_owned(),
                e.description().unwrap_or_default().to_owned(),
            )
        }
        other => panic!("expected a D-Bus error, got {other:?}"),
    }
}

/// Whether the request object at `path` is still exported (asked with Introspect of its parent).
pub async fn exported(conn: &Connection, path: &OwnedObjectPath) -> bool {
    let id = path.as_str().rsplit('/').next().unwrap();
    let intro = zbus::fdo::IntrospectableProxy::builder(conn)
        .destination("org.tessera.Tessera1")
        .unwrap()
        .path(REQUESTS_PATH)
        .unwrap()
        .build()
        .await
        .unwrap();
    match intro.introspect().await {
        Ok(xml) => xml.contains(&format!("<node name=\"{id}\"")),
        Err(_) => false,
    }
}

/// The simulated card's state file (`tessera-sim --state`), as JSON.
pub fn card_state(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The card's PIN retry counter, as the simulator keeps it.
pub fn pin_retries_left(card: &std::path::Path) -> u64 {
    card_state(card)["pin_retries_left"].as_u64().unwrap()
}

/// Options with the PIN given up front.
pub fn with_pin(pin: &str) -> HashMap<&'static str, Value<'static>> {
    HashMap::from([("pin", Value::from(pin.to_owned()))])
}
