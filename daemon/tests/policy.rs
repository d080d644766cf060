//! Token policy end to end through D-Bus: the real daemon (in this process, so a manual clock can
//! stand in for time), a private `dbus-daemon`, the zbus proxy the CLI uses, and the simulated PIV
//! card attached directly to the service (no pcscd: these tests are about tokens, the PC/SC path has
//! its own tests in `tests/`). Each knob of the configuration file is checked here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tessera::clock::ManualClock;
use tessera::policy::config::Config;
use tessera::service::DeviceAttach;
use tessera::transport::worker::DirectConnection;
use tessera_client::ManagerProxy;
use tessera_sim::piv::{PivCard, SimOptions};
use tesserad::{BusChoice, Daemon, DeviceSource, Options};
use zbus::zvariant::{ObjectPath, OwnedValue, Value};

const READER: &str = "Sim Reader 0";
const DEVICE: &str = "/org/tessera/Tessera1/devices/Sim_20Reader_200";

/// A daemon with one simulated card, a client connection, and the clock they share.
struct World {
    _bus: common::Bus,
    dir: tempfile::TempDir,
    daemon: Option<Daemon>,
    clock: ManualClock,
    conn: zbus::Connection,
    address: String,
    /// The card's state file, to insert the same card again.
    card: std::path::PathBuf,
    card_options: SimOptions,
}

impl World {
    async fn start(config: &str) -> World {
        Self::start_with(config, SimOptions::default()).await
    }

    async fn start_with(config: &str, card: SimOptions) -> World {
        let bus = common::Bus::start();
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("tessera.toml");
        std::fs::write(&config_path, config).unwrap();
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000));
        let address = bus.address().to_owned();
        let mut world = World {
            _bus: bus,
            dir,
            daemon: None,
            clock,
            conn: zbus::connection::Builder::address(address.as_str())
                .unwrap()
                .build()
                .await
                .unwrap(),
            address,
            card: PathBuf::new(),
            card_options: card,
        };
        world.card = world.dir.path().join("card.json");
        world.start_daemon().await;
        world.insert(world.same_card()).await;
        let id = world
            .manager()
            .await
            .enroll("", &ObjectPath::try_from(DEVICE).unwrap(), pin("123456"))
            .await
            .unwrap();
        assert!(!id.is_empty());
        world
    }

    async fn start_daemon(&mut self) {
        let config_path = self.dir.path().join("tessera.toml");
        let config = Config::load(&config_path).unwrap();
        let mut opts = Options::new(
            BusChoice::Address(self.address.clone()),
            self.dir.path().join("state"),
            config,
        );
        opts.devices = DeviceSource::External;
        opts.clock = Arc::new(self.clock.clone());
        opts.config_path = Some(config_path);
        self.daemon = Some(Daemon::start(opts).await.unwrap());
    }

    /// The world's card (created on first use, then the same card from its state file).
    fn same_card(&self) -> PivCard {
        PivCard::open(&self.card, &self.card_options).unwrap()
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().unwrap()
    }

    async fn insert(&self, card: PivCard) {
        let svc = self.daemon().service();
        svc.device_added(DeviceAttach {
            reader: READER.into(),
            event_count: 1,
            source_instance: Some("sim".into()),
            transport: "sim".into(),
            connection: Box::new(DirectConnection(card)),
        })
        .await
        .unwrap();
        svc.enumeration_complete().await.unwrap();
    }

    async fn pull(&self) {
        self.daemon()
            .service()
            .device_removed(READER)
            .await
            .unwrap();
    }

    async fn manager(&self) -> ManagerProxy<'static> {
        ManagerProxy::new(&self.conn).await.unwrap()
    }

    async fn authenticate(&self) -> String {
        self.manager()
            .await
            .authenticate("", pin("123456"))
            .await
            .unwrap()
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    fn write_config(&self, text: &str) {
        std::fs::write(self.dir.path().join("tessera.toml"), text).unwrap();
    }

    async fn stop(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.stop().await;
        }
    }
}

fn pin(p: &str) -> HashMap<&'static str, Value<'static>> {
    HashMap::from([("pin", Value::from(p.to_owned()))])
}

/// The D-Bus error name's last element, e.g. "TokenRevoked".
fn error_name<T: std::fmt::Debug>(r: zbus::Result<T>) -> String {
    match r {
        Err(zbus::Error::MethodError(name, _, _)) => {
            name.as_str().rsplit('.').next().unwrap().to_owned()
        }
        other => panic!("expected a D-Bus error, got {other:?}"),
    }
}

fn u64_claim(claims: &HashMap<String, OwnedValue>, key: &str) -> u64 {
    u64::try_from(&claims[key]).unwrap()
}

fn str_claim(claims: &HashMap<String, OwnedValue>, key: &str) -> String {
    String::try_from(claims[key].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn lifetime_sets_exp_and_expiry_answers_token_expired() {
    let w = World::start("[token]\nlifetime = \"90s\"\n").await;
    let m = w.manager().await;
    let token = w.authenticate().await;
    let claims = m.validate_token(&token).await.unwrap();
    assert_eq!(u64_claim(&claims, "exp") - u64_claim(&claims, "iat"), 90);
    w.advance(89);
    m.validate_token(&token).await.unwrap();
    w.advance(1);
    assert_eq!(error_name(m.validate_token(&token).await), "TokenExpired");
    assert_eq!(error_name(m.refresh_token(&token).await), "TokenExpired");
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_replaces_the_token_within_max_lifetime() {
    let w = World::start("[token]\nlifetime = \"10m\"\nmax_lifetime = \"15m\"\n").await;
    let m = w.manager().await;
    let mut revoked = m.receive_token_revoked().await.unwrap();
    let first = w.authenticate().await;
    let c1 = m.validate_token(&first).await.unwrap();
    let auth_time = u64_claim(&c1, "iat");
    w.advance(9 * 60);
    let second = m.refresh_token(&first).await.unwrap();
    assert_ne!(first, second);
    let c2 = m.validate_token(&second).await.unwrap();
    // Clamped to the end of the session, not a fresh 10 minutes.
    assert_eq!(u64_claim(&c2, "exp"), auth_time + 15 * 60);
    assert_eq!(str_claim(&c2, "sid"), str_claim(&c1, "sid"));
    assert_eq!(error_name(m.validate_token(&first).await), "TokenRevoked");
    let sig = tokio::time::timeout(Duration::from_secs(5), revoked.next())
        .await
        .unwrap()
        .unwrap();
    let args = sig.args().unwrap();
    assert_eq!(
        (args.jti(), args.reason()),
        (&str_claim(&c1, "jti").as_str(), &"refreshed")
    );
    // A refreshed token cannot be refreshed again.
    assert_eq!(error_name(m.refresh_token(&first).await), "TokenRevoked");
    w.advance(6 * 60);
    assert_eq!(error_name(m.validate_token(&second).await), "TokenExpired");
    assert_eq!(error_name(m.refresh_token(&second).await), "TokenExpired");
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_needs_the_device_present() {
    let w = World::start("[token]\nrevoke_on_removal = false\n").await;
    let m = w.manager().await;
    let token = w.authenticate().await;
    w.pull().await;
    // Not revoked by the removal (policy), but no longer refreshable.
    m.validate_token(&token).await.unwrap();
    assert_eq!(error_name(m.refresh_token(&token).await), "DeviceRemoved");
    m.validate_token(&token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn removal_revokes_by_default() {
    let w = World::start("").await;
    let m = w.manager().await;
    let token = w.authenticate().await;
    w.pull().await;
    assert_eq!(error_name(m.validate_token(&token).await), "TokenRevoked");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_timeout_kills_unused_tokens_only() {
    let w = World::start("[token]\nidle_timeout = \"60s\"\n").await;
    let m = w.manager().await;
    let token = w.authenticate().await;
    w.advance(59);
    m.validate_token(&token).await.unwrap();
    w.advance(59);
    m.validate_token(&token).await.unwrap();
    w.advance(60);
    assert_eq!(error_name(m.validate_token(&token).await), "TokenExpired");
}

#[tokio::test(flavor = "multi_thread")]
async fn single_use_token_validates_exactly_once() {
    let w = World::start("[token]\nsingle_use = true\n").await;
    let m = w.manager().await;
    let mut revoked = m.receive_token_revoked().await.unwrap();
    let token = w.authenticate().await;
    let claims = m.validate_token(&token).await.unwrap();
    assert_eq!(error_name(m.validate_token(&token).await), "TokenRevoked");
    let sig = tokio::time::timeout(Duration::from_secs(5), revoked.next())
        .await
        .unwrap()
        .unwrap();
    let args = sig.args().unwrap();
    assert_eq!(args.jti(), &str_claim(&claims, "jti").as_str());
    assert_eq!(args.reason(), &"used");
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_concurrent_validations_of_a_single_use_token_one_wins() {
    let w = World::start("[token]\nsingle_use = true\n").await;
    for _round in 0..5 {
        let token = w.authenticate().await;
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let address = w.address.clone();
            let token = token.clone();
            tasks.push(tokio::spawn(async move {
                // Each client its own connection, as separate processes would be.
                let conn = zbus::connection::Builder::address(address.as_str())
                    .unwrap()
                    .build()
                    .await
                    .unwrap();
                let m = ManagerProxy::new(&conn).await.unwrap();
                m.validate_token(&token).await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                r => assert_eq!(error_name(r), "TokenRevoked"),
            }
        }
        assert_eq!(ok, 1, "exactly one validation may succeed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn consumption_survives_a_restart() {
    let mut w = World::start("[token]\nsingle_use = true\n").await;
    let token = w.authenticate().await;
    let unused = w.authenticate().await;
    w.manager().await.validate_token(&token).await.unwrap();
    w.stop().await;
    w.start_daemon().await;
    // The same card is still in the reader (same pcscd event count): its session is confirmed.
    w.insert(w.same_card()).await;
    let m = w.manager().await;
    match m.validate_token(&token).await {
        Err(zbus::Error::MethodError(name, Some(msg), _)) => {
            assert!(name.as_str().ends_with("TokenRevoked"), "{name}");
            assert!(msg.contains("used"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    m.validate_token(&unused).await.unwrap();
    assert_eq!(error_name(m.validate_token(&unused).await), "TokenRevoked");
}

#[tokio::test(flavor = "multi_thread")]
async fn live_token_limit_supersedes_the_oldest() {
    let w = World::start("[token]\nmax_live_per_user = 2\n").await;
    let m = w.manager().await;
    let mut revoked = m.receive_token_revoked().await.unwrap();
    let t1 = w.authenticate().await;
    let c1 = m.validate_token(&t1).await.unwrap();
    w.advance(1);
    let t2 = w.authenticate().await;
    w.advance(1);
    let t3 = w.authenticate().await;
    assert_eq!(error_name(m.validate_token(&t1).await), "TokenRevoked");
    m.validate_token(&t2).await.unwrap();
    m.validate_token(&t3).await.unwrap();
    let sig = tokio::time::timeout(Duration::from_secs(5), revoked.next())
        .await
        .unwrap()
        .unwrap();
    let args = sig.args().unwrap();
    assert_eq!(args.jti(), &str_claim(&c1, "jti").as_str());
    assert_eq!(args.reason(), &"superseded");
    assert_eq!(m.list_sessions("").await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn audience_and_overrides_user_beats_group_beats_global() {
    // root is in group root; the user table overrides the group's lifetime.
    let w = World::start(
        "[token]\naudience = \"login\"\nlifetime = \"20m\"\n\
         [groups.root.token]\nlifetime = \"5m\"\nsingle_use = true\n\
         [users.root.token]\nlifetime = \"7m\"\n",
    )
    .await;
    let m = w.manager().await;
    let token = w.authenticate().await;
    let claims = m.validate_token(&token).await.unwrap();
    assert_eq!(str_claim(&claims, "aud"), "login");
    assert_eq!(
        u64_claim(&claims, "exp") - u64_claim(&claims, "iat"),
        7 * 60
    );
    // single_use came from the group.
    assert_eq!(error_name(m.validate_token(&token).await), "TokenRevoked");
    let policy: HashMap<String, (String, String)> = m
        .effective_policy("")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, v, s)| (k, (v, s)))
        .collect();
    assert_eq!(policy["lifetime"].1, "[users.root.token]");
    assert_eq!(policy["single_use"].1, "[groups.root.token]");
    assert_eq!(policy["audience"].1, "[token]");
    assert_eq!(policy["max_live_per_user"].1, "default");
}

/// EffectivePolicy lists the [piv], [fido], [pam] and [session] rules after the token rules, each as
/// resolved for the caller (root, a member of group root) and named by its table.
#[tokio::test(flavor = "multi_thread")]
async fn effective_policy_shows_every_table_with_its_source() {
    let w = World::start(
        "[fido]\nrp_id = \"pam://policy-test\"\n\
         [groups.root.fido]\nuser_verification = \"required\"\n\
         [users.root.fido]\npin_required = true\n\
         [pam]\nmax_age = \"5m\"\n[pam.services.sudo]\nreuse = false\n\
         [session]\non_removal = \"none\"\n\
         [groups.root.session]\non_removal = \"terminate\"\n",
    )
    .await;
    let m = w.manager().await;
    let rows = m.effective_policy("").await.unwrap();
    let keys: Vec<&str> = rows.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "lifetime",
            "max_lifetime",
            "idle_timeout",
            "single_use",
            "revoke_on_removal",
            "max_live_per_user",
            "audience",
            "min_refresh_interval",
            "piv.allow_pinless",
            "fido.rp_id",
            "fido.user_verification",
            "fido.pin_required",
            "fido.algorithms",
            "fido.check_sign_count",
            "pam.reuse",
            "pam.max_age",
            "pam.services.sudo.reuse",
            "pam.services.sudo.max_age",
            "session.on_removal",
        ]
    );
    let row: HashMap<&str, (&str, &str)> = rows
        .iter()
        .map(|(k, v, s)| (k.as_str(), (v.as_str(), s.as_str())))
        .collect();
    assert_eq!(row["lifetime"], ("15m", "default"));
    assert_eq!(row["piv.allow_pinless"], ("false", "default"));
    assert_eq!(row["fido.rp_id"], ("\"pam://policy-test\"", "[fido]"));
    assert_eq!(
        row["fido.user_verification"],
        ("\"required\"", "[groups.root.fido]")
    );
    assert_eq!(row["fido.pin_required"], ("true", "[users.root.fido]"));
    assert_eq!(row["fido.algorithms"], ("[\"es256\"]", "default"));
    assert_eq!(row["fido.check_sign_count"], ("true", "default"));
    assert_eq!(row["pam.reuse"], ("true", "default"));
    assert_eq!(row["pam.max_age"], ("5m", "[pam]"));
    assert_eq!(
        row["pam.services.sudo.reuse"],
        ("false", "[pam.services.sudo]")
    );
    // A key the service table leaves out applies as [pam] says, and says so.
    assert_eq!(row["pam.services.sudo.max_age"], ("5m", "[pam]"));
    assert_eq!(
        row["session.on_removal"],
        ("\"terminate\"", "[groups.root.session]")
    );
    // Naming the account gives the same view.
    assert_eq!(m.effective_policy("root").await.unwrap(), rows);
}

/// Two wrong guesses within 5 minutes lock the user out for a minute; the card has 10 PIN retries so
/// its own counter never interferes.
async fn lockout_world() -> World {
    let card = SimOptions {
        pin_retries: 10,
        ..SimOptions::default()
    };
    World::start_with(
        "[auth]\nmax_failures = 2\nfailure_window = \"5m\"\nlockout = \"1m\"\n",
        card,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn lockout_refuses_before_touching_the_card() {
    let w = lockout_world().await;
    let m = w.manager().await;
    for left in [9, 8] {
        let r = m.authenticate("", pin("000000")).await;
        match r {
            Err(zbus::Error::MethodError(name, Some(msg), _)) => {
                assert!(name.as_str().ends_with("PinInvalid"), "{name}");
                assert!(msg.contains(&format!("{left} retries")), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }
    // Locked: even the right PIN is refused, and the card's counter is not touched.
    match m.authenticate("", pin("123456")).await {
        Err(zbus::Error::MethodError(name, Some(msg), _)) => {
            assert!(name.as_str().ends_with("RateLimited"), "{name}");
            assert!(msg.contains("retry after 60"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    w.advance(61);
    // The lockout is over, and the card still has 8 retries (one more wrong PIN says 7).
    assert_eq!(
        error_name(m.authenticate("", pin("000000")).await),
        "PinInvalid"
    );
    w.authenticate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_keeps_old_tokens_until_they_expire() {
    let w = World::start("[token]\nlifetime = \"10m\"\n[keys]\nrotate_every = \"1h\"\n").await;
    let m = w.manager().await;
    let old = w.authenticate().await;
    let jwks_keys = |jwks: String| -> usize {
        let v: serde_json::Value = serde_json::from_str(&jwks).unwrap();
        v["keys"].as_array().unwrap().len()
    };
    assert_eq!(jwks_keys(m.jwks().await.unwrap()), 1);
    w.advance(1);
    m.rotate_key().await.unwrap();
    assert_eq!(jwks_keys(m.jwks().await.unwrap()), 2);
    m.validate_token(&old).await.unwrap();
    let new = w.authenticate().await;
    assert_ne!(kid_of(&old), kid_of(&new));
    // Once the old key's last token has expired, the key leaves the JWKS and its tokens are invalid.
    w.advance(10 * 60);
    assert_eq!(jwks_keys(m.jwks().await.unwrap()), 1);
    assert_eq!(error_name(m.validate_token(&old).await), "TokenInvalid");
    // Automatic rotation after `rotate_every`.
    w.advance(3600);
    let auto = w.authenticate().await;
    assert_ne!(kid_of(&auto), kid_of(&new));
}

fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    v["kid"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_applies_a_good_file_and_keeps_the_old_policy_on_a_bad_one() {
    let w = World::start("[token]\nlifetime = \"10m\"\n").await;
    let m = w.manager().await;
    w.write_config("[token]\nlifetime = \"2m\"\n");
    m.reload_config().await.unwrap();
    let t = w.authenticate().await;
    let c = m.validate_token(&t).await.unwrap();
    assert_eq!(u64_claim(&c, "exp") - u64_claim(&c, "iat"), 120);
    w.write_config("[token]\nlifetime = \"soon\"\n");
    match m.reload_config().await {
        Err(zbus::Error::MethodError(name, Some(msg), _)) => {
            assert!(name.as_str().ends_with("ConfigError"), "{name}");
            assert!(msg.contains("soon"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    let t = w.authenticate().await;
    let c = m.validate_token(&t).await.unwrap();
    assert_eq!(u64_claim(&c, "exp") - u64_claim(&c, "iat"), 120);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_listed_and_revoked_together() {
    let w = World::start("").await;
    let m = w.manager().await;
    let t1 = w.authenticate().await;
    let t2 = w.authenticate().await;
    let sessions = m.list_sessions("root").await.unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(str_claim(&sessions[0], "reader"), READER);
    m.revoke_sessions("").await.unwrap();
    for t in [&t1, &t2] {
        match m.validate_token(t).await {
            Err(zbus::Error::MethodError(_, Some(msg), _)) => assert!(msg.contains("logout")),
            other => panic!("{other:?}"),
        }
    }
    assert!(m.list_sessions("").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_records_are_pruned_from_the_store() {
    let mut w = World::start("[token]\nlifetime = \"1m\"\n").await;
    let m = w.manager().await;
    let t1 = w.authenticate().await;
    m.revoke_token(&t1).await.unwrap();
    w.authenticate().await;
    let rows = |w: &World| -> i64 {
        let db = rusqlite::Connection::open(w.dir.path().join("state/tessera.db")).unwrap();
        db.query_row("SELECT count(*) FROM tokens", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(rows(&w), 2);
    w.advance(61);
    // Issuing prunes; the revocation record is gone with the token's lifetime.
    w.authenticate().await;
    assert_eq!(rows(&w), 1);
    assert_eq!(error_name(m.validate_token(&t1).await), "TokenExpired");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_attempts_count_toward_the_lockout() {
    let w = lockout_world().await;
    let m = w.manager().await;
    let device = ObjectPath::try_from(DEVICE).unwrap();
    for _ in 0..2 {
        assert_eq!(
            error_name(m.enroll("", &device, pin("000000")).await),
            "PinInvalid"
        );
    }
    assert_eq!(
        error_name(m.enroll("", &device, pin("123456")).await),
        "RateLimited"
    );
    assert_eq!(
        error_name(m.authenticate("", pin("123456")).await),
        "RateLimited"
    );
    w.advance(61);
    w.authenticate().await;
}
