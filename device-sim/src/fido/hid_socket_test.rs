//! Tests of `hid_socket.rs`: the key behind a real Unix socket, with several connections.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::ctaphid::{cmd, Report, BROADCAST_CID, REPORT_LEN};
use super::hid_socket::serve;
use super::presence::KeyHandle;
use super::touch::{TouchMode, TouchSource};
use super::{FidoKey, FidoOptions};

fn request(s: &mut UnixStream, cid: u32, command: u8, data: &[u8]) {
    assert!(data.len() <= 57);
    let mut r = [0u8; REPORT_LEN];
    r[..4].copy_from_slice(&cid.to_be_bytes());
    r[4] = command;
    r[5..7].copy_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
    r[7..7 + data.len()].copy_from_slice(data);
    s.write_all(&r).unwrap();
}

fn read_report(s: &mut UnixStream) -> Report {
    let mut r = [0u8; REPORT_LEN];
    s.read_exact(&mut r).unwrap();
    r
}

fn init(s: &mut UnixStream) -> u32 {
    request(s, BROADCAST_CID, cmd::INIT, &[9; 8]);
    let r = read_report(s);
    assert_eq!(r[4], cmd::INIT);
    u32::from_be_bytes(r[15..19].try_into().unwrap())
}

struct Running {
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    touch: TouchSource,
    server: std::thread::JoinHandle<()>,
}

fn start(mode: TouchMode) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let touch = TouchSource::new(mode);
    let key = FidoKey::in_memory(FidoOptions::default());
    let (handle, _) = KeyHandle::spawn(key, touch.clone(), Arc::clone(&stop)).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stop2 = Arc::clone(&stop);
    let server = std::thread::spawn(move || {
        serve(&path, &handle, &stop2, move || ready_tx.send(()).unwrap()).unwrap();
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    Running {
        dir,
        stop,
        touch,
        server,
    }
}

#[test]
fn two_connections_share_channels_and_answers_go_to_their_sender() {
    let k = start(TouchMode::Manual);
    let path = k.dir.path().join("key.sock");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut a = UnixStream::connect(&path).unwrap();
    let mut b = UnixStream::connect(&path).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let ca = init(&mut a);
    let cb = init(&mut b);
    assert_ne!(ca, cb);
    // authenticatorSelection (CTAP 2.1 §6.9) waits for a touch: KEEPALIVE UPNEEDED meanwhile.
    request(&mut a, ca, cmd::CBOR, &[0x0B]);
    let r = read_report(&mut a);
    assert_eq!((r[4], r[7]), (cmd::KEEPALIVE, 0x02));
    // B is told the key is busy.
    request(&mut b, cb, cmd::PING, &[1]);
    let r = read_report(&mut b);
    assert_eq!((r[4], r[7]), (cmd::ERROR, 0x06));
    // CANCEL ends the wait with CTAP2_ERR_KEEPALIVE_CANCEL.
    request(&mut a, ca, cmd::CANCEL, &[]);
    let answer = loop {
        let r = read_report(&mut a);
        if r[4] != cmd::KEEPALIVE {
            break r;
        }
    };
    assert_eq!((answer[4], answer[6], answer[7]), (cmd::CBOR, 1, 0x2D));
    // Usable right after: touch, and selection succeeds; B's PING works again.
    // A touch given before the request is taken by it.
    let giver = {
        let touch = k.touch.clone();
        std::thread::spawn(move || touch.touch(Duration::from_secs(5)))
    };
    request(&mut a, ca, cmd::CBOR, &[0x0B]);
    let answer = loop {
        let r = read_report(&mut a);
        if r[4] != cmd::KEEPALIVE {
            break r;
        }
    };
    assert_eq!((answer[4], answer[6], answer[7]), (cmd::CBOR, 1, 0x00));
    assert!(giver.join().unwrap());
    request(&mut b, cb, cmd::PING, &[1, 2, 3]);
    let r = read_report(&mut b);
    assert_eq!((r[4], r[6], &r[7..10]), (cmd::PING, 3, &[1, 2, 3][..]));
    // Unplugged: both connections see end of file and the socket file is gone.
    k.stop.store(true, Ordering::Relaxed);
    k.server.join().unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(a.read(&mut buf).unwrap(), 0);
    assert_eq!(b.read(&mut buf).unwrap(), 0);
    assert!(!path.exists());
}

#[test]
fn a_connection_closing_mid_touch_cancels_the_command() {
    let k = start(TouchMode::Manual);
    let path = k.dir.path().join("key.sock");
    let mut a = UnixStream::connect(&path).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let ca = init(&mut a);
    request(&mut a, ca, cmd::CBOR, &[0x0B]);
    assert_eq!(read_report(&mut a)[4], cmd::KEEPALIVE);
    drop(a);
    // The key is free again at once (the waiting command saw the cancel), for a new connection.
    let mut b = UnixStream::connect(&path).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let cb = init(&mut b);
    let mut tries = 0;
    loop {
        request(&mut b, cb, cmd::PING, &[7]);
        let r = read_report(&mut b);
        if r[4] == cmd::PING {
            break;
        }
        assert_eq!((r[4], r[7]), (cmd::ERROR, 0x06));
        tries += 1;
        assert!(tries < 50, "still busy");
        std::thread::sleep(Duration::from_millis(20));
    }
    k.stop.store(true, Ordering::Relaxed);
    k.server.join().unwrap();
}

#[test]
fn a_stale_socket_is_replaced_and_other_files_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let listener = super::touch::bind_private(&path).unwrap();
    drop(listener);
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(super::touch::bind_private(&file).is_err());
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}
