//! Part 1, Authenticate latency: rounds that interleave authentications (of a user below the
//! live-token limit, and of one at it) with the floors they are made of: one APDU round trip
//! through pcscd and vpcd, one PC/SC transaction, one bus round trip, the card's and the daemon's
//! signatures (in-process), and a write + fsync the size of the store's WAL commit. Beside v1
//! Authenticate, alternating with it one by one, the same authentication as a request
//! (StartAuthentication with the PIN up front, call → Completed; [`crate::start_auth`]).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use pcsc::{Disposition, Protocols, Scope, ShareMode};
use tessera::piv::cert::CertSummary;
use tessera::piv::{Pin, Piv, Slot};
use tessera::token::keys::KeyRing;
use tessera::token::{jwk_thumbprint, new_jti, Claims, Confirmation};
use tessera::transport::CardTransport;
use tessera::verify::challenge::Challenge;
use tessera_client::ManagerProxy;
use tessera_sim::piv::{PivCard, SimOptions};
use tokio::runtime::Runtime;
use zbus::fdo::PeerProxy;
use zbus::zvariant::Value;
use zbus::Connection;

use crate::machine::unix_now;
use crate::start_auth::{
    authenticate_subscribing, measure_cpu, CpuPerCall, Outcome, RequestSignals, Way, WAYS,
};
use crate::throughput::CpuPids;
use crate::{LIMIT_USER, PIN, READER, USER};

// 1. Authenticate latency: rounds that interleave authentications with the floor measurements.
pub const AUTH_WARMUP: usize = 30;
/// Authentications of [`LIMIT_USER`] before measuring: past the limit, so each one supersedes.
pub const LIMIT_WARMUP: usize = 40;
pub const AUTH_ROUNDS: usize = 20;
pub const AUTH_PER_ROUND: usize = 15;
pub const APDU_PER_ROUND: usize = 40;
pub const TXN_PER_ROUND: usize = 20;
pub const PING_PER_ROUND: usize = 40;
pub const COMPUTE_PER_ROUND: usize = 3;
pub const FSYNC_PER_ROUND: usize = 10;
/// GET VERSION (Yubico PIV extension, INS FD) with Le = 00 (the strict simulator answers a command
/// without Le with 61xx, as ISO/IEC 7816-4 has it): the cheapest command the simulator answers.
pub const GET_VERSION: [u8; 5] = [0x00, 0xFD, 0x00, 0x00, 0x00];

/// The bench's own bus client: the runtime it is driven from and its proxies.
pub struct Client<'a> {
    pub rt: &'a Runtime,
    pub conn: &'a Connection,
    pub manager: &'a ManagerProxy<'static>,
    pub peer: &'a PeerProxy<'static>,
    /// The subscription to the Request signals, made once.
    pub signals: &'a RequestSignals,
}

impl Client<'_> {
    pub fn authenticate(&self) -> Result<String> {
        self.rt
            .block_on(self.manager.authenticate(USER, pin_options()))
            .context("Authenticate")
    }

    /// One authentication, timed inside the runtime (call → token).
    pub fn timed_authenticate(&self) -> Result<(Duration, String)> {
        self.timed_authenticate_as(USER)
    }

    /// [`Client::timed_authenticate`] for `user` (root calls for everyone).
    pub fn timed_authenticate_as(&self, user: &str) -> Result<(Duration, String)> {
        self.rt.block_on(async {
            let t = Instant::now();
            let token = self.manager.authenticate(user, pin_options()).await?;
            Ok((t.elapsed(), token))
        })
    }

    /// One timed authentication of [`USER`] in `way`: Authenticate (call → token),
    /// StartAuthentication with the PIN up front on the one subscription of [`Client::signals`]
    /// (call → Completed), or subscribing for this request alone as the CLI does (timed from the
    /// subscription).
    pub fn authenticate_by(&self, way: Way) -> Result<Outcome> {
        match way {
            Way::Authenticate => {
                let (elapsed, token) = self.timed_authenticate()?;
                Ok(Outcome {
                    elapsed,
                    token,
                    states: Vec::new(),
                })
            }
            Way::Start => self
                .rt
                .block_on(self.signals.authenticate(self.manager, USER)),
            Way::StartSubscribing => self.rt.block_on(async {
                let outcome = authenticate_subscribing(self.conn, self.manager, USER).await;
                // Its signals also reached the one subscription, which nothing reads meanwhile.
                self.signals.drain().await;
                outcome
            }),
        }
    }

    pub fn timed_ping(&self) -> Result<Duration> {
        self.rt.block_on(async {
            let t = Instant::now();
            self.peer.ping().await?;
            Ok(t.elapsed())
        })
    }

    /// The `jti` claim of a valid token.
    pub fn jti(&self, token: &str) -> Result<String> {
        let claims = self.rt.block_on(self.manager.validate_token(token))?;
        match claims.get("jti").map(|v| &**v) {
            Some(Value::Str(s)) => Ok(s.as_str().to_owned()),
            other => bail!("ValidateToken returned no string jti: {other:?}"),
        }
    }
}

pub fn pin_options() -> HashMap<&'static str, Value<'static>> {
    HashMap::from([("pin", Value::from(PIN))])
}

pub struct AuthResults {
    pub auth: Vec<Duration>,
    /// StartAuthentication with the PIN up front, call → Completed, one subscription for all.
    pub start: Vec<Duration>,
    /// The same, subscribing per request (the CLI's way), subscription → Completed.
    pub start_subscribing: Vec<Duration>,
    /// Per iteration, StartAuthentication minus the Authenticate beside it (ms).
    pub start_minus_auth: Vec<f64>,
    /// The Progress states a StartAuthentication signalled before Completed (the last one's).
    pub start_states: Vec<String>,
    /// CPU per call of each way, in batches of one way at a time.
    pub cpu: Vec<(Way, CpuPerCall)>,
    /// Authenticate of [`LIMIT_USER`], at the limit: each supersedes the user's oldest token.
    pub at_limit: Vec<Duration>,
    pub apdu: Vec<Duration>,
    pub txn: Vec<Duration>,
    pub ping: Vec<Duration>,
    pub card: Vec<Duration>,
    pub verify: Vec<Duration>,
    pub jwt: Vec<Duration>,
    pub fsync: Vec<Duration>,
    /// APDUs the daemon sends per authentication (counted on the in-process card).
    pub apdus_per_auth: usize,
    /// Every token issued so far; revoked before the card pulls so each pull revokes just one.
    pub tokens: Vec<String>,
}

pub fn measure_auth(client: &Client<'_>, work: &Path, pids: CpuPids) -> Result<AuthResults> {
    let mut r = AuthResults {
        auth: Vec::new(),
        start: Vec::new(),
        start_subscribing: Vec::new(),
        start_minus_auth: Vec::new(),
        start_states: Vec::new(),
        cpu: Vec::new(),
        at_limit: Vec::new(),
        apdu: Vec::new(),
        txn: Vec::new(),
        ping: Vec::new(),
        card: Vec::new(),
        verify: Vec::new(),
        jwt: Vec::new(),
        fsync: Vec::new(),
        apdus_per_auth: 0,
        tokens: Vec::new(),
    };
    for _ in 0..AUTH_WARMUP {
        for way in WAYS {
            r.tokens.push(client.authenticate_by(way)?.token);
        }
    }
    for _ in 0..LIMIT_WARMUP {
        client.timed_authenticate_as(LIMIT_USER)?;
    }
    let ctx = pcsc::Context::establish(Scope::User).context("pcsc: establishing a context")?;
    let mut card = ctx
        .connect(READER, ShareMode::Shared, Protocols::ANY)
        .context("pcsc: connecting to the simulated card")?;
    let mut compute = Compute::new(work)?;
    let mut buf = [0u8; 258];
    for _ in 0..10 {
        get_version(&card, &mut buf)?;
        compute.fsync()?;
    }
    const STEPS: usize = 7;
    for round in 0..AUTH_ROUNDS {
        // Rotate the order so that no part always runs right after the same other part.
        for step in 0..STEPS {
            match (round + step) % STEPS {
                0 => {
                    for i in 0..AUTH_PER_ROUND {
                        interleaved(client, &mut r, round * AUTH_PER_ROUND + i)?;
                    }
                }
                1 => {
                    for _ in 0..APDU_PER_ROUND {
                        let t = Instant::now();
                        get_version(&card, &mut buf)?;
                        r.apdu.push(t.elapsed());
                    }
                }
                2 => {
                    for _ in 0..TXN_PER_ROUND {
                        let t = Instant::now();
                        let tx = card.transaction().context("pcsc: begin transaction")?;
                        tx.end(Disposition::LeaveCard)
                            .map_err(|(_, e)| e)
                            .context("pcsc: end transaction")?;
                        r.txn.push(t.elapsed());
                    }
                }
                3 => {
                    for _ in 0..PING_PER_ROUND {
                        r.ping.push(client.timed_ping()?);
                    }
                }
                4 => {
                    for _ in 0..COMPUTE_PER_ROUND {
                        let (card_t, verify_t, apdus) = compute.card_and_verify()?;
                        r.card.push(card_t);
                        r.verify.push(verify_t);
                        r.apdus_per_auth = apdus;
                        r.jwt.push(compute.jwt()?);
                    }
                }
                5 => {
                    for _ in 0..FSYNC_PER_ROUND {
                        r.fsync.push(compute.fsync()?);
                    }
                }
                _ => {
                    for _ in 0..AUTH_PER_ROUND {
                        r.at_limit.push(client.timed_authenticate_as(LIMIT_USER)?.0);
                    }
                }
            }
        }
    }
    r.cpu = measure_cpu(client, pids, &mut r.tokens)?;
    // The pull test expects one live token per card session: end the limit user's 32.
    client
        .rt
        .block_on(client.manager.revoke_sessions(LIMIT_USER))
        .context("RevokeSessions of the limit user")?;
    // Dropping a pcsc::Card disconnects with SCARD_RESET_CARD, which would reset the card under the
    // daemon's connection; leave it as it is.
    card.disconnect(Disposition::LeaveCard)
        .map_err(|(_, e)| e)
        .context("pcsc: disconnecting")?;
    Ok(r)
}

/// The three ways to authenticate, one each, in the `n`-th of the six orders, so that load noise
/// hits each alike and none always follows the same other one.
fn interleaved(client: &Client<'_>, r: &mut AuthResults, n: usize) -> Result<()> {
    const ORDERS: [[Way; 3]; 6] = [
        [Way::Authenticate, Way::Start, Way::StartSubscribing],
        [Way::Start, Way::StartSubscribing, Way::Authenticate],
        [Way::StartSubscribing, Way::Authenticate, Way::Start],
        [Way::Authenticate, Way::StartSubscribing, Way::Start],
        [Way::StartSubscribing, Way::Start, Way::Authenticate],
        [Way::Start, Way::Authenticate, Way::StartSubscribing],
    ];
    let mut v1 = Duration::ZERO;
    let mut start = Duration::ZERO;
    for way in ORDERS[n % ORDERS.len()] {
        let o = client.authenticate_by(way)?;
        match way {
            Way::Authenticate => {
                v1 = o.elapsed;
                r.auth.push(o.elapsed);
            }
            Way::Start => {
                start = o.elapsed;
                r.start.push(o.elapsed);
                r.start_states = o.states;
            }
            Way::StartSubscribing => r.start_subscribing.push(o.elapsed),
        }
        r.tokens.push(o.token);
    }
    r.start_minus_auth
        .push((start.as_secs_f64() - v1.as_secs_f64()) * 1e3);
    Ok(())
}

pub fn get_version(card: &pcsc::Card, buf: &mut [u8]) -> Result<()> {
    let resp = card
        .transmit(&GET_VERSION, buf)
        .context("pcsc: GET VERSION")?;
    ensure!(
        resp.ends_with(&[0x90, 0x00]),
        "GET VERSION answered {resp:02x?}"
    );
    Ok(())
}

/// The CPU and disk parts of an authentication, measured in-process: the card's work (the
/// simulator's PIV application, ECDSA signature included), the daemon's check of the card's
/// signature, the daemon's token signature, and one durable write.
pub struct Compute {
    pub card: PivCard,
    pub pin: Pin,
    pub cert: CertSummary,
    pub keys: KeyRing,
    pub claims: Claims,
    pub probe: File,
    pub commits: u64,
}

/// One SQLite WAL frame: a 24-byte frame header and a 4 KiB page.
pub const WAL_FRAME: usize = 24 + 4096;
/// Frames the daemon's store appends per issued token (the token row and its indexes), as counted
/// with `strace -f` on tesserad during Authenticate.
pub const WAL_FRAMES_PER_TOKEN: usize = 8;
/// SQLite checkpoints (and then reuses the WAL from its start) after 1000 pages by default.
pub const WAL_COMMITS_PER_CYCLE: u64 = 1000 / WAL_FRAMES_PER_TOKEN as u64;

impl Compute {
    pub fn new(work: &Path) -> Result<Compute> {
        let mut card = PivCard::in_memory(&SimOptions::default())
            .map_err(|e| anyhow!("in-process card: {e}"))?;
        let der = {
            let mut piv = Piv::new(&mut card);
            piv.select()?;
            piv.certificate(Slot::Authentication)?
                .ok_or_else(|| anyhow!("the in-process card has no 9A certificate"))?
        };
        let cert = tessera::piv::cert::summarize(&der)?;
        let keys_dir = work.join("bench-keys");
        fs::create_dir(&keys_dir)?;
        let now = unix_now();
        let keys = KeyRing::load_or_create(&keys_dir, now)?;
        let claims = Claims {
            iss: "tessera:bench".into(),
            sub: USER.into(),
            aud: "tessera".into(),
            iat: now,
            nbf: now,
            exp: now + 900,
            jti: new_jti(),
            amr: ["hwk", "sc", "pin", "mfa"].map(String::from).to_vec(),
            cnf: Confirmation {
                jkt: jwk_thumbprint(&cert.public_key),
            },
            sid: new_jti(),
            enr: new_jti(),
            lsid: None,
            seat: None,
        };
        // The probe lives in the work directory, next to the daemon's state directory.
        let probe = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(work.join("fsync-probe"))?;
        probe.sync_all()?;
        Ok(Compute {
            card,
            pin: Pin::new(PIN)?,
            cert,
            keys,
            claims,
            probe,
            commits: 0,
        })
    }

    /// The daemon's card session (devices.rs `pin_and_sign`) against the in-process card, and the
    /// daemon's check of the signature; returns both times and the number of APDUs sent.
    pub fn card_and_verify(&mut self) -> Result<(Duration, Duration, usize)> {
        let challenge = Challenge::new()?;
        let digest = challenge.digest();
        let mut counting = Counting {
            inner: &mut self.card,
            sent: 0,
        };
        let t = Instant::now();
        let signature = {
            let mut piv = Piv::new(&mut counting);
            piv.select()?;
            piv.pin_status()?;
            piv.verify_pin(&self.pin)?;
            let signature = piv.sign_p256(Slot::Authentication, &digest)?;
            piv.reset_pin_status()?;
            signature
        };
        let card_t = t.elapsed();
        let apdus = counting.sent;
        let t = Instant::now();
        challenge.verify(&self.cert.public_key, &signature)?;
        Ok((card_t, t.elapsed(), apdus))
    }

    pub fn jwt(&mut self) -> Result<Duration> {
        self.claims.jti = new_jti();
        let t = Instant::now();
        let token = self.keys.sign(&self.claims)?;
        let d = t.elapsed();
        ensure!(!token.is_empty(), "empty token");
        Ok(d)
    }

    /// A WAL commit as the store makes it for one token with synchronous=FULL: eight frames written
    /// at the end of the log, then fsync; the log grows, then starts over as after a checkpoint (the
    /// checkpoint itself, which copies the pages into the database, is not part of the floor).
    pub fn fsync(&mut self) -> Result<Duration> {
        let frames = [0x5Au8; WAL_FRAME * WAL_FRAMES_PER_TOKEN];
        let offset = (self.commits % WAL_COMMITS_PER_CYCLE) * frames.len() as u64;
        self.commits += 1;
        let t = Instant::now();
        for (i, frame) in frames.chunks(WAL_FRAME).enumerate() {
            self.probe
                .write_all_at(frame, offset + (i * WAL_FRAME) as u64)?;
        }
        self.probe.sync_all()?;
        Ok(t.elapsed())
    }
}

/// Counts the APDUs that go through a transport.
pub struct Counting<'a, T: CardTransport + ?Sized> {
    pub inner: &'a mut T,
    pub sent: usize,
}

impl<T: CardTransport + ?Sized> CardTransport for Counting<'_, T> {
    fn transmit(&mut self, command: &[u8]) -> tessera::Result<Vec<u8>> {
        self.sent += 1;
        self.inner.transmit(command)
    }
}
