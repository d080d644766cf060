//! The FIDO security key as an [`Authenticator`]: identification by getInfo (or the U2F version),
//! enrollment by makeCredential (or U2F REGISTER), the silent pre-flight that tells which enrolled
//! credentials a key holds, choosing a key by touch, and assertions verified against the enrolled
//! key (CTAP 2.1 §6; CTAP1/U2F raw messages §4-5).
//!
//! This file holds the type, its constructors and the one path to the key (`with_link`: one
//! operation on the device's worker thread, keepalives turned into progress); each operation
//! lives in a sibling of its own: `authenticator_identify` (getInfo, what the key can do),
//! `authenticator_pin` (how the user is verified, the PIN loop and its guard),
//! `authenticator_enroll`, `authenticator_assert` (holds, select, assert), `authenticator_u2f`
//! (CTAP1 keys) and `authenticator_ctap` (the codec's commands as these flows use them).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::authenticator_identify::KeyInfo;
use super::link::{CtapLink, Keepalive, LinkContext};
use super::nfc::NfcLink;
use crate::authenticator::{
    Assertion, Authenticator, BoxFuture, DeviceIdentity, EnrollRequest, Enrollable,
    EnrolledCredential, EnrolledKey, Interaction, Progress,
};
use crate::cancel::CancelToken;
use crate::locks::lock;
use crate::transport::worker::{DeviceWorker, HidWorker};
use crate::transport::CardTransport;
use crate::verify::challenge::Challenge;
use crate::{Error, Result};

/// A present FIDO key, over USB HID (CTAPHID) or as a card (the FIDO applet over NFC or contacts).
pub struct FidoAuthenticator {
    connection: Connection,
    device_id: String,
    /// What getInfo said at identification; read again on first use when identification did not run.
    info: Mutex<Option<KeyInfo>>,
    /// Whether the key holds a credential (by stored credential reference), for this insertion:
    /// the silent pre-flight is asked once per credential, not once per request.
    held: Mutex<HashMap<String, bool>>,
}

/// How the key is reached.
enum Connection {
    /// A CTAPHID session on the key's own worker thread.
    Hid(HidWorker),
    /// A card connection: the FIDO applet is selected inside each operation (NFCCTAP, §11.3).
    Card(DeviceWorker),
}

/// What the user is asked for while the key sends KEEPALIVE UPNEEDED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Waiting {
    /// No one: a silent operation (identify, holds) never waits for the user.
    Nobody,
    /// A touch (user presence).
    Touch,
    /// The key's built-in user verification (getPinUvAuthTokenUsingUvWithPermissions).
    Uv,
}

/// One operation's frame: whose share of the device it uses, how long it may take, its cancel
/// token and where progress goes.
pub(super) struct Call<'a> {
    pub(super) uid: u32,
    pub(super) timeout: Duration,
    pub(super) cancel: CancelToken,
    pub(super) ix: Option<&'a dyn Interaction>,
    pub(super) waiting: Waiting,
}

impl<'a> Call<'a> {
    /// An operation for the request `ix`, telling it when the key waits for `waiting`.
    pub(super) fn of(ix: &'a dyn Interaction, waiting: Waiting) -> Call<'a> {
        Call {
            uid: ix.uid(),
            timeout: ix.op_timeout(),
            cancel: ix.cancel().clone(),
            ix: Some(ix),
            waiting,
        }
    }

    /// An operation outside any request (identification, the holds pre-flight).
    pub(super) fn silent(uid: u32, timeout: Duration) -> Call<'static> {
        Call {
            uid,
            timeout,
            cancel: CancelToken::new(),
            ix: None,
            waiting: Waiting::Nobody,
        }
    }
}

impl FidoAuthenticator {
    /// The USB HID key behind `worker`, published as device `device_id`.
    pub fn over_hid(worker: HidWorker, device_id: String) -> Self {
        Self::new(Connection::Hid(worker), device_id)
    }

    /// The FIDO applet of the card behind `worker` (contactless, or contact where the card offers
    /// it), published as device `device_id`.
    pub fn over_card(worker: DeviceWorker, device_id: String) -> Self {
        Self::new(Connection::Card(worker), device_id)
    }

    fn new(connection: Connection, device_id: String) -> Self {
        FidoAuthenticator {
            connection,
            device_id,
            info: Mutex::new(None),
            held: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn device_id(&self) -> &str {
        &self.device_id
    }

    pub(super) fn cached_info(&self) -> Option<KeyInfo> {
        lock(&self.info).clone()
    }

    pub(super) fn remember_info(&self, info: &KeyInfo) {
        *lock(&self.info) = Some(info.clone());
    }

    pub(super) fn held(&self, credential: &str) -> Option<bool> {
        lock(&self.held).get(credential).copied()
    }

    pub(super) fn remember_held(&self, credential: &str, held: bool) {
        lock(&self.held).insert(credential.to_owned(), held);
    }

    pub(super) fn working(&self, ix: &dyn Interaction) {
        ix.progress(Progress::Working {
            device: self.device_id.clone(),
        });
    }

    /// Runs `op` with a session to the key on its worker thread, under `call`'s share, timeout and
    /// cancel token. `op` gets the link and the context each exchange needs (the cancel flag, the
    /// deadline, the keepalive sink); KEEPALIVE UPNEEDED becomes `call.waiting`'s progress while
    /// this waits. A cancelled call returns [`Error::Cancelled`] at once, whether or not the key
    /// heeds the link's cancel.
    ///
    /// `op` may run more than once for a card that another application reset before the exchange
    /// began (the card connection runs it again on a fresh session): it must not spend its inputs.
    pub(super) async fn with_link<R, F>(&self, call: Call<'_>, mut op: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut dyn CtapLink, &mut LinkContext<'_>) -> Result<R> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Keepalive>();
        let cancel = call.cancel.clone();
        let timeout = call.timeout;
        // From now, not from when the worker starts the job: the link gives up (and tells the key,
        // CTAPHID_CANCEL) no later than the caller stops waiting for it.
        let deadline = Instant::now() + timeout;
        let session = move |link: &mut dyn CtapLink| {
            let mut keepalive = |k: Keepalive| {
                // The async side may have stopped listening (cancelled, timed out): nothing to do.
                let _ = tx.send(k);
            };
            let mut ctx = LinkContext {
                cancel: &cancel,
                deadline,
                keepalive: &mut keepalive,
            };
            op(link, &mut ctx)
        };
        let progress = self.progressing(&call, &mut rx);
        match &self.connection {
            Connection::Hid(worker) => {
                let work = worker.run_with(call.uid, timeout, &call.cancel, move |link| {
                    let mut session = session;
                    session(link)
                });
                race(work, progress).await
            }
            Connection::Card(worker) => {
                let mut session = session;
                // Identification learned whether the key speaks CTAP2; SELECT need not ask again.
                let speaks_cbor = lock(&self.info).as_ref().map(|i| !i.u2f_only);
                let in_session = move |card: &mut dyn CardTransport| {
                    let mut link = NfcLink::select_knowing(card, speaks_cbor)?;
                    session(&mut link)
                };
                let work =
                    worker.run_cancellable_for(call.uid, timeout, &call.cancel, in_session, |_| {});
                race(work, progress).await
            }
        }
    }

    /// Turns keepalives into progress; never ends (the operation's end ends [`race`]).
    async fn progressing(
        &self,
        call: &Call<'_>,
        rx: &mut mpsc::UnboundedReceiver<Keepalive>,
    ) -> Infallible {
        let mut shown = false;
        while let Some(k) = rx.recv().await {
            if k != Keepalive::UpNeeded || shown {
                continue;
            }
            let Some(ix) = call.ix else { continue };
            let device = self.device_id.clone();
            match call.waiting {
                Waiting::Nobody => continue,
                Waiting::Touch => ix.progress(Progress::TouchNeeded { device }),
                Waiting::Uv => ix.progress(Progress::UvNeeded { device }),
            }
            shown = true;
        }
        // Closed: the operation ended, and `race` takes its result.
        std::future::pending().await
    }
}

/// `work`'s result, with `side` (progress reporting, which never ends) driven meanwhile.
async fn race<R>(
    work: impl std::future::Future<Output = Result<R>>,
    side: impl std::future::Future<Output = Infallible>,
) -> Result<R> {
    tokio::select! {
        r = work => r,
        never = side => match never {},
    }
}

impl Authenticator for FidoAuthenticator {
    fn kind(&self) -> &'static str {
        "fido"
    }

    fn methods(&self, needs_secret: bool) -> Vec<String> {
        self.amr(needs_secret)
    }

    fn identify(&self, timeout: Duration) -> BoxFuture<'_, Result<DeviceIdentity>> {
        Box::pin(self.identify_key(timeout))
    }

    fn enrollable(&self, requested: Option<&str>) -> Result<Enrollable> {
        match requested {
            None | Some("new") => Ok(Enrollable {
                credential: "new".into(),
                // Decided at enrollment, from the policy and what the key can do.
                needs_secret: false,
            }),
            Some(other) => Err(Error::InvalidArgument(format!(
                "a FIDO key enrolls a new credential (\"new\"), not {other:?}"
            ))),
        }
    }

    fn enroll<'a>(
        &'a self,
        request: EnrollRequest<'a>,
        interaction: &'a dyn Interaction,
    ) -> BoxFuture<'a, Result<EnrolledCredential>> {
        Box::pin(self.enroll_credential(request, interaction))
    }

    fn holds<'a>(
        &'a self,
        _identity: &'a DeviceIdentity,
        enrolled: &'a [EnrolledKey<'a>],
        uid: u32,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(self.held_credentials(enrolled, uid, timeout))
    }

    fn selectable(&self) -> bool {
        self.cached_info().is_some_and(|i| i.ctap21())
    }

    fn select<'a>(&'a self, interaction: &'a dyn Interaction) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.select_by_touch(interaction))
    }

    fn assert<'a>(
        &'a self,
        challenge: &'a Challenge,
        enrolled: EnrolledKey<'a>,
        interaction: &'a dyn Interaction,
    ) -> BoxFuture<'a, Result<Assertion>> {
        Box::pin(self.assert_credential(challenge, enrolled, interaction))
    }

    fn unblock<'a>(&'a self, _interaction: &'a dyn Interaction) -> BoxFuture<'a, Result<()>> {
        Box::pin(async {
            Err(Error::InvalidArgument(
                "a FIDO key's PIN cannot be unblocked (FIDO has no PUK); reset the key with its \
                 vendor's tool, which deletes its credentials, and enroll it again"
                    .into(),
            ))
        })
    }
}
