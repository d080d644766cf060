//! Present devices as the service sees them: a connection with exclusive sessions, run on a worker
//! thread of its own so that every operation can be bounded by a timeout.
//!
//! PC/SC calls block, and a stuck reader can block them indefinitely; the caller never waits for the
//! worker longer than its timeout. An operation that times out is abandoned: its result is dropped
//! unseen, so nothing it did reaches a token or the store. An operation can also carry a request's
//! [`CancelToken`]: once it is set, the transport handed to the operation refuses every further
//! APDU, a queued operation is skipped, and the caller stops waiting at once.
//!
//! The worker is generic over what it owns: a [`CardConnection`] by default (PC/SC, with exclusive
//! sessions and the APDU-level cancel above), or a FIDO [`CtapLink`] over USB HID ([`HidWorker`]),
//! whose operations see the cancel through their [`crate::fido::link::LinkContext`] instead.

use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::cancel::CancelToken;
use crate::fido::link::CtapLink;
use crate::locks::lock;
use crate::transport::CardTransport;
use crate::{Error, Result};

/// A card connection that can give one caller exclusive use of the card (one PC/SC transaction).
pub trait CardConnection: Send + 'static {
    /// Runs `op` with the card to itself; no other application's APDUs interleave with its APDUs.
    fn exclusive(&mut self, op: &mut dyn FnMut(&mut dyn CardTransport) -> Result<()>)
        -> Result<()>;

    /// Drops the connection and connects to the card in the same reader again. Only for identifying
    /// a card, before anything is bound to it: a connection that may reach a newly inserted card must
    /// never carry an existing device session. Connections that cannot lose their card do nothing.
    fn reconnect(&mut self) -> Result<()> {
        Ok(())
    }

    /// Whether another application reset the card since this connection last used it (pcscd
    /// reports resets to the card's connections only, not to the watchers of its reader).
    /// Connections that cannot tell say no.
    fn was_reset(&mut self) -> Result<bool> {
        Ok(false)
    }
}

/// One queued operation, given the connection on the worker thread.
type Job<C> = Box<dyn FnOnce(&mut C) + Send>;

/// Handle to the worker thread that owns one device connection `C`. Dropping the last handle ends
/// the worker once its current operation returns.
pub struct DeviceWorker<C: ?Sized + Send + 'static = dyn CardConnection> {
    jobs: mpsc::SyncSender<Job<C>>,
    /// Operations each caller (by uid) has waiting or running on this device.
    per_caller: Arc<Mutex<HashMap<u32, usize>>>,
}

/// The worker of a FIDO key on USB HID (or the simulated one): it owns the key's CTAPHID session.
pub type HidWorker = DeviceWorker<dyn CtapLink>;

// Not derived: a derive would ask `C: Clone`, and the connection is never cloned, only the handle.
impl<C: ?Sized + Send + 'static> Clone for DeviceWorker<C> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
            per_caller: Arc::clone(&self.per_caller),
        }
    }
}

/// Operations that may wait for a device at once; more are refused ([`Error::Busy`]) rather
/// than queued without bound behind a slow card.
const MAX_QUEUED: usize = 32;

/// Operations one caller may have waiting or running on one device, so that one local user cannot
/// fill the queue and keep everyone else from the card; more are refused ([`Error::Busy`]).
pub const MAX_PER_CALLER: usize = 2;

impl<C: ?Sized + Send + 'static> DeviceWorker<C> {
    /// Starts a worker thread owning `conn`.
    pub fn spawn(name: &str, conn: Box<C>) -> Result<Self> {
        let (jobs, rx) = mpsc::sync_channel::<Job<C>>(MAX_QUEUED);
        thread::Builder::new()
            .name(format!("device {name}"))
            .spawn(move || {
                let mut conn = conn;
                while let Ok(job) = rx.recv() {
                    job(conn.as_mut());
                }
            })?;
        Ok(Self {
            jobs,
            per_caller: Arc::default(),
        })
    }

    /// Runs `op` on the connection itself for the caller with `uid`, counted toward its
    /// [`MAX_PER_CALLER`] operations on this device, waiting at most `timeout` for the result.
    ///
    /// After `cancel` is set the operation is skipped if it has not started and this call returns
    /// [`Error::Cancelled`] at once (a late result is dropped, as after a timeout). An operation
    /// already running is not interrupted from here: it sees the cancel through the
    /// [`crate::fido::link::LinkContext`] it builds from the same token (CTAPHID then sends
    /// CTAPHID_CANCEL to the key), and the worker takes the next job once it returns.
    ///
    /// Errors: whatever `op` returns; [`Error::Busy`] when the caller already has
    /// [`MAX_PER_CALLER`] operations here or the queue is full; [`Error::Timeout`];
    /// [`Error::Cancelled`]; [`Error::DeviceRemoved`] when the worker is gone. An interrupted
    /// operation keeps its place in the caller's share until it has returned.
    pub async fn run_with<R: Send + 'static>(
        &self,
        uid: u32,
        timeout: Duration,
        cancel: &CancelToken,
        op: impl FnOnce(&mut C) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let share = CallerShare::take(&self.per_caller, uid)?;
        let (tx, rx) = oneshot::channel();
        let job_cancel = cancel.clone();
        let job: Job<C> = Box::new(move |conn: &mut C| {
            let share = share;
            // Nobody waits for the result any more (timeout, cancel): do not start the work.
            if tx.is_closed() || job_cancel.is_cancelled() {
                return;
            }
            let result = op(conn);
            // The place comes back with the result, so a caller's next operation sent on the
            // reply finds it free.
            drop(share);
            let _ = tx.send(result);
        });
        self.submit(job, rx, timeout, Some(cancel)).await
    }

    /// Queues `job` and waits at most `timeout` for the result it sends to `rx`.
    async fn submit<R>(
        &self,
        job: Job<C>,
        rx: oneshot::Receiver<Result<R>>,
        timeout: Duration,
        cancel: Option<&CancelToken>,
    ) -> Result<R> {
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => {
                Error::Busy("the device has too many operations waiting; try again".into())
            }
            mpsc::TrySendError::Disconnected(_) => Error::DeviceRemoved,
        })?;
        let cancelled = async {
            match cancel {
                Some(c) => c.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = tokio::time::timeout(timeout, rx) => match r {
                Ok(Ok(result)) => result,
                Ok(Err(_)) if cancel.is_some_and(CancelToken::is_cancelled) => Err(Error::Cancelled),
                Ok(Err(_)) => Err(Error::DeviceRemoved),
                Err(_) => Err(Error::Timeout {
                    what: "the device did not answer",
                    after: timeout,
                }),
            },
            () = cancelled => Err(Error::Cancelled),
        }
    }
}

/// The card operations: exclusive PC/SC sessions, epilogues, APDU-level cancel.
impl DeviceWorker<dyn CardConnection> {
    /// [`DeviceWorker::run_then`] on behalf of the caller with `uid`, counted toward its
    /// [`MAX_PER_CALLER`] operations on this device until the operation has left the worker.
    ///
    /// Errors: as [`DeviceWorker::run_then`]; [`Error::Busy`] when the caller already has that many.
    pub async fn run_then_for<R, F, E>(
        &self,
        uid: u32,
        timeout: Duration,
        op: F,
        epilogue: E,
    ) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut dyn CardTransport) -> Result<R> + Send + 'static,
        E: FnOnce(&mut dyn CardTransport) + Send + 'static,
    {
        let share = CallerShare::take(&self.per_caller, uid)?;
        self.queue_op(Some(share), None, timeout, op, epilogue)
            .await
    }

    /// [`DeviceWorker::run_then_for`] for a request that can be cancelled: after `cancel` is set the
    /// operation is skipped if it has not started, every APDU it still tries to send fails with
    /// [`Error::Cancelled`] before reaching the card, and this call returns [`Error::Cancelled`] at
    /// once (a late result is dropped, as after a timeout). The epilogue still runs if the
    /// operation ran: it is the clean-up of what the card did before the cancel (dropping the PIN's
    /// security status), not part of the cancelled work.
    pub async fn run_cancellable_for<R, F, E>(
        &self,
        uid: u32,
        timeout: Duration,
        cancel: &CancelToken,
        op: F,
        epilogue: E,
    ) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut dyn CardTransport) -> Result<R> + Send + 'static,
        E: FnOnce(&mut dyn CardTransport) + Send + 'static,
    {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let share = CallerShare::take(&self.per_caller, uid)?;
        self.queue_op(Some(share), Some(cancel.clone()), timeout, op, epilogue)
            .await
    }

    /// [`DeviceWorker::run`] on behalf of the caller with `uid` (see
    /// [`DeviceWorker::run_then_for`]).
    pub async fn run_for<R, F>(&self, uid: u32, timeout: Duration, op: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut dyn CardTransport) -> Result<R> + Send + 'static,
    {
        self.run_then_for(uid, timeout, op, |_| {}).await
    }

    /// Runs `op` in one exclusive session on the card, waiting at most `timeout` for the result.
    ///
    /// Errors: whatever `op` or the connection returns; [`Error::Timeout`] when the device did not
    /// finish in time; [`Error::DeviceRemoved`] when the worker is gone (the device left).
    pub async fn run<R, F>(&self, timeout: Duration, op: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut dyn CardTransport) -> Result<R> + Send + 'static,
    {
        self.run_then(timeout, op, |_| {}).await
    }

    /// Like [`DeviceWorker::run`], then runs `epilogue` in the same exclusive session after the
    /// result has been handed to the caller: clean-up the caller need not wait for (such as dropping
    /// the PIN's security status) still happens before any other application gets the card.
    pub async fn run_then<R, F, E>(&self, timeout: Duration, op: F, epilogue: E) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut dyn CardTransport) -> Result<R> + Send + 'static,
        E: FnOnce(&mut dyn CardTransport) + Send + 'static,
    {
        self.queue_op(None, None, timeout, op, epilogue).await
    }

    /// Queues the job; `share`, if any, goes with it and is given back when the job is dropped (run,
    /// skipped or refused by a full queue).
    async fn queue_op<R, F, E>(
        &self,
        share: Option<CallerShare>,
        cancel: Option<CancelToken>,
        timeout: Duration,
        op: F,
        epilogue: E,
    ) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut dyn CardTransport) -> Result<R> + Send + 'static,
        E: FnOnce(&mut dyn CardTransport) + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let cancel_for_wait = cancel.clone();
        let job: Job<dyn CardConnection> = Box::new(move |conn: &mut dyn CardConnection| {
            // The caller's place is given back with the result, before the epilogue: a caller
            // that sends its next operation on the reply must not find its own finished one
            // still counted (the worker runs one job at a time, so epilogues cannot pile up).
            let mut share = share;
            // A caller that gave up (timeout) no longer wants this done: never run an operation,
            // let alone a PIN check, that nobody will see the result of.
            if tx.is_closed() || cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
                return;
            }
            let mut op = op;
            let mut epilogue = Some(epilogue);
            let mut tx = Some(tx);
            let status = conn.exclusive(&mut |card| {
                let result = match &cancel {
                    Some(cancel) => op(&mut Cancellable { card, cancel }),
                    None => op(card),
                };
                if let Err(Error::CardReset) = result {
                    // The connection reconnects and runs the operation again (or gives up and
                    // says why); nothing reached the card, so there is no result to deliver yet.
                    return Err(Error::CardReset);
                }
                drop(share.take());
                if let Some(tx) = tx.take() {
                    // The caller may have given up (timeout); then nobody wants the result.
                    let _ = tx.send(result);
                }
                if let Some(e) = epilogue.take() {
                    e(card);
                }
                Ok(())
            });
            if let (Err(e), Some(tx)) = (status, tx.take()) {
                let _ = tx.send(Err(e));
            }
        });
        self.submit(job, rx, timeout, cancel_for_wait.as_ref())
            .await
    }

    /// Connects to the card again ([`CardConnection::reconnect`]), waiting at most `timeout`.
    pub async fn reconnect(&self, timeout: Duration) -> Result<()> {
        self.with_connection(timeout, |conn| conn.reconnect()).await
    }

    /// [`CardConnection::was_reset`], waiting at most `timeout`.
    pub async fn was_reset(&self, timeout: Duration) -> Result<bool> {
        self.with_connection(timeout, |conn| conn.was_reset()).await
    }

    /// Runs `f` on the connection itself (outside any exclusive session).
    async fn with_connection<R: Send + 'static>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut dyn CardConnection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = oneshot::channel();
        let job: Job<dyn CardConnection> = Box::new(move |conn: &mut dyn CardConnection| {
            if !tx.is_closed() {
                let _ = tx.send(f(conn));
            }
        });
        self.submit(job, rx, timeout, None).await
    }
}

/// The card as a cancellable operation sees it: every APDU after the cancel is refused here, before
/// it reaches the card.
struct Cancellable<'a> {
    card: &'a mut dyn CardTransport,
    cancel: &'a CancelToken,
}

impl CardTransport for Cancellable<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        self.card.transmit(command)
    }
}

/// One of a caller's [`MAX_PER_CALLER`] places on a device, given back when dropped.
struct CallerShare {
    counts: Arc<Mutex<HashMap<u32, usize>>>,
    uid: u32,
}

impl CallerShare {
    fn take(counts: &Arc<Mutex<HashMap<u32, usize>>>, uid: u32) -> Result<CallerShare> {
        let mut all = lock(counts);
        let n = all.entry(uid).or_insert(0);
        if *n >= MAX_PER_CALLER {
            return Err(Error::Busy(format!(
                "uid {uid} already has {MAX_PER_CALLER} operations waiting for this device; try \
                 again when they are done"
            )));
        }
        *n += 1;
        Ok(CallerShare {
            counts: Arc::clone(counts),
            uid,
        })
    }
}

impl Drop for CallerShare {
    fn drop(&mut self) {
        let mut all = lock(&self.counts);
        if let Some(n) = all.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                all.remove(&self.uid);
            }
        }
    }
}

impl<C: ?Sized + Send + 'static> std::fmt::Debug for DeviceWorker<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceWorker")
    }
}

/// A [`CardConnection`] over any in-process [`CardTransport`] (the simulator in tests): exclusivity is
/// the worker thread's ownership of it.
pub struct DirectConnection<T>(pub T);

impl<T: CardTransport + 'static> CardConnection for DirectConnection<T> {
    fn exclusive(
        &mut self,
        op: &mut dyn FnMut(&mut dyn CardTransport) -> Result<()>,
    ) -> Result<()> {
        op(&mut self.0)
    }
}

#[cfg(test)]
#[path = "worker_test.rs"]
mod tests;
