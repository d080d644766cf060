//! The key's own thread and the user presence it gives the authenticator: both transports (the HID
//! socket and the vpcd card) hand it [`Request`]s, it runs them one at a time on the one
//! [`FidoKey`], and while a command waits for a touch it raises the context's `up_needed` flag (the
//! transport turns that into KEEPALIVE UPNEEDED or an NFC status update) and watches its `cancel`
//! flag (CTAPHID_CANCEL, a connection closing).
//!
//! The test fault `remove-on-sign` is the key's (it pulls itself out at the moment it would sign);
//! this thread turns that into [`Outcome::Pulled`] for whichever transport asked, and sets the stop
//! flag so every transport closes.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use std::thread::JoinHandle;
use std::time::Duration;
use tessera::locks::lock;

use zeroize::Zeroizing;

use super::touch::{TouchSource, Waited};
use super::{FidoFault, FidoKey, Presence, Touch};

/// How long a command waits for a touch before answering CTAP2_ERR_USER_ACTION_TIMEOUT (CTAP 2.1
/// §6.1.2 step 14 "user presence test ... times out": the spec leaves the time to the key; 30 s is
/// what current keys use).
pub const TOUCH_TIMEOUT: Duration = Duration::from_secs(30);

/// CTAP2 authenticatorGetAssertion (CTAP 2.1 §6.2).
const CTAP2_GET_ASSERTION: u8 = 0x02;
/// U2F AUTHENTICATE (U2F raw message formats §5).
const U2F_AUTHENTICATE: u8 = 0x02;
/// U2F AUTHENTICATE control byte "check-only": no signature (U2F raw message formats §5.1).
const U2F_CHECK_ONLY: u8 = 0x07;

/// One request for the key. Both forms may carry a PIN (encrypted, but still): zeroized on drop.
#[derive(Clone)]
pub enum Request {
    /// CTAP2: command byte ‖ CBOR parameters (CTAP 2.1 §8); answered status ‖ CBOR.
    Cbor(Zeroizing<Vec<u8>>),
    /// CTAP1/U2F: a command APDU (U2F raw message formats §3); answered data ‖ SW1 SW2.
    U2f(Zeroizing<Vec<u8>>),
}

impl Request {
    /// Whether the key signs in answering: what the "…-on-sign" faults act on.
    pub fn is_sign(&self) -> bool {
        match self {
            Request::Cbor(bytes) => bytes.first() == Some(&CTAP2_GET_ASSERTION),
            Request::U2f(apdu) => {
                apdu.get(1) == Some(&U2F_AUTHENTICATE) && apdu.get(2) != Some(&U2F_CHECK_ONLY)
            }
        }
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Redacted: the bytes may hold a PIN hash or a pinUvAuthParam.
        match self {
            Request::Cbor(b) => write!(f, "Cbor(cmd {:02x?}, {} bytes)", b.first(), b.len()),
            Request::U2f(b) => write!(f, "U2f(ins {:02x?}, {} bytes)", b.get(1), b.len()),
        }
    }
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The key's answer.
    Reply(Vec<u8>),
    /// The key was pulled out instead (fault `remove-on-sign`): the transport closes and the
    /// simulator exits.
    Pulled,
}

/// A test fault the transport acts on when framing the answer to a signing request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFault {
    /// CTAPHID: the init packet announces more data than the packets that follow carry.
    Truncated,
    /// CTAPHID: the init packet announces more than 7609 bytes.
    Oversized,
}

/// The flags one request shares with its transport.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    /// Set by the transport: the user or the client gave up (CTAPHID_CANCEL, connection closed).
    pub cancel: Arc<AtomicBool>,
    /// Set by the key thread while it waits for a touch.
    pub up_needed: Arc<AtomicBool>,
}

type Done = Box<dyn FnOnce(Outcome) + Send>;

enum Job {
    Run {
        request: Request,
        activity: Activity,
        done: Done,
    },
    PowerCycle(mpsc::Sender<()>),
}

/// A handle on the key's thread; cheap to clone, one per transport.
#[derive(Clone)]
pub struct KeyHandle {
    jobs: mpsc::Sender<Job>,
    speaks_cbor: bool,
    response_fault: Option<ResponseFault>,
    pulled: Arc<AtomicBool>,
    /// The activity of the request running now, so a power cycle can cancel it.
    current: Arc<Mutex<Option<Activity>>>,
}

impl KeyHandle {
    /// Starts the key's thread. `stop` is set (and [`KeyHandle::pulled`] becomes true) when a fault
    /// pulls the key out.
    pub fn spawn(
        mut key: FidoKey,
        touch: TouchSource,
        stop: Arc<AtomicBool>,
    ) -> io::Result<(KeyHandle, JoinHandle<()>)> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let speaks_cbor = key.speaks_cbor();
        let response_fault = match key.fault() {
            Some(FidoFault::TruncatedMessage) => Some(ResponseFault::Truncated),
            Some(FidoFault::OversizedMessage) => Some(ResponseFault::Oversized),
            _ => None,
        };
        let pulled = Arc::new(AtomicBool::new(false));
        let pulled_flag = Arc::clone(&pulled);
        let current = Arc::new(Mutex::new(None::<Activity>));
        let running = Arc::clone(&current);
        let thread = std::thread::Builder::new()
            .name("fido-key".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        Job::PowerCycle(ack) => {
                            key.power_cycle();
                            let _ = ack.send(());
                        }
                        Job::Run {
                            request,
                            activity,
                            done,
                        } => {
                            if pulled_flag.load(Ordering::Relaxed) {
                                done(Outcome::Pulled);
                                continue;
                            }
                            *lock(&running) = Some(activity.clone());
                            let mut presence = JobPresence {
                                touch: &touch,
                                activity: &activity,
                            };
                            let reply = match &request {
                                Request::Cbor(bytes) => key.cbor(bytes, &mut presence),
                                Request::U2f(apdu) => key.u2f(apdu, &mut presence),
                            };
                            *lock(&running) = None;
                            if key.pulled() {
                                tracing::info!("fault remove-on-sign: the key is pulled out");
                                pulled_flag.store(true, Ordering::Relaxed);
                                stop.store(true, Ordering::Relaxed);
                                done(Outcome::Pulled);
                            } else {
                                done(Outcome::Reply(reply));
                            }
                        }
                    }
                }
            })?;
        Ok((
            KeyHandle {
                jobs,
                speaks_cbor,
                response_fault,
                pulled,
                current,
            },
            thread,
        ))
    }

    /// Queues `request`; `done` runs on the key thread with its outcome. False when the key thread
    /// is gone (then `done` never runs).
    pub fn submit(
        &self,
        request: Request,
        activity: Activity,
        done: impl FnOnce(Outcome) + Send + 'static,
    ) -> bool {
        self.jobs
            .send(Job::Run {
                request,
                activity,
                done: Box::new(done),
            })
            .is_ok()
    }

    /// Runs `request` and waits for its outcome; `None` when the key thread is gone.
    pub fn call(&self, request: Request, activity: Activity) -> Option<Outcome> {
        let (tx, rx) = mpsc::channel();
        if !self.submit(request, activity, move |o| {
            let _ = tx.send(o);
        }) {
            return None;
        }
        rx.recv().ok()
    }

    /// Replugs the key (FidoKey::power_cycle): the request running now is cancelled (a key taken
    /// away stops waiting for its touch), then the power cycle runs after any request queued.
    pub fn power_cycle(&self) -> Result<(), String> {
        if let Some(activity) = &*lock(&self.current) {
            activity.cancel.store(true, Ordering::Relaxed);
        }
        let (tx, rx) = mpsc::channel();
        self.jobs
            .send(Job::PowerCycle(tx))
            .map_err(|_| "the key is gone".to_owned())?;
        rx.recv().map_err(|_| "the key is gone".to_owned())
    }

    /// Whether the key speaks CTAP2 (false: `--u2f-only`).
    pub fn speaks_cbor(&self) -> bool {
        self.speaks_cbor
    }

    /// The framing fault to apply to answers to signing requests, if any.
    pub fn response_fault(&self) -> Option<ResponseFault> {
        self.response_fault
    }

    /// Whether a fault pulled the key out.
    pub fn pulled(&self) -> bool {
        self.pulled.load(Ordering::Relaxed)
    }
}

/// The presence of one request: touches from the [`TouchSource`], cancel from the transport.
struct JobPresence<'a> {
    touch: &'a TouchSource,
    activity: &'a Activity,
}

impl Presence for JobPresence<'_> {
    fn wait_for_touch(&mut self) -> Touch {
        self.activity.up_needed.store(true, Ordering::Relaxed);
        let waited = self.touch.wait(&self.activity.cancel, TOUCH_TIMEOUT);
        self.activity.up_needed.store(false, Ordering::Relaxed);
        match waited {
            Waited::Touched => Touch::Touched,
            Waited::Cancelled => Touch::Cancelled,
            Waited::TimedOut => Touch::TimedOut,
        }
    }

    fn touched_now(&mut self) -> bool {
        self.touch.touched_now()
    }
}
