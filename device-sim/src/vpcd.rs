//! The card side of vsmartcard's virtual PC/SC reader driver (`vpcd`): the simulator connects to the
//! driver over TCP and answers its messages, so pcscd and every PC/SC client see a real reader with a
//! card in it. Connecting is inserting the card; closing the socket is pulling it out.
//!
//! Wire format (vsmartcard `vpcd.c`): each message is a 2-byte big-endian length and that many bytes.
//! A 1-byte message is a control code (00 power off, 01 power on, 02 reset, 04 "send the ATR", which
//! is answered with the ATR); anything longer is a command APDU, answered with the response APDU.
//!
//! Any [`VirtualCard`] can be inserted: the PIV card ([`PivCard`]) and the FIDO key's NFC applet
//! ([`crate::fido::nfc::FidoCard`]).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::SockRef;
use zeroize::Zeroizing;

use crate::piv::PivCard;

const CTRL_OFF: u8 = 0x00;
const CTRL_ON: u8 = 0x01;
const CTRL_RESET: u8 = 0x02;
const CTRL_ATR: u8 = 0x04;

/// How often a waiting simulator retries the connection and looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// A card as vpcd sees it: an ATR, a reset, and an answer to each command APDU.
pub trait VirtualCard {
    /// The answer to reset (ISO/IEC 7816-3 §8).
    fn atr(&self) -> Vec<u8>;
    /// Power off, power on or reset: volatile state goes (selected application, chaining).
    fn reset(&mut self);
    /// The response APDU (data ‖ SW1 SW2) to a command APDU.
    fn process(&mut self, apdu: &[u8]) -> Vec<u8>;
    /// Whether a fault pulled the card out (then it is not answered and the connection closes).
    fn is_pulled(&self) -> bool;
}

impl VirtualCard for PivCard {
    fn atr(&self) -> Vec<u8> {
        PivCard::atr(self).to_vec()
    }
    fn reset(&mut self) {
        PivCard::reset(self);
    }
    fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        PivCard::process(self, apdu)
    }
    fn is_pulled(&self) -> bool {
        PivCard::is_pulled(self)
    }
}

/// Why [`run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `stop` was set: the card was pulled out cleanly.
    Stopped,
    /// A remove-on-sign fault fired: the card left mid-operation.
    Pulled,
}

/// Inserts `card` into the vpcd reader at `addr` and serves it until `stop` is set or a fault pulls
/// it out. Retries the connection every 100 ms while vpcd (pcscd) is not there, and again whenever
/// vpcd drops it. Prints `ready` on stdout once, when vpcd first talks to the card.
pub fn run<C: VirtualCard + ?Sized>(
    addr: &str,
    card: &mut C,
    stop: &AtomicBool,
) -> io::Result<Exit> {
    run_announcing(addr, card, stop, &mut announce_ready)
}

/// [`run`], calling `ready` instead of printing `ready` (for a simulator that prints it once all
/// its transports are up).
pub fn run_announcing<C: VirtualCard + ?Sized>(
    addr: &str,
    card: &mut C,
    stop: &AtomicBool,
    ready: &mut dyn FnMut(),
) -> io::Result<Exit> {
    let mut announced = false;
    loop {
        let Some(mut stream) = connect(addr, stop) else {
            return Ok(Exit::Stopped);
        };
        configure(&stream)?;
        tracing::info!("card inserted into vpcd at {addr}");
        card.reset();
        let end = serve(&mut stream, card, stop, &mut announced, ready);
        // Closing the socket is what pulls the card out of the reader.
        let _ = stream.shutdown(Shutdown::Both);
        card.reset();
        match end {
            Ok(Some(exit)) => return Ok(exit),
            Ok(None) => tracing::info!("vpcd closed the connection; reconnecting"),
            Err(e) => tracing::warn!("vpcd connection failed: {e}; reconnecting"),
        }
    }
}

/// Prints `ready` on stdout for whoever waits for the card to be inserted.
pub fn announce_ready() {
    // Not println!: it panics when stdout is gone. A parent that closed our stdout does not wait for
    // the line, so a failure here is only worth a warning.
    let mut out = io::stdout().lock();
    if let Err(e) = writeln!(out, "ready").and_then(|()| out.flush()) {
        tracing::warn!("cannot announce readiness on stdout: {e}");
    }
}

/// Connects, retrying every [`POLL`] until it works or `stop` is set (then `None`).
fn connect(addr: &str, stop: &AtomicBool) -> Option<TcpStream> {
    let mut logged = false;
    while !stop.load(Ordering::Relaxed) {
        let attempt = addr.to_socket_addrs().and_then(|mut addrs| {
            let a = addrs
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
            TcpStream::connect_timeout(&a, Duration::from_secs(1))
        });
        match attempt {
            Ok(stream) => return Some(stream),
            Err(e) => {
                if !logged {
                    // A warning, so the default filter shows it: a simulator that silently
                    // waits looks hung when pcscd (which runs vpcd) is not there.
                    tracing::warn!("waiting for vpcd at {addr} (is pcscd running?): {e}");
                    logged = true;
                }
                std::thread::sleep(POLL);
            }
        }
    }
    None
}

fn configure(stream: &TcpStream) -> io::Result<()> {
    // Each APDU is one small segment each way: Nagle and delayed ACKs would add ~40 ms per APDU.
    stream.set_nodelay(true)?;
    // The read timeout lets the loop notice the stop flag (the simulator is a test tool; 100 ms of
    // shutdown latency is fine).
    stream.set_read_timeout(Some(POLL))?;
    Ok(())
}

/// Answers vpcd until it disconnects (`None`), `stop` is set or the card is pulled.
fn serve<C: VirtualCard + ?Sized>(
    stream: &mut TcpStream,
    card: &mut C,
    stop: &AtomicBool,
    announced: &mut bool,
    ready: &mut dyn FnMut(),
) -> io::Result<Option<Exit>> {
    loop {
        let message = match read_message(stream, stop)? {
            ReadOutcome::Message(m) => m,
            ReadOutcome::Closed => return Ok(None),
            ReadOutcome::Stopped => return Ok(Some(Exit::Stopped)),
        };
        // vpcd accepts one card per reader; a second one connects (the kernel completes the
        // handshake) but is never spoken to. So the card is in the reader once vpcd talks to it.
        if !*announced {
            ready();
            *announced = true;
        }
        match respond(card, Message::decode(&message)) {
            Reply::Send(payload) => write_message(stream, &payload)?,
            Reply::Nothing => {}
            Reply::Pulled => return Ok(Some(Exit::Pulled)),
        }
    }
}

/// One message from vpcd, decoded from its body (the bytes after the length header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    PowerOff,
    PowerOn,
    Reset,
    /// "Send the ATR".
    Atr,
    /// A 1-byte message with a code vpcd does not define; ignored.
    UnknownControl(u8),
    /// An empty message; ignored.
    Empty,
    /// Two bytes or more: a command APDU.
    Apdu(&'a [u8]),
}

impl<'a> Message<'a> {
    /// Decodes a message body (vsmartcard `vpcd.c`: 1 byte is a control code, more is an APDU).
    pub fn decode(body: &'a [u8]) -> Self {
        match body {
            [] => Message::Empty,
            [CTRL_OFF] => Message::PowerOff,
            [CTRL_ON] => Message::PowerOn,
            [CTRL_RESET] => Message::Reset,
            [CTRL_ATR] => Message::Atr,
            [other] => Message::UnknownControl(*other),
            apdu => Message::Apdu(apdu),
        }
    }
}

/// What the card does about one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send this payload back (framed by [`encode_frame`]).
    Send(Vec<u8>),
    /// No answer is due.
    Nothing,
    /// A fault pulled the card out: close the connection without answering.
    Pulled,
}

/// The card's side of one message, without the socket: what [`run`] does for each message vpcd
/// sends, and what the fuzz target `vpcd_stream` drives directly.
pub fn respond<C: VirtualCard + ?Sized>(card: &mut C, message: Message<'_>) -> Reply {
    match message {
        Message::PowerOff | Message::PowerOn | Message::Reset => {
            card.reset();
            Reply::Nothing
        }
        Message::Atr => Reply::Send(card.atr()),
        Message::UnknownControl(code) => {
            tracing::warn!("unknown vpcd control code {code:#04x}");
            Reply::Nothing
        }
        Message::Empty => Reply::Nothing,
        Message::Apdu(apdu) => {
            let response = card.process(apdu);
            if card.is_pulled() {
                Reply::Pulled
            } else {
                Reply::Send(response)
            }
        }
    }
}

/// Splits the first whole message off a byte stream from vpcd: its body and the bytes after it, or
/// `None` while the stream holds no whole message yet.
pub fn split_message(stream: &[u8]) -> Option<(&[u8], &[u8])> {
    let [hi, lo, rest @ ..] = stream else {
        return None;
    };
    rest.split_at_checked(body_len([*hi, *lo]))
}

/// The body length a message header announces: 2 bytes, big-endian.
fn body_len(header: [u8; 2]) -> usize {
    usize::from(u16::from_be_bytes(header))
}

/// Frames a message for vpcd: its 2-byte big-endian length, then the payload. Errors on a payload
/// longer than 65535 bytes, which the header cannot announce.
pub fn encode_frame(payload: &[u8]) -> io::Result<Vec<u8>> {
    let len = u16::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "message longer than 65535"))?;
    let mut frame = Vec::with_capacity(payload.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// Outcome of reading one message.
enum ReadOutcome {
    Message(Zeroizing<Vec<u8>>),
    Closed,
    Stopped,
}

fn read_message(stream: &mut TcpStream, stop: &AtomicBool) -> io::Result<ReadOutcome> {
    let mut header = [0u8; 2];
    if !read_full(stream, &mut header, stop)? {
        return Ok(if stop.load(Ordering::Relaxed) {
            ReadOutcome::Stopped
        } else {
            ReadOutcome::Closed
        });
    }
    // Messages may carry a PIN.
    let mut body = Zeroizing::new(vec![0u8; body_len(header)]);
    if !read_full(stream, &mut body, stop)? {
        return Ok(if stop.load(Ordering::Relaxed) {
            ReadOutcome::Stopped
        } else {
            ReadOutcome::Closed
        });
    }
    Ok(ReadOutcome::Message(body))
}

/// Fills `buf`; false on end of stream or when `stop` is set.
fn read_full(stream: &mut TcpStream, buf: &mut [u8], stop: &AtomicBool) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        // Linux turns quick ACKs off again after a while; set it before every read, or the ACK of
        // each APDU waits for the delayed-ACK timer (~40 ms) and every round trip takes that long.
        SockRef::from(&*stream).set_quickack(true)?;
        let Some(rest) = buf.get_mut(filled..) else {
            return Ok(false);
        };
        match stream.read(rest) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn write_message(stream: &mut TcpStream, payload: &[u8]) -> io::Result<()> {
    stream.write_all(&encode_frame(payload)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::net::TcpListener;
    use std::sync::Arc;

    use super::*;
    use crate::piv::SimOptions;

    fn send(s: &mut TcpStream, payload: &[u8]) {
        write_message(s, payload).unwrap();
    }

    fn recv(s: &mut TcpStream) -> Vec<u8> {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).unwrap();
        let mut b = vec![0u8; usize::from(u16::from_be_bytes(h))];
        s.read_exact(&mut b).unwrap();
        b
    }

    /// A fake vpcd: accepts the simulator, asks for the ATR, sends APDUs, then stops it.
    #[test]
    fn serves_a_fake_vpcd_and_stops_on_flag() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let sim = std::thread::spawn(move || {
            let mut card = PivCard::in_memory(&SimOptions::default()).unwrap();
            run(&addr, &mut card, &stop2).unwrap()
        });
        let (mut s, _) = listener.accept().unwrap();
        send(&mut s, &[CTRL_ON]);
        send(&mut s, &[CTRL_ATR]);
        let atr = recv(&mut s);
        assert_eq!(atr.first(), Some(&0x3B));
        // GET VERSION (Le 00: up to 256 bytes).
        send(&mut s, &[0x00, 0xFD, 0x00, 0x00, 0x00]);
        assert_eq!(recv(&mut s), vec![5, 4, 3, 0x90, 0x00]);
        // Unknown instruction.
        send(&mut s, &[0x00, 0x42, 0x00, 0x00]);
        assert_eq!(recv(&mut s), vec![0x6D, 0x00]);
        stop.store(true, Ordering::Relaxed);
        assert_eq!(sim.join().unwrap(), Exit::Stopped);
        // The simulator closed its end: the card is out.
        let mut buf = [0u8; 1];
        assert_eq!(s.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn splits_decodes_and_frames_messages() {
        let stream = [
            0x00, 0x01, CTRL_ATR, 0x00, 0x04, 0x00, 0xFD, 0x00, 0x00, 0x00, 0x05, 0x00,
        ];
        let (atr, rest) = split_message(&stream).unwrap();
        assert_eq!(Message::decode(atr), Message::Atr);
        let (apdu, rest) = split_message(rest).unwrap();
        assert_eq!(
            Message::decode(apdu),
            Message::Apdu(&[0x00, 0xFD, 0x00, 0x00])
        );
        // Five bytes announced, one there: not a whole message yet.
        assert_eq!(split_message(rest), None);
        assert_eq!(split_message(&[0x00]), None);
        assert_eq!(split_message(&[0x00, 0x00]), Some((&[][..], &[][..])));
        assert_eq!(Message::decode(&[]), Message::Empty);
        assert_eq!(Message::decode(&[0x03]), Message::UnknownControl(0x03));
        for (code, message) in [
            (CTRL_OFF, Message::PowerOff),
            (CTRL_ON, Message::PowerOn),
            (CTRL_RESET, Message::Reset),
        ] {
            assert_eq!(Message::decode(&[code]), message);
        }
        assert_eq!(
            encode_frame(&[0xAB; 3]).unwrap(),
            [0x00, 0x03, 0xAB, 0xAB, 0xAB]
        );
        let longest = encode_frame(&[0; 0xFFFF]).unwrap();
        assert_eq!(split_message(&longest).map(|(b, _)| b.len()), Some(0xFFFF));
        assert!(encode_frame(&[0; 0x1_0000]).is_err());
    }

    #[test]
    fn answers_messages_without_a_socket() {
        let mut card = PivCard::in_memory(&SimOptions::default()).unwrap();
        let Reply::Send(atr) = respond(&mut card, Message::Atr) else {
            panic!("no ATR");
        };
        assert_eq!(atr.as_slice(), card.atr());
        assert_eq!(respond(&mut card, Message::PowerOn), Reply::Nothing);
        assert_eq!(
            respond(&mut card, Message::UnknownControl(0x42)),
            Reply::Nothing
        );
        assert_eq!(
            respond(&mut card, Message::Apdu(&[0x00, 0xFD, 0x00, 0x00, 0x00])),
            Reply::Send(vec![5, 4, 3, 0x90, 0x00])
        );
    }

    #[test]
    fn waits_for_vpcd_to_appear() {
        // Find a free port, release it, and only listen there after the simulator started trying.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let target = addr.to_string();
        let sim = std::thread::spawn(move || {
            let mut card = PivCard::in_memory(&SimOptions::default()).unwrap();
            run(&target, &mut card, &stop2).unwrap()
        });
        std::thread::sleep(Duration::from_millis(350));
        let listener = TcpListener::bind(addr).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        send(&mut s, &[CTRL_ATR]);
        assert_eq!(recv(&mut s).first(), Some(&0x3B));
        stop.store(true, Ordering::Relaxed);
        assert_eq!(sim.join().unwrap(), Exit::Stopped);
    }

    #[test]
    fn remove_on_sign_closes_the_connection_and_returns() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = AtomicBool::new(false);
        let sim = std::thread::spawn(move || {
            let options = SimOptions {
                fault: Some(crate::piv::Fault::RemoveOnSign),
                ..SimOptions::default()
            };
            let mut card = PivCard::in_memory(&options).unwrap();
            run(&addr, &mut card, &stop).unwrap()
        });
        let (mut s, _) = listener.accept().unwrap();
        // VERIFY the default PIN, then GENERAL AUTHENTICATE with 9A: 7C { 82 00, 81 20 <hash> }
        // (the fault spares 9E, whose signature identifies a card at insertion).
        send(&mut s, b"\x00\x20\x00\x80\x08123456\xFF\xFF");
        assert_eq!(recv(&mut s), [0x90, 0x00]);
        let mut apdu = vec![
            0x00, 0x87, 0x11, 0x9A, 0x26, 0x7C, 0x24, 0x82, 0x00, 0x81, 0x20,
        ];
        apdu.extend([0x11; 32]);
        send(&mut s, &apdu);
        assert_eq!(sim.join().unwrap(), Exit::Pulled);
        let mut buf = [0u8; 1];
        assert_eq!(
            s.read(&mut buf).unwrap(),
            0,
            "no answer, just a closed socket"
        );
    }

    #[test]
    fn stops_while_waiting_for_vpcd() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let stop = AtomicBool::new(true);
        let mut card = PivCard::in_memory(&SimOptions::default()).unwrap();
        assert_eq!(run(&addr, &mut card, &stop).unwrap(), Exit::Stopped);
    }

    #[test]
    fn reconnects_after_vpcd_drops_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let sim = std::thread::spawn(move || {
            let mut card = PivCard::in_memory(&SimOptions::default()).unwrap();
            run(&addr, &mut card, &stop2).unwrap()
        });
        let (s, _) = listener.accept().unwrap();
        drop(s);
        let (mut s, _) = listener.accept().unwrap();
        send(&mut s, &[CTRL_ATR]);
        assert_eq!(recv(&mut s).first(), Some(&0x3B));
        stop.store(true, Ordering::Relaxed);
        assert_eq!(sim.join().unwrap(), Exit::Stopped);
    }
}
