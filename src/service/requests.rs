//! Live requests (authentication, enrollment, unblock) as the caller sees them: ids, the per-caller
//! limit, the update stream (progress, then exactly one terminal update), answering prompts and
//! cancel. The flows themselves live in `authenticate.rs`, `enroll.rs` and `unblock.rs`; what an
//! authenticator sees of a request is `request_interaction.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use crate::authenticator::{Progress, SecretAnswer};
use crate::cancel::CancelToken;
use crate::locks::lock;
use crate::secret::Secret;
use crate::{Error, Result};

/// Live requests one caller uid may hold at once; more are refused ([`Error::Busy`]).
pub const MAX_LIVE_REQUESTS_PER_CALLER: usize = 4;

/// Options of [`super::Service::start_authentication`].
#[derive(Debug)]
pub struct AuthRequest {
    /// A device id to use instead of the present device enrolled for the user.
    pub device: Option<String>,
    /// Device kinds to consider ("piv"); all when `None`.
    pub kinds: Option<Vec<String>>,
    /// The PIN given up front.
    pub pin: Option<Secret>,
    /// Wait for an enrolled device to be inserted (and for several to become one).
    pub wait: bool,
    /// Cap on the whole request.
    pub timeout: Option<Duration>,
    /// The `aud` of the token, instead of `[token] audience` (PAM asks for "pam:SERVICE").
    pub audience: Option<String>,
    /// Greeter login: no user is named (`user` is ""); the user is the one account the present
    /// device holds an enrollment of (administrators only; UserAmbiguous if it holds several).
    pub any_user: bool,
}

impl Default for AuthRequest {
    fn default() -> Self {
        AuthRequest {
            device: None,
            kinds: None,
            pin: None,
            wait: true,
            timeout: None,
            audience: None,
            any_user: false,
        }
    }
}

/// Options of [`super::Service::start_enrollment`].
#[derive(Debug, Default)]
pub struct EnrollRequest {
    /// The PIN given up front.
    pub pin: Option<Secret>,
    /// The credential to enroll (PIV: slot "9a", the default, or "9e").
    pub credential: Option<String>,
    /// Cap on the whole request.
    pub timeout: Option<Duration>,
}

/// Options of [`super::Service::start_unblock`].
#[derive(Debug, Default)]
pub struct UnblockRequest {
    /// The PUK given up front.
    pub puk: Option<Secret>,
    /// The new PIN given up front.
    pub new_pin: Option<Secret>,
    /// Cap on the whole request.
    pub timeout: Option<Duration>,
}

/// What a request reports.
#[derive(Debug)]
pub enum Update {
    /// A new state.
    Progress(Progress),
    /// Done: the token, or the enrollment id (empty for an unblock).
    Completed(Zeroizing<String>),
    /// Failed.
    Failed(Error),
}

/// A started request: its handle and its updates. The first update is the progress in force when
/// the request was started; exactly one terminal update comes, always last.
#[derive(Debug)]
pub struct Request {
    /// Answers prompts, cancels.
    pub handle: RequestHandle,
    /// Progress, then Completed or Failed.
    pub updates: mpsc::UnboundedReceiver<Update>,
}

impl Request {
    /// Waits for the terminal update.
    pub async fn outcome(mut self) -> Result<Zeroizing<String>> {
        while let Some(u) = self.updates.recv().await {
            match u {
                Update::Progress(_) => {}
                Update::Completed(v) => return Ok(v),
                Update::Failed(e) => return Err(e),
            }
        }
        Err(Error::Internal("a request ended without an outcome".into()))
    }
}

/// Handle to a live request. Cheap to clone.
#[derive(Clone)]
pub struct RequestHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RequestHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestHandle({})", self.shared.id)
    }
}

/// The state one request's handle and flow share.
pub(super) struct Shared {
    id: u64,
    uid: u32,
    cancel: CancelToken,
    /// End of the request's own cap, if it has one.
    deadline: Option<tokio::time::Instant>,
    state: Mutex<State>,
    updates: mpsc::UnboundedSender<Update>,
    /// Where the request is counted, if it is.
    registry: Option<Arc<Registry>>,
}

struct State {
    progress: Progress,
    done: bool,
    /// Where the answer to the prompt shown goes: the secret, and whether it spends a last try.
    waiting: Option<oneshot::Sender<(Secret, bool)>>,
}

impl RequestHandle {
    /// Unique per daemon run, never reused.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The caller uid that started the request.
    pub fn uid(&self) -> u32 {
        self.shared.uid
    }

    /// The current state's name ("pin-needed", ...).
    pub fn state(&self) -> &'static str {
        lock(&self.shared.state).progress.state()
    }

    /// The current progress.
    pub fn progress(&self) -> Progress {
        lock(&self.shared.state).progress.clone()
    }

    /// Answers "pin-needed", "puk-needed" or "new-pin-needed".
    ///
    /// Errors: [`Error::InvalidArgument`] when the request is not waiting for a secret;
    /// [`Error::PinWouldBlock`] when the prompt is a last try (the request stays waiting: use
    /// [`RequestHandle::submit_last_try_pin`]); [`Error::PinFormat`] when the secret's length is
    /// outside the prompt's bounds (the request stays waiting).
    pub fn submit_pin(&self, s: Secret) -> Result<()> {
        self.submit(s, false)
    }

    /// Answers a last-try prompt, spending the last try deliberately.
    pub fn submit_last_try_pin(&self, s: Secret) -> Result<()> {
        self.submit(s, true)
    }

    /// Ends the request with [`Error::Cancelled`]; idempotent. No device operation runs for it
    /// afterwards.
    pub fn cancel(&self) {
        self.shared.cancel.cancel();
        self.shared.finish(Update::Failed(Error::Cancelled));
    }

    fn submit(&self, s: Secret, last_try: bool) -> Result<()> {
        let mut st = lock(&self.shared.state);
        let waiting = !st.done && st.waiting.is_some();
        let Some(prompt) = st.progress.prompt().filter(|_| waiting).cloned() else {
            return Err(Error::InvalidArgument(
                "the request is not waiting for a secret".into(),
            ));
        };
        if prompt.last_try && !last_try {
            return Err(Error::PinWouldBlock { retries: 1 });
        }
        let len = s.expose().len();
        if len == 0 {
            return Err(Error::PinFormat("empty"));
        }
        if len < prompt.min_length as usize {
            return Err(Error::PinFormat("shorter than the device accepts"));
        }
        if len > prompt.max_length as usize {
            return Err(Error::PinFormat("longer than the device accepts"));
        }
        if let Some(tx) = st.waiting.take() {
            // The flow stopped waiting (timeout, cancel) only when it also ends the request.
            let _ = tx.send((s, last_try));
        }
        Ok(())
    }
}

impl Shared {
    pub(super) fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    pub(super) fn uid(&self) -> u32 {
        self.uid
    }

    /// `wait`, capped by the time left to the request.
    pub(super) fn capped(&self, wait: Duration) -> Duration {
        match self.deadline {
            Some(d) => wait.min(d.saturating_duration_since(tokio::time::Instant::now())),
            None => wait,
        }
    }

    /// Reports a new state (an equal one again is not repeated). Nothing after the terminal update.
    pub(super) fn progress(&self, p: Progress) {
        let mut st = lock(&self.state);
        if st.done || st.progress == p {
            return;
        }
        st.progress = p.clone();
        let _ = self.updates.send(Update::Progress(p));
    }

    /// Sends the terminal update unless one was sent; returns whether this one was.
    pub(super) fn finish(&self, u: Update) -> bool {
        {
            let mut st = lock(&self.state);
            if st.done {
                return false;
            }
            st.done = true;
            st.waiting = None;
            let _ = self.updates.send(u);
        }
        if let Some(r) = &self.registry {
            r.release(self.uid);
        }
        true
    }

    /// Sends the flow's outcome as the terminal update; returns whether it was the terminal one
    /// (not after a cancel or the request's timeout).
    pub(super) fn conclude(&self, result: Result<Zeroizing<String>>) -> bool {
        self.finish(match result {
            Ok(v) => Update::Completed(v),
            Err(e) => Update::Failed(e),
        })
    }

    /// Shows `progress` (a `*-needed` state) and waits at most `wait` for the answer.
    ///
    /// Errors: [`Error::Timeout`], [`Error::Cancelled`].
    pub(super) async fn ask(&self, progress: Progress, wait: Duration) -> Result<SecretAnswer> {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = lock(&self.state);
            if st.done {
                return Err(Error::Cancelled);
            }
            st.waiting = Some(tx);
        }
        self.progress(progress);
        let answer = tokio::select! {
            r = tokio::time::timeout(wait, rx) => match r {
                Ok(Ok(a)) => Ok(a),
                Ok(Err(_)) => Err(Error::Cancelled),
                Err(_) => Err(Error::Timeout {
                    what: "no answer to the prompt came",
                    after: wait,
                }),
            },
            () = self.cancel.cancelled() => Err(Error::Cancelled),
        };
        lock(&self.state).waiting = None;
        let (secret, spend_last_try) = answer?;
        Ok(SecretAnswer {
            secret,
            spend_last_try,
            accepted: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl super::Service {
    /// A request working on `device` from the start (enrollment, unblock).
    pub(super) fn open_request_on(
        &self,
        device: &super::devices::Device,
        caller: super::Caller,
        timeout: Option<Duration>,
        interactive: bool,
    ) -> Result<(Arc<Shared>, Request)> {
        let first = Progress::Working {
            device: device.info.id.clone(),
        };
        self.inner
            .requests
            .open(caller.uid, first, timeout, interactive)
    }
}

/// A service handle that does not keep the service alive: a flow gives up its [`super::Service`]
/// before its terminal update, so that a caller who drops the service on the outcome (a test, a
/// daemon shutting down) finds its state directory free.
pub(super) struct WeakService(std::sync::Weak<super::Inner>);

impl WeakService {
    pub(super) fn new(svc: &super::Service) -> Self {
        WeakService(Arc::downgrade(&svc.inner))
    }

    pub(super) fn upgrade(&self) -> Option<super::Service> {
        self.0.upgrade().map(|inner| super::Service { inner })
    }
}

/// The live requests' ids and per-caller counts.
#[derive(Default)]
pub(super) struct Registry {
    next_id: AtomicU64,
    live: Mutex<HashMap<u32, usize>>,
}

impl Registry {
    /// A new request for `uid` showing `first`, with an optional cap on its whole life.
    /// `interactive` requests count toward [`MAX_LIVE_REQUESTS_PER_CALLER`]; a non-interactive one
    /// (a v1 call) never waits for a device or a person, and its device work is bounded by the
    /// caller's places on the device ([`crate::transport::worker::MAX_PER_CALLER`]) as before.
    ///
    /// Errors: [`Error::Busy`] when `uid` already has [`MAX_LIVE_REQUESTS_PER_CALLER`] live ones.
    pub(super) fn open(
        self: &Arc<Self>,
        uid: u32,
        first: Progress,
        timeout: Option<Duration>,
        interactive: bool,
    ) -> Result<(Arc<Shared>, Request)> {
        if interactive {
            let mut live = lock(&self.live);
            let n = live.entry(uid).or_insert(0);
            if *n >= MAX_LIVE_REQUESTS_PER_CALLER {
                return Err(Error::Busy(format!(
                    "uid {uid} already has {MAX_LIVE_REQUESTS_PER_CALLER} live requests; cancel \
                     one or wait for it to end"
                )));
            }
            *n += 1;
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(Update::Progress(first.clone()));
        let shared = Arc::new(Shared {
            id,
            uid,
            cancel: CancelToken::new(),
            deadline: timeout.map(|t| tokio::time::Instant::now() + t),
            state: Mutex::new(State {
                progress: first,
                done: false,
                waiting: None,
            }),
            updates: tx,
            registry: interactive.then(|| Arc::clone(self)),
        });
        if let Some(t) = timeout {
            // The cap ends the request at once, wherever its flow is; the flow sees the cancel.
            let weak = Arc::downgrade(&shared);
            tokio::spawn(async move {
                tokio::time::sleep(t).await;
                if let Some(s) = weak.upgrade() {
                    s.cancel.cancel();
                    s.finish(Update::Failed(Error::Timeout {
                        what: "the request did not finish",
                        after: t,
                    }));
                }
            });
        }
        let handle = RequestHandle {
            shared: Arc::clone(&shared),
        };
        Ok((
            shared,
            Request {
                handle,
                updates: rx,
            },
        ))
    }

    fn release(&self, uid: u32) {
        let mut live = lock(&self.live);
        if let Some(n) = live.get_mut(&uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                live.remove(&uid);
            }
        }
    }
}
