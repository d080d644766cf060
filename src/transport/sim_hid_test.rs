#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::net::UnixListener;
use std::thread;

use super::*;

/// The next event, within 5 s.
async fn next(rx: &mut UnboundedReceiver<DeviceEvent>) -> DeviceEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no device event within 5 s")
        .expect("the source ended")
}

fn added(ev: DeviceEvent) -> (String, Box<dyn HidTransport>) {
    match ev {
        DeviceEvent::Added(AddedDevice {
            location,
            kind: DeviceKind::SecurityKey,
            transport: Transport::Sim,
            contactless: false,
            connection: DeviceConnection::Hid(hid),
            ..
        }) => (location, hid),
        other => panic!("not a simulated key plugged in: {other:?}"),
    }
}

fn removed(ev: DeviceEvent) -> String {
    match ev {
        DeviceEvent::Removed {
            transport: Transport::Sim,
            location,
        } => location,
        other => panic!("not a simulated key pulled out: {other:?}"),
    }
}

/// A fake simulated key: accepts one connection and echoes each 64-byte report, reversed, until
/// told to hang up (by dropping the sender) or the client leaves.
fn fake_key(path: &Path) -> std::sync::mpsc::Sender<()> {
    let listener = UnixListener::bind(path).unwrap();
    let (hang_up, hung_up) = std::sync::mpsc::channel::<()>();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut report = [0u8; HID_REPORT_LEN];
        let mut got = 0;
        loop {
            if let Err(std::sync::mpsc::TryRecvError::Disconnected) = hung_up.try_recv() {
                return; // drops the connection: the key is pulled out
            }
            match conn.read(&mut report[got..]) {
                Ok(0) => return,
                Ok(n) => got += n,
                Err(_) => continue,
            }
            if got == HID_REPORT_LEN {
                report.reverse();
                // Two writes, to check that the reader puts a split report together.
                conn.write_all(&report[..10]).unwrap();
                thread::sleep(Duration::from_millis(5));
                conn.write_all(&report[10..]).unwrap();
                got = 0;
            }
        }
    });
    hang_up
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_come_and_go_as_keys() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.sock");
    let hang_up_first = fake_key(&first);
    // Not sockets: ignored.
    std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let source = SimHidSource::start(dir.path(), tx).unwrap();

    // The initial scan: the socket present, then the end of the enumeration.
    let (location, mut hid) = added(next(&mut rx).await);
    assert_eq!(location, first.to_string_lossy());
    assert!(matches!(
        next(&mut rx).await,
        DeviceEvent::EnumerationComplete {
            transport: Transport::Sim
        }
    ));

    // Reports both ways, exactly 64 bytes each; nothing to read is a timeout, not an error.
    let hid = tokio::task::spawn_blocking(move || {
        assert!(hid
            .read_report(Duration::from_millis(30))
            .unwrap()
            .is_none());
        let mut report = [0u8; HID_REPORT_LEN];
        for (i, b) in report.iter_mut().enumerate() {
            *b = i as u8;
        }
        hid.write_report(&report).unwrap();
        let back = hid.read_report(Duration::from_secs(5)).unwrap().unwrap();
        report.reverse();
        assert_eq!(back, report);
        hid
    })
    .await
    .unwrap();

    // A key plugged in later, and a file that is not a socket.
    let second = dir.path().join("second.sock");
    let _hang_up_second = fake_key(&second);
    std::fs::write(dir.path().join("more.txt"), b"x").unwrap();
    let (location, _second_hid) = added(next(&mut rx).await);
    assert_eq!(location, second.to_string_lossy());

    // Its socket file deleted: pulled out.
    std::fs::remove_file(&second).unwrap();
    assert_eq!(removed(next(&mut rx).await), second.to_string_lossy());

    // The first key hangs up while its file stays: pulled out too, and its reads say so.
    drop(hang_up_first);
    assert_eq!(removed(next(&mut rx).await), first.to_string_lossy());
    let mut hid = hid;
    let r = tokio::task::spawn_blocking(move || hid.read_report(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(matches!(r, Err(Error::DeviceRemoved)), "{r:?}");

    // Deleting the file of a key already reported gone says nothing more.
    std::fs::remove_file(&first).unwrap();
    drop(source);
    let late = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
    assert!(
        matches!(late, Ok(None) | Err(_)),
        "unexpected event {late:?}"
    );
}

#[test]
fn a_missing_directory_is_a_configuration_error() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _in = rt.enter();
    let (tx, _rx) = mpsc::unbounded_channel();
    let r = SimHidSource::start(Path::new("/nonexistent/tessera-sim-hid"), tx).map(|_| ());
    assert!(matches!(r, Err(Error::Config(_))), "{r:?}");
}

#[test]
fn without_a_runtime_the_source_says_so() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let r = SimHidSource::start(Path::new("/tmp"), tx).map(|_| ());
    assert!(matches!(r, Err(Error::Internal(_))), "{r:?}");
}
