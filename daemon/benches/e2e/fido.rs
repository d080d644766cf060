//! Part 1b, FIDO authentication through the daemon (issue 8 §5): the simulated key (`tessera-sim
//! fido --touch auto`) on a HID socket in the daemon's `simulated_hid_dir` and the same kind of key
//! as an NFC card in vpcd reader 1, each enrolled for [`FIDO_USER`]; Authenticate with the PIN up
//! front (the daemon gets one PIN token per request) naming the key, call → token. Interleaved
//! round by round with the PIV Authenticate of part 1 and with one CTAPHID PING round trip of a
//! trivial payload through [`tessera::fido::ctaphid::CtapHid`] over the key's socket (a second
//! connection, sharing the key as two opens of one hidraw node do): the floor of a HID exchange.
//!
//! The keys are plugged in for this part only and pulled at its end, so the other parts measure
//! the stack they always did.

use std::collections::HashMap;
use std::io::{ErrorKind, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use tessera::cancel::CancelToken;
use tessera::fido::ctaphid::CtapHid;
use tessera::fido::link::{CtapLink, Keepalive, LinkContext};
use tessera::transport::{HidTransport, HID_REPORT_LEN};
use tessera_client::DeviceProxy;
use zbus::fdo::ObjectManagerProxy;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, Value};

use crate::auth::Client;
use crate::procs::Proc;
use crate::stack::{wait_for, Binaries};
use crate::stats::Percentiles;
use crate::{PIN, START_TIMEOUT};

/// The account the FIDO keys are enrolled for (root keeps the PIV card alone, so its
/// Authenticate without a device stays unambiguous).
pub const FIDO_USER: &str = "tessera-bench-fido";
/// Card side of vpcd reader 1, where the NFC key lies.
pub const NFC_VPCD_ADDR: &str = "127.0.0.1:35964";
pub const FIDO_WARMUP: usize = 10;
pub const FIDO_ROUNDS: usize = 10;
pub const FIDO_PER_ROUND: usize = 10;
pub const PINGS_PER_ROUND: usize = 40;
/// The PING payload: small enough for one report.
const PING_DATA: &[u8] = b"tessera bench";

/// Name of the simulated-HID directory under the bench's work directory.
pub const HID_DIR: &str = "hid";

pub struct FidoResults {
    pub piv: Vec<Duration>,
    pub hid: Vec<Duration>,
    pub nfc: Vec<Duration>,
    /// Why the NFC key was not measured, if it was not.
    pub nfc_missing: Option<String>,
    pub ping: Vec<Duration>,
}

/// The `[device]` line that lets the daemon see the bench's HID key; creates the directory,
/// which the daemon must be able to watch when it starts.
pub fn device_config(work: &Path) -> Result<String> {
    let dir = work.join(HID_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(format!(
        "[device]\nsimulated_hid_dir = {:?}\n",
        dir.display().to_string()
    ))
}

/// Plugs both keys in, enrolls them, measures, and pulls them.
pub fn measure_fido(
    client: &Client<'_>,
    bins: &Binaries,
    work: &Path,
    daemon: &Proc,
) -> Result<FidoResults> {
    crate::common::test_user(FIDO_USER);
    let hid_dir = work.join(HID_DIR);
    std::fs::create_dir_all(&hid_dir)?;
    let socket = hid_dir.join("bench.sock");
    let hid_key = start_key(bins, work, "fido-hid", &["--hid-socket"], &socket)?;
    let nfc_key = start_key(
        bins,
        work,
        "fido-nfc",
        &["--vpcd", NFC_VPCD_ADDR],
        Path::new(""),
    )?;
    let hid = wait_fido_device(client, daemon, "sim")?;
    enroll(client, &hid)?;
    // The NFC key is measured when the daemon takes it; its absence is reported, not fatal, so
    // that the rest of the run still says what it can.
    let nfc = wait_fido_device(client, daemon, "nfc").and_then(|d| enroll(client, &d).map(|()| d));
    let mut r = FidoResults {
        piv: Vec::new(),
        hid: Vec::new(),
        nfc: Vec::new(),
        nfc_missing: nfc.as_ref().err().map(|e| format!("{e:#}")),
        ping: Vec::new(),
    };
    let nfc = nfc.ok();
    let mut ping = CtapHid::new(Box::new(SocketHid::connect(&socket)?));
    for _ in 0..FIDO_WARMUP {
        timed_fido(client, &hid)?;
        if let Some(nfc) = &nfc {
            timed_fido(client, nfc)?;
        }
        timed_ping(&mut ping)?;
    }
    for _ in 0..FIDO_ROUNDS {
        for _ in 0..FIDO_PER_ROUND {
            r.piv.push(client.timed_authenticate()?.0);
            r.hid.push(timed_fido(client, &hid)?);
            if let Some(nfc) = &nfc {
                r.nfc.push(timed_fido(client, nfc)?);
            }
        }
        for _ in 0..PINGS_PER_ROUND {
            r.ping.push(timed_ping(&mut ping)?);
        }
    }
    drop(ping);
    drop(hid_key);
    drop(nfc_key);
    Ok(r)
}

/// The summary rows, for the table of the report.
pub fn rows(s: &mut String, r: &FidoResults) {
    use std::fmt::Write as _;
    let target = crate::report::TARGET_AUTH_P50;
    let line = |s: &mut String, what: &str, v: &[Duration], target: Option<Duration>| {
        let p = Percentiles::of(v);
        let (t, verdict) = match target {
            Some(t) => (
                format!("p50 ≤ {}", crate::stats::ms(t)),
                crate::report::verdict(p.p50 <= t).to_owned(),
            ),
            None => (String::new(), String::new()),
        };
        let _ = writeln!(
            s,
            "| {what} (n={}) | {} | {t} | {verdict} |",
            v.len(),
            p.summary()
        );
    };
    line(
        s,
        "FIDO Authenticate over the HID socket, call → token",
        &r.hid,
        Some(target),
    );
    match &r.nfc_missing {
        None => line(
            s,
            "FIDO Authenticate over NFC (pcscd + vpcd), call → token",
            &r.nfc,
            None,
        ),
        Some(why) => {
            let why = why.lines().next().unwrap_or_default().replace('|', "/");
            let _ = writeln!(
                s,
                "| FIDO Authenticate over NFC (pcscd + vpcd) | not measured: {why} | | |"
            );
        }
    }
    line(
        s,
        "PIV Authenticate in the same rounds, call → token",
        &r.piv,
        None,
    );
    line(
        s,
        "CTAPHID PING round trip over the HID socket",
        &r.ping,
        None,
    );
}

fn pin_options(device: Option<&OwnedObjectPath>) -> HashMap<&'static str, Value<'static>> {
    let mut options = HashMap::from([("pin", Value::from(PIN))]);
    if let Some(d) = device {
        options.insert("device", Value::from(d.clone().into_inner()));
    }
    options
}

/// Enrolls [`FIDO_USER`] with the key at `device` (Enroll, PIN up front, the key touched at once).
fn enroll(client: &Client<'_>, device: &OwnedObjectPath) -> Result<()> {
    client
        .rt
        .block_on(
            client
                .manager
                .enroll(FIDO_USER, &ObjectPath::from(device), pin_options(None)),
        )
        .with_context(|| format!("enrolling {FIDO_USER} with {}", device.as_str()))?;
    Ok(())
}

fn timed_fido(client: &Client<'_>, device: &OwnedObjectPath) -> Result<Duration> {
    client.rt.block_on(async {
        let t = Instant::now();
        client
            .manager
            .authenticate(FIDO_USER, pin_options(Some(device)))
            .await
            .with_context(|| format!("FIDO Authenticate on {}", device.as_str()))?;
        Ok(t.elapsed())
    })
}

fn timed_ping(link: &mut CtapHid) -> Result<Duration> {
    let cancel = CancelToken::new();
    let mut keepalive = |_: Keepalive| {};
    let mut ctx = LinkContext {
        cancel: &cancel,
        deadline: Instant::now() + Duration::from_secs(5),
        keepalive: &mut keepalive,
    };
    let t = Instant::now();
    let echo = link.ping(PING_DATA, &mut ctx)?;
    let took = t.elapsed();
    anyhow::ensure!(echo == PING_DATA, "CTAPHID PING echoed {echo:02x?}");
    Ok(took)
}

/// Starts `tessera-sim fido` (`--touch auto`, PIN 123456) with `attach` (`--hid-socket` or
/// `--vpcd ADDR`) and `path` after it when given; waits for `ready`.
fn start_key(
    bins: &Binaries,
    work: &Path,
    name: &'static str,
    attach: &[&str],
    path: &Path,
) -> Result<Proc> {
    let mut cmd = Command::new(&bins.sim);
    cmd.arg("fido")
        .arg("--state")
        .arg(work.join(format!("{name}.json")))
        .args(["--touch", "auto"])
        .args(attach);
    if !path.as_os_str().is_empty() {
        cmd.arg(path);
    }
    let key = Proc::spawn(name, &mut cmd, work)?;
    key.wait_stdout("ready", START_TIMEOUT)?;
    Ok(key)
}

/// Waits until the daemon publishes a FIDO device with `transport`; its object path.
fn wait_fido_device(
    client: &Client<'_>,
    daemon: &Proc,
    transport: &str,
) -> Result<OwnedObjectPath> {
    let rt = client.rt;
    let om = rt.block_on(async {
        ObjectManagerProxy::builder(client.conn)
            .destination(tesserad::BUS_NAME)?
            .path(tesserad::ROOT_PATH)?
            .build()
            .await
    })?;
    let mut found = None;
    wait_for(
        START_TIMEOUT,
        daemon,
        &format!("{transport} FIDO key on the bus"),
        || {
            for path in rt.block_on(om.get_managed_objects())?.into_keys() {
                if !path.as_str().starts_with("/org/tessera/Tessera1/devices/") {
                    continue;
                }
                let d = rt.block_on(async {
                    DeviceProxy::builder(client.conn)
                        .path(path.clone())?
                        .build()
                        .await
                })?;
                if rt.block_on(d.kind())? == "fido" && rt.block_on(d.transport())? == transport {
                    found = Some(path);
                    return Ok(true);
                }
            }
            Ok(false)
        },
    )?;
    found.ok_or_else(|| anyhow!("no {transport} FIDO device"))
}

/// The bench's own HID transport: the simulated key's socket, one 64-byte report per message.
struct SocketHid {
    stream: UnixStream,
    _path: PathBuf,
}

impl SocketHid {
    fn connect(path: &Path) -> Result<SocketHid> {
        let stream = UnixStream::connect(path)
            .with_context(|| format!("connecting to {}", path.display()))?;
        Ok(SocketHid {
            stream,
            _path: path.to_owned(),
        })
    }
}

impl HidTransport for SocketHid {
    fn write_report(&mut self, report: &[u8; HID_REPORT_LEN]) -> tessera::Result<()> {
        self.stream.write_all(report).map_err(tessera::Error::from)
    }

    fn read_report(&mut self, timeout: Duration) -> tessera::Result<Option<[u8; HID_REPORT_LEN]>> {
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(tessera::Error::from)?;
        let mut report = [0u8; HID_REPORT_LEN];
        let mut got = 0;
        while got < HID_REPORT_LEN {
            match self.stream.read(&mut report[got..]) {
                Ok(0) => return Err(tessera::Error::DeviceRemoved),
                Ok(n) => got += n,
                Err(e)
                    if got == 0
                        && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return Ok(None)
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(tessera::Error::from(e)),
            }
        }
        Ok(Some(report))
    }
}
