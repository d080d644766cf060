//! The PC/SC backend: card connections through pcscd, and the PC/SC device source, a reader monitor
//! that reports cards coming and going as [`DeviceEvent`]s (SCardGetStatusChange with the
//! `\\?PnP?\Notification` pseudo-reader for reader arrival). The monitor blocks in pcscd without a
//! timeout, so an idle daemon does not wake up; only while pcscd is absent does it retry, with a
//! growing pause.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use pcsc::{Context, Disposition, Protocols, ReaderState, Scope, ShareMode, State};
use tokio::sync::mpsc::UnboundedSender;

use crate::transport::events::{AddedDevice, DeviceConnection, DeviceEvent, DeviceKind, Transport};
use crate::transport::pcscd_instance::PcscdInstance;
use crate::transport::worker::CardConnection;
use crate::transport::CardTransport;
use crate::{Error, Result};

/// Watches PC/SC readers on a thread of its own and sends [`DeviceEvent`]s: a card that went
/// unreported (swapped while pcscd counted) is reported removed and added again; a lost pcscd is
/// [`DeviceEvent::SourceLost`].
pub struct Monitor {
    stop: Arc<AtomicBool>,
    ctx: Arc<std::sync::Mutex<Option<Context>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Monitor {
    /// Starts watching; events go to `events` until the monitor is dropped.
    pub fn start(events: UnboundedSender<DeviceEvent>) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(std::sync::Mutex::new(None));
        let thread = {
            let stop = stop.clone();
            let ctx = ctx.clone();
            thread::Builder::new()
                .name("pcsc monitor".into())
                .spawn(move || watch(&stop, &ctx, &events))?
        };
        Ok(Self {
            stop,
            ctx,
            thread: Some(thread),
        })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let Some(t) = self.thread.take() else {
            return;
        };
        // A cancel only wakes a thread already in SCardGetStatusChange; one between its stop check
        // and that call would block there for good. So cancel until it has ended, for a bounded
        // time: a thread stuck in a hung pcscd is left behind rather than hanging the caller.
        for _ in 0..200 {
            if t.is_finished() {
                let _ = t.join();
                return;
            }
            if let Ok(guard) = self.ctx.lock() {
                if let Some(ctx) = guard.as_ref() {
                    let _ = ctx.cancel();
                }
            }
            thread::sleep(Duration::from_millis(10));
        }
        tracing::warn!("the pcsc monitor did not stop; leaving it behind");
    }
}

/// The longest pause between attempts to reach an absent pcscd.
const MAX_RETRY: Duration = Duration::from_secs(2);

fn watch(
    stop: &AtomicBool,
    shared_ctx: &std::sync::Mutex<Option<Context>>,
    events: &UnboundedSender<DeviceEvent>,
) {
    let mut pause = Duration::from_millis(50);
    let mut warned = false;
    while !stop.load(Ordering::SeqCst) {
        // The same pcscd before and after connecting is the one connected to; a pcscd that
        // changed in between is unknown, so that no count is ever credited to the wrong one.
        let before = PcscdInstance::current();
        match Context::establish(Scope::User) {
            Ok(ctx) => {
                let pcscd = before.filter(|b| PcscdInstance::current().as_ref() == Some(b));
                if pcscd.is_none() {
                    tracing::warn!(
                        "cannot tell which pcscd this is; cards present now start new sessions"
                    );
                }
                if let Ok(mut g) = shared_ctx.lock() {
                    *g = Some(ctx.clone());
                }
                if warned {
                    tracing::info!("pcscd is reachable again");
                }
                warned = false;
                pause = Duration::from_millis(50);
                let reason = watch_context(&ctx, pcscd.as_ref(), stop, events);
                if let Ok(mut g) = shared_ctx.lock() {
                    *g = None;
                }
                if stop.load(Ordering::SeqCst) || events.is_closed() {
                    return;
                }
                tracing::warn!("lost pcscd: {reason}; every card is taken as removed");
                let _ = events.send(DeviceEvent::SourceLost {
                    transport: Transport::Pcsc,
                    reason,
                });
            }
            Err(e) => {
                if !warned {
                    tracing::warn!("pcscd is not reachable ({e}); retrying until it is");
                    let _ = events.send(DeviceEvent::SourceLost {
                        transport: Transport::Pcsc,
                        reason: e.to_string(),
                    });
                    warned = true;
                }
                thread::sleep(pause);
                pause = (pause * 2).min(MAX_RETRY);
            }
        }
    }
}

/// Watches readers on one context until it fails or the monitor stops; returns why it ended.
fn watch_context(
    ctx: &Context,
    pcscd: Option<&PcscdInstance>,
    stop: &AtomicBool,
    events: &UnboundedSender<DeviceEvent>,
) -> String {
    let pnp = pcsc::PNP_NOTIFICATION();
    let mut states: Vec<ReaderState> = vec![ReaderState::new(pnp, State::UNAWARE)];
    // Readers that currently hold a card, as reported to the listener.
    let mut present: HashMap<String, Seen> = HashMap::new();
    let mut first_round = true;
    loop {
        // Bring the watched set in line with the reader list.
        let readers = match ctx.list_readers_owned() {
            Ok(r) => r,
            Err(pcsc::Error::NoReadersAvailable) => Vec::new(),
            Err(e) => return e.to_string(),
        };
        states.retain(|s| s.name() == pnp || readers.iter().any(|r| r.as_c_str() == s.name()));
        for r in &readers {
            if !states.iter().any(|s| s.name() == r.as_c_str()) {
                states.push(ReaderState::new(r.clone(), State::UNAWARE));
            }
        }
        let gone: Vec<String> = present
            .keys()
            .filter(|name| !readers.iter().any(|r| r.to_string_lossy() == name.as_str()))
            .cloned()
            .collect();
        for name in gone {
            present.remove(&name);
            let _ = events.send(removed(name));
        }

        // The first call returns at once (UNAWARE states); later ones block until something changes.
        match ctx.get_status_change(None, &mut states) {
            Ok(()) => {}
            Err(pcsc::Error::Cancelled) if stop.load(Ordering::SeqCst) => return "stopped".into(),
            Err(pcsc::Error::UnknownReader) => continue,
            Err(e) => return e.to_string(),
        }
        if stop.load(Ordering::SeqCst) {
            return "stopped".into();
        }
        for s in &mut states {
            if s.name() == pnp {
                s.sync_current_state();
                continue;
            }
            let name = s.name().to_string_lossy().into_owned();
            let ev = s.event_state();
            if ev.contains(State::CHANGED) {
                tracing::debug!(reader = %name, state = ?ev, count = s.event_count(), "reader state");
            }
            // A mute card is reported too: pcscd's power-up may have failed only because the card
            // came and went at that moment, and connecting powers it up again.
            let has_card = ev.contains(State::PRESENT);
            let now = Seen {
                count: s.event_count(),
                atr: s.atr().to_vec(),
                mute: ev.contains(State::MUTE),
            };
            let was = present.get(&name);
            // A changed event count with a card still there is a swap we did not see: report both.
            let swapped = was.is_some_and(|seen| has_card && seen.count != now.count);
            let changed = was.is_some_and(|seen| seen.atr != now.atr || seen.mute != now.mute);
            let was = was.is_some();
            if was && has_card && !swapped && changed {
                present.insert(name.clone(), now.clone());
                let _ = events.send(DeviceEvent::Changed {
                    transport: Transport::Pcsc,
                    location: name.clone(),
                });
            }
            if was && (!has_card || swapped || ev.contains(State::UNAVAILABLE)) {
                present.remove(&name);
                let _ = events.send(removed(name.clone()));
            }
            if has_card && !present.contains_key(&name) && !ev.contains(State::UNAVAILABLE) {
                let contactless = is_contactless(&name, &now.atr);
                present.insert(name.clone(), now);
                let _ = events.send(inserted(name, s.event_count(), pcscd, contactless));
            }
            s.sync_current_state();
        }
        if first_round {
            first_round = false;
            let _ = events.send(DeviceEvent::EnumerationComplete {
                transport: Transport::Pcsc,
            });
        }
        if events.is_closed() {
            return "listener gone".into();
        }
    }
}

/// A card in `reader`, with a connection that connects at the service's first use: identification
/// connects inside its retries, so a card that cannot be connected to at once (pcscd still powering
/// it, another application resetting it) is retried, and listed even if it never answers.
fn inserted(
    reader: String,
    event_count: u32,
    pcscd: Option<&PcscdInstance>,
    contactless: bool,
) -> DeviceEvent {
    let connection = PcscConnection::unconnected(&reader);
    DeviceEvent::Added(AddedDevice {
        location: reader,
        kind: DeviceKind::SmartCard,
        transport: Transport::Pcsc,
        contactless,
        event_count: u64::from(event_count),
        source_instance: pcscd.map(|p| p.to_string()),
        connection: DeviceConnection::Card(Box::new(connection)),
    })
}

/// Whether the card in `reader` is reached over NFC: its ATR is the one a PC/SC reader makes up
/// for a contactless card (PC/SC Part 3 §3.1.3.2.3: `3B 8n 80 01`, then n historical bytes and
/// TCK, n being the low nibble of T0), or the reader calls itself contactless. The ATR decides
/// when there is one; the name is for readers that show contact and contactless slots apart
/// ("… PICC …", "… Contactless …", "… CL Reader").
pub fn is_contactless(reader: &str, atr: &[u8]) -> bool {
    if let [0x3B, t0, 0x80, 0x01, ..] = atr {
        if t0 & 0xF0 == 0x80 {
            return true;
        }
    }
    if !atr.is_empty() {
        return false;
    }
    let name = reader.to_ascii_lowercase();
    ["contactless", "picc", " cl reader", " nfc"]
        .iter()
        .any(|w| name.contains(w))
}

fn removed(reader: String) -> DeviceEvent {
    DeviceEvent::Removed {
        transport: Transport::Pcsc,
        location: reader,
    }
}

/// What the monitor last reported about the card in a reader.
#[derive(Clone)]
struct Seen {
    /// pcscd's event count then.
    count: u32,
    atr: Vec<u8>,
    mute: bool,
}

/// A shared connection to the card in one reader.
pub struct PcscConnection {
    /// `None` before the first connection succeeds (and while dropping, to disconnect by value).
    card: Option<pcsc::Card>,
    reader: String,
    /// Whether a connection was ever attempted: the first exclusive session of a connection made
    /// [`PcscConnection::unconnected`] connects by itself (nothing can be bound to a card never
    /// connected to), later ones never do (see [`CardConnection::reconnect`]).
    attempted: bool,
}

impl PcscConnection {
    /// Connects to the card in `reader` (shared mode: other applications may use the card between
    /// Tessera's transactions).
    pub fn connect(reader: &str) -> Result<Self> {
        let mut conn = Self::unconnected(reader);
        conn.reconnect()?;
        Ok(conn)
    }

    /// A connection to the card in `reader` that connects at its first
    /// [`CardConnection::reconnect`]: identification connects inside its retries, so a card
    /// that cannot be connected to at the first try is retried like one that resets.
    pub fn unconnected(reader: &str) -> Self {
        Self {
            card: None,
            reader: reader.to_owned(),
            attempted: false,
        }
    }

    /// The reader this connection is to.
    pub fn reader(&self) -> &str {
        &self.reader
    }
}

impl Drop for PcscConnection {
    fn drop(&mut self) {
        if let Some(card) = self.card.take() {
            // Leave the card as it is: a reset would disturb every other application using it, and
            // Tessera never leaves a PIN verified (it resets the PIN status after each use).
            let _ = card.disconnect(Disposition::LeaveCard);
        }
    }
}

/// Errors that mean another application reset the card since Tessera last used it: the handle must
/// be reconnected, and nothing was sent to the card.
fn is_reset(e: pcsc::Error) -> bool {
    matches!(e, pcsc::Error::ResetCard | pcsc::Error::NotTransacted)
}

impl CardConnection for PcscConnection {
    fn exclusive(
        &mut self,
        op: &mut dyn FnMut(&mut dyn CardTransport) -> Result<()>,
    ) -> Result<()> {
        if self.card.is_none() && !self.attempted {
            // The first use of a connection that connects lazily (the service probing the card's
            // applets before anything identifies it).
            self.reconnect()?;
        }
        let card = self.card.as_mut().ok_or(Error::DeviceRemoved)?;
        // At most one reconnect: a card reset by someone else between our transactions is normal
        // (their disconnect resets it); a card that keeps resetting is an error.
        for attempt in 0..2 {
            let tx = match card.transaction2() {
                Ok(tx) => tx,
                Err((c, e)) if attempt == 0 && is_reset(e) => {
                    c.reconnect(ShareMode::Shared, Protocols::ANY, Disposition::LeaveCard)
                        .map_err(map_err)?;
                    continue;
                }
                Err((_, e)) => return Err(map_err(e)),
            };
            let mut transport = TxTransport {
                tx: &tx,
                answered: 0,
                reset: false,
            };
            let result = op(&mut transport);
            let retry = transport.reset && transport.answered == 0 && attempt == 0;
            // Ending the transaction can only fail if the card is gone; the operation's own result
            // says more, so it wins.
            let _ = tx.end(Disposition::LeaveCard);
            if retry {
                card.reconnect(ShareMode::Shared, Protocols::ANY, Disposition::LeaveCard)
                    .map_err(map_err)?;
                continue;
            }
            return result;
        }
        Err(Error::Device("the card keeps being reset".into()))
    }

    fn reconnect(&mut self) -> Result<()> {
        self.attempted = true;
        if let Some(old) = self.card.take() {
            let _ = old.disconnect(Disposition::LeaveCard);
        }
        let ctx = Context::establish(Scope::User).map_err(map_err)?;
        let name = CString::new(self.reader.as_str())
            .map_err(|_| Error::InvalidArgument("reader name contains NUL".into()))?;
        let card = ctx
            .connect(&name, ShareMode::Shared, Protocols::ANY)
            .map_err(map_err)?;
        self.card = Some(card);
        Ok(())
    }

    fn was_reset(&mut self) -> Result<bool> {
        let Some(card) = self.card.as_mut() else {
            return Ok(false);
        };
        // pcscd reports a reset at the next transaction, not in SCardStatus (seen with
        // pcsc-lite 2): an empty transaction asks, and sends nothing to the card.
        match card.transaction2() {
            Ok(tx) => {
                let _ = tx.end(Disposition::LeaveCard);
                Ok(false)
            }
            Err((_, e)) if is_reset(e) => Ok(true),
            Err((_, e)) => Err(map_err(e)),
        }
    }
}

struct TxTransport<'a, 'tx> {
    tx: &'a pcsc::Transaction<'tx>,
    /// APDUs the card answered in this transaction.
    answered: usize,
    /// The card reported a reset.
    reset: bool,
}

impl TxTransport<'_, '_> {
    /// After a failed exchange: [`Error::DeviceRemoved`] if the card turns out to be gone (pcscd may
    /// take a few hundred milliseconds to notice), else a device error saying `what`.
    fn lost(&self, what: &str) -> Error {
        for _ in 0..20 {
            match self.tx.status2_owned() {
                Err(e) if map_err(e).is_removal() => return Error::DeviceRemoved,
                Ok(st) if !st.status().contains(pcsc::Status::PRESENT) => {
                    return Error::DeviceRemoved
                }
                _ => thread::sleep(Duration::from_millis(50)),
            }
        }
        Error::Device(what.to_owned())
    }
}

impl CardTransport for TxTransport<'_, '_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED];
        match self.tx.transmit(command, &mut buf) {
            // Every real answer carries a status word; no bytes at all is a reader that lost its
            // card mid-command (vpcd answers so when the card side hangs up).
            Ok([]) => Err(self.lost("the card answered nothing")),
            Ok(r) => {
                let n = r.len();
                buf.truncate(n);
                self.answered += 1;
                Ok(buf)
            }
            Err(e) if is_reset(e) => {
                self.reset = true;
                Err(Error::CardReset)
            }
            Err(e @ (pcsc::Error::CommError | pcsc::Error::UnknownError)) => {
                Err(self.lost(&e.to_string()))
            }
            Err(e) => Err(map_err(e)),
        }
    }
}

/// PC/SC errors by what they mean for the caller.
fn map_err(e: pcsc::Error) -> Error {
    use pcsc::Error as P;
    match e {
        P::RemovedCard
        | P::NoSmartcard
        | P::ReaderUnavailable
        | P::UnknownReader
        | P::UnpoweredCard
        | P::UnresponsiveCard => Error::DeviceRemoved,
        P::Timeout => Error::Timeout {
            what: "the reader did not answer",
            after: Duration::ZERO,
        },
        P::NoService | P::ServiceStopped => Error::Device(format!("pcscd unavailable: {e}")),
        other => Error::Device(format!("PC/SC: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contactless_cards_are_told_by_their_atr() {
        let hex = |s: &str| hex::decode(s.replace(' ', "")).unwrap_or_default();
        for (reader, atr, want) in [
            // A YubiKey 5 NFC on a contactless reader (ISO 14443-4, 3B 8n 80 01 + historical bytes).
            (
                "ACS ACR1252 1S CL Reader PICC 0",
                "3B 8D 80 01 80 73 C0 21 C0 57 59 75 62 69 4B 65 79 F9",
                true,
            ),
            // A type A card without historical bytes: 3B 80 80 01 01.
            ("Generic Reader", "3B 80 80 01 01", true),
            // A YubiKey over USB CCID: contact.
            (
                "Yubico YubiKey OTP+FIDO+CCID 00 00",
                "3B FD 13 00 00 81 31 FE 15 80 73 C0 21 C0 57 59 75 62 69 4B 65 79 40",
                false,
            ),
            // The simulators in vpcd: the FIDO key over NFC, the PIV card (contact, T=1).
            (
                "Virtual PCD 00 00",
                "3B 8F 80 01 80 73 C0 21 C0 57 54 65 73 73 65 72 61 46 49 00",
                true,
            ),
            (
                "Virtual PCD 00 01",
                "3B 8B 01 54 65 73 73 65 72 61 2D 50 49 56 AF",
                false,
            ),
            // No ATR (mute): the reader's name decides.
            ("OMNIKEY 5022 CL Reader 0", "", true),
            ("Identiv uTrust 4701 F Contactless Reader", "", true),
            ("Gemalto PC Twin Reader 00 00", "", false),
        ] {
            assert_eq!(is_contactless(reader, &hex(atr)), want, "{reader}: {atr}");
        }
    }
}
