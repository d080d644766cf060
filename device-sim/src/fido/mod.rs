//! A simulated FIDO security key at the message level: CTAP 2.1 requests (command byte ‖ CBOR in,
//! status ‖ CBOR out) and U2F raw messages (APDU in, data ‖ SW1 SW2 out), over one key with one
//! state. The transports that carry these messages (CTAPHID over a socket, NFC through vpcd) and
//! the touch sources live beside this module (simio); nothing here knows about reports or cards.
//!
//! Transports (simio): [`presence`] runs the key on its own thread and gives it user presence from
//! [`touch`]; [`ctaphid`] is the CTAPHID state machine that [`hid_socket`] serves on a Unix socket;
//! [`nfc`] is the FIDO applet that [`crate::vpcd`] inserts into a virtual reader.
//!
//! The key is non-resident only: a credential id is the credential's private key wrapped under the
//! key's master secret (see [`key`]), so the state file holds no per-credential list and a U2F key
//! handle and a CTAP2 credential id are the same thing. Independent of `tessera::fido` on purpose:
//! the daemon's codec and this authenticator are both written from the specifications, so a shared
//! misreading cannot pass every test.

mod cbor;
mod client_pin;
mod ctap2;
mod get_assertion;
mod key;
mod make_credential;
mod pin_protocol;
mod state;
mod status;
mod u2f;

pub mod ctaphid;
pub mod hid_socket;
pub mod nfc;
pub mod presence;
pub mod touch;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use client_pin::PinSession;
use state::KeyState;

/// COSE algorithm identifier of ECDSA with SHA-256 on P-256 (RFC 9053 §2.1).
pub const ALG_ES256: i64 = -7;
/// COSE algorithm identifier of EdDSA, here always Ed25519 (RFC 9053 §2.2).
pub const ALG_EDDSA: i64 = -8;

/// The AAGUID of a new key unless `--aaguid` says otherwise: "Tessera simulated" in ASCII, 16 bytes.
pub const DEFAULT_AAGUID: [u8; 16] = *b"TesseraSimFido01";

/// How a new key is personalised, and what the running key does differently.
///
/// `pin`, `retries` and `aaguid` only shape a NEW key: once a state file exists, the key it holds
/// comes back (as a real key keeps its PIN across unplugging). `u2f_only`, `algorithms` and
/// `fault` apply to every run.
#[derive(Clone)]
pub struct FidoOptions {
    /// PIN of a new key; `None` (`--no-pin`): no PIN set, `clientPin` false in getInfo.
    pub pin: Option<String>,
    /// PIN retries of a new key (CTAP 2.1 §6.5.2.2: at most 8).
    pub retries: u8,
    /// A U2F-only key (a FIDO U2F device of before CTAP2): CTAP2 requests answer
    /// CTAP1_ERR_INVALID_COMMAND and the CTAPHID layer leaves CAPABILITY_CBOR clear.
    pub u2f_only: bool,
    /// The key's AAGUID (CTAP 2.1 §6.4, getInfo 0x03; authenticatorData attested credential data).
    pub aaguid: [u8; 16],
    /// COSE algorithms the key creates credentials with, in getInfo order: [`ALG_ES256`],
    /// [`ALG_EDDSA`]. Unknown values are ignored; none left means ES256 only.
    pub algorithms: Vec<i64>,
    /// A fault to inject, for the daemon's tests.
    pub fault: Option<FidoFault>,
}

impl Default for FidoOptions {
    /// PIN "1234", 8 retries, CTAP2 and U2F, [`DEFAULT_AAGUID`], ES256 only, no fault.
    fn default() -> Self {
        FidoOptions {
            pin: Some("1234".into()),
            retries: state::MAX_PIN_RETRIES,
            u2f_only: false,
            aaguid: DEFAULT_AAGUID,
            algorithms: vec![ALG_ES256],
            fault: None,
        }
    }
}

impl std::fmt::Debug for FidoOptions {
    /// Never prints the PIN, only whether there is one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FidoOptions")
            .field("pin", &self.pin.as_ref().map(|_| "<set>"))
            .field("retries", &self.retries)
            .field("u2f_only", &self.u2f_only)
            .field("aaguid", &hex::encode(self.aaguid))
            .field("algorithms", &self.algorithms)
            .field("fault", &self.fault)
            .finish()
    }
}

/// A fault injected for the daemon's tests. The signing faults act on getAssertion and U2F
/// AUTHENTICATE (the operations that sign a challenge), not on makeCredential or REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FidoFault {
    /// The key thinks this many milliseconds before signing (after the touch).
    StallOnSign(u64),
    /// The key is pulled out instead of answering: [`FidoKey::cbor`] and [`FidoKey::u2f`] return an
    /// empty message and [`FidoKey::pulled`] turns true; the transport drops every connection and
    /// exits.
    RemoveOnSign,
    /// Each assertion (getAssertion, also the silent up=false one, and U2F AUTHENTICATE) takes the
    /// global signature counter one step down instead of up, durably, so it reports less than the
    /// key reported before: what a clone lagging behind the original looks like (WebAuthn §6.1.1,
    /// step 21 of §7.2). makeCredential still counts up.
    CounterRegression,
    /// getAssertion answers CTAP2_OK followed by CBOR that does not parse.
    MalformedCbor,
    /// CTAPHID fault (simio): a response message shorter than its announced length.
    TruncatedMessage,
    /// CTAPHID fault (simio): a response message longer than the 7609-byte CTAPHID maximum.
    OversizedMessage,
}

impl std::str::FromStr for FidoFault {
    type Err = anyhow::Error;

    /// The `--fault` spellings: `stall-on-sign=MS`, `remove-on-sign`, `counter-regression`,
    /// `malformed-cbor`, `truncated-message`, `oversized-message`.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        if let Some(ms) = s.strip_prefix("stall-on-sign=") {
            let ms = ms
                .parse()
                .map_err(|_| anyhow::anyhow!("stall-on-sign=MS needs a number of milliseconds"))?;
            return Ok(FidoFault::StallOnSign(ms));
        }
        Ok(match s {
            "remove-on-sign" => FidoFault::RemoveOnSign,
            "counter-regression" => FidoFault::CounterRegression,
            "malformed-cbor" => FidoFault::MalformedCbor,
            "truncated-message" => FidoFault::TruncatedMessage,
            "oversized-message" => FidoFault::OversizedMessage,
            _ => anyhow::bail!(
                "unknown fault {s:?} (stall-on-sign=MS, remove-on-sign, counter-regression, \
                 malformed-cbor, truncated-message, oversized-message)"
            ),
        })
    }
}

/// What came of waiting for the user's touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// The user touched the key: user presence (CTAP 2.1 §6.1.2 "up").
    Touched,
    /// The platform cancelled (CTAPHID_CANCEL, CTAP 2.1 §11.2.9.1.5): CTAP2_ERR_KEEPALIVE_CANCEL.
    Cancelled,
    /// Nobody touched in time: CTAP2_ERR_USER_ACTION_TIMEOUT.
    TimedOut,
}

/// The key's touch sensor, as the transport sees it.
pub trait Presence {
    /// Blocks until the user touches (CTAP2 UP), the transport sees a cancel, or 30 s pass; the
    /// transport sends KEEPALIVE UPNEEDED meanwhile.
    fn wait_for_touch(&mut self) -> Touch;
    /// U2F: whether a touch is pending now (consumed if so); no waiting (6985 otherwise).
    fn touched_now(&mut self) -> bool;
}

/// How long after power-up authenticatorReset is allowed (CTAP 2.1 §6.6: "within 10 seconds").
const RESET_WINDOW: Duration = Duration::from_secs(10);

/// The simulated key: its durable state, the state file it is saved to, and what a power cycle
/// forgets (the PIN protocol session).
pub struct FidoKey {
    state: KeyState,
    path: Option<PathBuf>,
    options: FidoOptions,
    pin: PinSession,
    powered_at: Instant,
    pulled: bool,
}

impl FidoKey {
    /// The key kept in `state` (created 0600 with `options` if missing): the same key comes back on
    /// every later start, with its PIN, retries, counter and master secret.
    pub fn open(state: &Path, options: FidoOptions) -> anyhow::Result<FidoKey> {
        let key_state = if state.exists() {
            KeyState::load(state)?
        } else {
            let new = KeyState::new(&options)?;
            new.save(state)?;
            new
        };
        Ok(FidoKey::with_state(
            key_state,
            Some(state.to_path_buf()),
            options,
        ))
    }

    /// A key that lives only as long as this value (tests). The PIN is taken as given, without the
    /// length policy that [`FidoKey::open`] applies, so tests can set up odd keys.
    pub fn in_memory(options: FidoOptions) -> FidoKey {
        let key_state = KeyState::new_unchecked(&options);
        FidoKey::with_state(key_state, None, options)
    }

    fn with_state(state: KeyState, path: Option<PathBuf>, mut options: FidoOptions) -> FidoKey {
        let mut seen = Vec::new();
        options.algorithms.retain(|a| {
            let keep = (*a == ALG_ES256 || *a == ALG_EDDSA) && !seen.contains(a);
            seen.push(*a);
            keep
        });
        if options.algorithms.is_empty() {
            options.algorithms.push(ALG_ES256);
        }
        FidoKey {
            state,
            path,
            options,
            pin: PinSession::new(),
            powered_at: Instant::now(),
            pulled: false,
        }
    }

    /// One CTAP2 request, command byte ‖ CBOR parameters (CTAP 2.1 §8), answered with status byte ‖
    /// CBOR response. Empty when the key was pulled out ([`FidoFault::RemoveOnSign`]).
    pub fn cbor(&mut self, request: &[u8], presence: &mut dyn Presence) -> Vec<u8> {
        if self.pulled {
            return Vec::new();
        }
        ctap2::dispatch(self, request, presence)
    }

    /// One U2F request APDU (U2F raw message formats §2.4), answered with data ‖ SW1 SW2. Empty when
    /// the key was pulled out.
    pub fn u2f(&mut self, apdu: &[u8], presence: &mut dyn Presence) -> Vec<u8> {
        if self.pulled {
            return Vec::new();
        }
        u2f::dispatch(self, apdu, presence)
    }

    /// Unplugging and plugging in again: a new key-agreement key, no pinUvAuthToken, the
    /// three-wrong-PINs block (PIN_AUTH_BLOCKED) cleared, the reset window open again
    /// (CTAP 2.1 §6.5.5.1, §6.6).
    pub fn power_cycle(&mut self) {
        self.pin = PinSession::new();
        self.powered_at = Instant::now();
    }

    /// Whether the key answers CTAP2 (CTAPHID CAPABILITY_CBOR; the NFC applet's "FIDO_2_0").
    pub fn speaks_cbor(&self) -> bool {
        !self.options.u2f_only
    }

    /// The injected fault, for the transport's own faults and for [`FidoFault::RemoveOnSign`].
    pub fn fault(&self) -> Option<&FidoFault> {
        self.options.fault.as_ref()
    }

    /// Whether the key has been pulled out by [`FidoFault::RemoveOnSign`]: the transport drops
    /// every connection and exits.
    pub fn pulled(&self) -> bool {
        self.pulled
    }

    /// The global signature counter as last used.
    pub fn sign_count(&self) -> u32 {
        self.state.counter()
    }

    /// PIN retries left.
    pub fn pin_retries(&self) -> u8 {
        self.state.pin_retries()
    }

    /// The AAGUID this key reports.
    pub fn aaguid(&self) -> [u8; 16] {
        self.state.aaguid()
    }

    /// Writes the state file after a change (no-op in memory). A failure is the key's memory
    /// failing: CTAP1_ERR_OTHER.
    fn persist(&self) -> Result<(), status::Status> {
        self.save_with(KeyState::save)
    }

    /// Writes the state file after the signature counter moved: in place, without waiting for
    /// the disk ([`KeyState::save_counter`]).
    fn persist_counter(&self) -> Result<(), status::Status> {
        self.save_with(KeyState::save_counter)
    }

    fn save_with(
        &self,
        save: impl Fn(&KeyState, &Path) -> anyhow::Result<()>,
    ) -> Result<(), status::Status> {
        match &self.path {
            Some(path) => save(&self.state, path).map_err(|e| {
                tracing::error!("saving the key state: {e:#}");
                status::Status::OTHER
            }),
            None => Ok(()),
        }
    }

    /// Tests: the key was plugged in `ago` before now.
    #[cfg(test)]
    fn pretend_powered_up(&mut self, ago: Duration) {
        if let Some(then) = Instant::now().checked_sub(ago) {
            self.powered_at = then;
        }
    }

    fn in_reset_window(&self) -> bool {
        self.powered_at.elapsed() <= RESET_WINDOW
    }

    fn stall_before_signing(&self) {
        if let Some(FidoFault::StallOnSign(ms)) = self.options.fault {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }

    /// [`FidoFault::RemoveOnSign`]: the key disappears at the moment it would sign.
    fn pull_if_removed_on_sign(&mut self) -> bool {
        if self.options.fault == Some(FidoFault::RemoveOnSign) {
            self.pulled = true;
        }
        self.pulled
    }
}

impl std::fmt::Debug for FidoKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FidoKey")
            .field("state", &self.state)
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod cbor_test;
#[cfg(test)]
mod client_pin_test;
#[cfg(test)]
mod ctap2_test;
#[cfg(test)]
mod ctaphid_test;
#[cfg(test)]
mod get_assertion_test;
#[cfg(test)]
mod hid_socket_test;
#[cfg(test)]
mod make_credential_test;
#[cfg(test)]
mod nfc_test;
#[cfg(test)]
mod platform_test;
#[cfg(test)]
mod presence_test;
#[cfg(test)]
mod u2f_test;
