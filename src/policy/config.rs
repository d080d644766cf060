//! The administrator's configuration (`/etc/tessera/tessera.toml`): token lifetimes and limits, PIN,
//! PIV, lockout, key-rotation, device, PAM-reuse and login-session rules, with per-user and
//! per-group overrides of the token rules, of `[piv] allow_pinless`, of `[fido]` user verification
//! and of `[session] on_removal`.
//! Reading the file and resolving the effective policy of one user live here (with `sourced.rs`,
//! where each resolved value came from, and `explain.rs`, the view `tessera policy show` prints);
//! enforcing it lives in the service.
//!
//! `tessera.toml.example` at the repository root documents every key and its default.
//!
//! # Precedence
//!
//! Each `[token]` key of a user's effective policy comes from the first of these that sets it:
//! 1. `[users.NAME.token]` for the user;
//! 2. the `[groups.NAME.token]` tables of the Unix groups the user is in;
//! 3. `[token]`;
//! 4. the built-in default.
//!
//! When the user is in several configured groups that set the same key, the most restrictive value
//! among those groups wins, key by key: the shortest `lifetime` and `max_lifetime`; the shortest
//! non-zero `idle_timeout` (off only if every such group says "0s"); `single_use` and
//! `revoke_on_removal` true if any says true; the smallest `max_live_per_user`; the longest
//! `min_refresh_interval`. `audience` has no
//! order, so the group whose name sorts first (byte order) wins. Ties go to that group too.
//!
//! A group's value beats `[token]` even when it is less strict: groups are how an administrator
//! relaxes a rule for some accounts as well as tightens it.
//!
//! `[fido] user_verification` and `pin_required` follow the same order too (`[users.NAME.fido]`,
//! then `[groups.NAME.fido]`, then `[fido]`, then the defaults "preferred" and false); among groups
//! that disagree, the strictest wins ("required" over "preferred" over "discouraged"; true over
//! false). See [`Config::fido_rules_for`].
//!
//! `allow_pinless` follows the same order (`[users.NAME.piv]`, then `[groups.NAME.piv]`, then
//! `[piv]`, then the default false); among groups that disagree, false wins.
//!
//! `[session] on_removal` ("lock", the default; "terminate"; "none": what a device removal does to
//! the logind sessions its tokens are bound to) follows the same order too (`[users.NAME.session]`,
//! then `[groups.NAME.session]`, then `[session]`); among groups the strictest wins: terminate over
//! lock over none. See [`Config::on_removal_for`].
//!
//! `[pam]` `reuse` (default true) and `max_age` (default "15m") rule verify-once session reuse
//! by the PAM module; `[pam.services.NAME]` sets either for one PAM service, key by key over
//! `[pam]`. The module's own `max_age=` can only make the limit stricter. See
//! [`Config::reuse_rules_for`].
//!
//! # Validation
//!
//! Unknown keys and bad values are errors that name the file, the key path (`users.alice.token.lifetime`)
//! and what is wrong; the daemon refuses to start on them rather than guess. `lifetime` may not exceed
//! `max_lifetime` in `[token]`, nor in any user or group table combined with `[token]`. A user table
//! combined with a group table can still disagree (membership is only known at login); then the
//! lifetime is cut to the `max_lifetime`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Error, Result};

mod explain;
mod fido;
mod parse;
mod sourced;

pub use explain::PolicyItem;
pub use fido::{uv_name, FidoOverride, FidoPolicy, FidoRules, ALGORITHMS, DEFAULT_RP_ID};
use sourced::{of_member_groups, strictest, Sourced};
pub use sourced::{ConfigTable, Source};

/// Seconds in a day, the unit of the longest durations.
const DAY: u64 = 86_400;
#[cfg(test)]
use parse::{
    AUTH_KEYS, DEVICE_KEYS, FIDO_KEYS, KEYS_KEYS, MAX_DURATION, PAM_KEYS, PIN_KEYS, PIV_KEYS,
    SESSION_KEYS, TOKEN_KEYS, TOP_KEYS,
};

/// Default location of the configuration file.
pub const DEFAULT_PATH: &str = "/etc/tessera/tessera.toml";

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// Token rules of `[token]` (before per-user and per-group overrides; see
    /// [`Config::token_policy_for`]).
    pub token: TokenPolicy,
    /// PIN rules.
    pub pin: PinPolicy,
    /// Lockout after failed authentications.
    pub auth: AuthPolicy,
    /// Signing-key rotation.
    pub keys: KeyPolicy,
    /// Device access rules.
    pub device: DevicePolicy,
    /// `[users.NAME.token]` overrides, by user name.
    pub users: BTreeMap<String, TokenOverride>,
    /// `[groups.NAME.token]` overrides, by Unix group name.
    pub groups: BTreeMap<String, TokenOverride>,
    /// PIV rules, with their per-user and per-group overrides (see [`Config::allow_pinless_for`]).
    pub piv: PivPolicy,
    /// FIDO rules, with their per-user and per-group overrides (see [`Config::fido_rules_for`]).
    pub fido: FidoPolicy,
    /// Verify-once reuse of session tokens by the PAM module (`[pam]`, `[pam.services.NAME]`).
    pub pam: PamPolicy,
    /// What a device removal does to login sessions (`[session]`, per user and group).
    pub session: SessionPolicy,
}

/// `[pam]`: whether a PAM stack's `reuse` may succeed, and how old the device authentication
/// behind the reused token may be; `[pam.services.NAME]` sets the same keys for one PAM service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PamPolicy {
    /// `reuse`: may a `reuse` in a PAM stack succeed at all. Default true (the PAM module's own
    /// `reuse` option still has to ask for it).
    pub reuse: bool,
    /// `max_age`: the oldest device authentication a reuse accepts. Default 15 minutes.
    pub max_age: Duration,
    /// `[pam.services.NAME]`, by PAM service name.
    pub services: BTreeMap<String, PamOverride>,
}

/// The `[pam]` keys one `[pam.services.NAME]` table sets; `None`: as `[pam]` says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PamOverride {
    /// `reuse`.
    pub reuse: Option<bool>,
    /// `max_age`.
    pub max_age: Option<Duration>,
}

/// What the reuse rules are for one PAM service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReuseRules {
    /// Whether a reuse may succeed.
    pub reuse: bool,
    /// The oldest device authentication it accepts.
    pub max_age: Duration,
}

/// `[session]`, `[users.NAME.session]`, `[groups.NAME.session]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionPolicy {
    /// `[session] on_removal` (default "lock").
    pub on_removal: OnRemoval,
    /// `[users.NAME.session] on_removal`, by user name.
    pub users: BTreeMap<String, OnRemoval>,
    /// `[groups.NAME.session] on_removal`, by Unix group name.
    pub groups: BTreeMap<String, OnRemoval>,
}

impl Default for PamPolicy {
    fn default() -> Self {
        PamPolicy {
            reuse: true,
            max_age: Duration::from_secs(15 * 60),
            services: BTreeMap::new(),
        }
    }
}

impl OnRemoval {
    /// The value as written in the file.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            OnRemoval::None => "none",
            OnRemoval::Lock => "lock",
            OnRemoval::Terminate => "terminate",
        }
    }

    /// Parses the value as written in the file.
    #[must_use]
    pub fn from_name(name: &str) -> Option<OnRemoval> {
        match name {
            "none" => Some(OnRemoval::None),
            "lock" => Some(OnRemoval::Lock),
            "terminate" => Some(OnRemoval::Terminate),
            _ => None,
        }
    }
}

/// What happens to a login session when the device its token came from is removed
/// (`[session] on_removal`, per user and group; among groups the strictest wins: terminate, lock,
/// none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum OnRemoval {
    /// "none": nothing beyond what `revoke_on_removal` does to the token.
    None,
    /// "lock": logind locks the session (the default).
    #[default]
    Lock,
    /// "terminate": logind ends the session.
    Terminate,
}

/// Which PIV keys may be enrolled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PivPolicy {
    /// `[piv] allow_pinless`: whether a Card Authentication (9E) key, which signs without a PIN and
    /// so is a weaker factor than 9A, may be enrolled. Default false.
    pub allow_pinless: bool,
    /// `[users.NAME.piv] allow_pinless`, by user name.
    pub users_allow_pinless: BTreeMap<String, bool>,
    /// `[groups.NAME.piv] allow_pinless`, by Unix group name.
    pub groups_allow_pinless: BTreeMap<String, bool>,
}

/// How tokens are issued and when they die.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// `exp - iat` of a new token.
    pub lifetime: Duration,
    /// A session cannot be refreshed past this, counted from its first authentication.
    pub max_lifetime: Duration,
    /// A token dies when neither validated nor refreshed for this long; `None` (written "0s") is off.
    pub idle_timeout: Option<Duration>,
    /// The first successful validation consumes the token.
    pub single_use: bool,
    /// Whether pulling the device out revokes its tokens.
    pub revoke_on_removal: bool,
    /// Issuing a token beyond this many live ones revokes the user's oldest (reason "superseded").
    pub max_live_per_user: u32,
    /// Value of the `aud` claim (RFC 7519 section 4.1.3).
    pub audience: String,
    /// A token that came from a refresh may be refreshed again only this long after it was issued,
    /// so one token lineage refreshes at most once per interval ("0s": no limit).
    pub min_refresh_interval: Duration,
}

/// PIN handling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinPolicy {
    /// Never spend a card's last PIN retry (answer `PinWouldBlock` instead).
    pub keep_last_retry: bool,
}

/// Lockout: `max_failures` failed authentications of one user within `failure_window` refuse further
/// attempts for `lockout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPolicy {
    /// Failures that trigger the lockout.
    pub max_failures: u32,
    /// The window the failures are counted in.
    pub failure_window: Duration,
    /// How long further attempts are refused.
    pub lockout: Duration,
}

/// Signing keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPolicy {
    /// Automatic signing-key rotation period.
    pub rotate_every: Duration,
}

/// Device access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePolicy {
    /// The longest one device operation (an enrollment or authentication exchange) may take.
    pub timeout: Duration,
    /// How long a request waits for a device to be inserted ("waiting-for-device").
    pub insert_timeout: Duration,
    /// How long a request waits for each PIN (or PUK) prompt to be answered.
    pub pin_timeout: Duration,
    /// How long a request waits for the user to touch the device.
    pub touch_timeout: Duration,
    /// `simulated_hid_dir`: a directory where each Unix socket that appears is a simulated FIDO
    /// key plugged in (`tessera-sim fido --hid-socket`), for tests and demos. `None` (the default):
    /// no such source runs.
    pub simulated_hid_dir: Option<PathBuf>,
}

/// The `[token]` keys one user or group table sets; `None` means "not set here".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenOverride {
    /// `lifetime`.
    pub lifetime: Option<Duration>,
    /// `max_lifetime`.
    pub max_lifetime: Option<Duration>,
    /// `idle_timeout`: `Some(None)` is an explicit "0s" (off).
    pub idle_timeout: Option<Option<Duration>>,
    /// `single_use`.
    pub single_use: Option<bool>,
    /// `revoke_on_removal`.
    pub revoke_on_removal: Option<bool>,
    /// `max_live_per_user`.
    pub max_live_per_user: Option<u32>,
    /// `audience`.
    pub audience: Option<String>,
    /// `min_refresh_interval`.
    pub min_refresh_interval: Option<Duration>,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            lifetime: Duration::from_secs(15 * 60),
            max_lifetime: Duration::from_secs(8 * 3600),
            idle_timeout: None,
            single_use: false,
            revoke_on_removal: true,
            max_live_per_user: 32,
            audience: "tessera".into(),
            min_refresh_interval: Duration::from_secs(10),
        }
    }
}

impl Default for PinPolicy {
    fn default() -> Self {
        PinPolicy {
            keep_last_retry: true,
        }
    }
}

impl Default for AuthPolicy {
    fn default() -> Self {
        AuthPolicy {
            max_failures: 5,
            failure_window: Duration::from_secs(5 * 60),
            lockout: Duration::from_secs(60),
        }
    }
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy {
            rotate_every: Duration::from_secs(30 * DAY),
        }
    }
}

impl Default for DevicePolicy {
    fn default() -> Self {
        DevicePolicy {
            timeout: Duration::from_secs(10),
            insert_timeout: Duration::from_secs(60),
            pin_timeout: Duration::from_secs(60),
            touch_timeout: Duration::from_secs(30),
            simulated_hid_dir: None,
        }
    }
}

impl Config {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file, the key and the problem, when the file cannot be read or
    /// is not a valid configuration.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: cannot read: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Parses and checks configuration text.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key and the problem (one message per kind of mistake: see
    /// `tessera.toml.example`).
    pub fn parse(text: &str) -> Result<Config> {
        parse::parse(text)
    }

    /// The effective token policy of `user`, a member of `groups` (see the module doc for precedence).
    #[must_use]
    pub fn token_policy_for(&self, user: &str, groups: &[String]) -> TokenPolicy {
        let r = self.resolve(user, groups);
        TokenPolicy {
            lifetime: r.lifetime.value,
            max_lifetime: r.max_lifetime.value,
            idle_timeout: r.idle_timeout.value,
            single_use: r.single_use.value,
            revoke_on_removal: r.revoke_on_removal.value,
            max_live_per_user: r.max_live_per_user.value,
            audience: r.audience.value,
            min_refresh_interval: r.min_refresh_interval.value,
        }
    }

    /// The reuse rules for the PAM service `service` (`None`: unnamed): each key from
    /// `[pam.services.NAME]`, else `[pam]`, else the default.
    #[must_use]
    pub fn reuse_rules_for(&self, service: Option<&str>) -> ReuseRules {
        let (reuse, max_age) = self.reuse_sourced(service);
        ReuseRules {
            reuse: reuse.value,
            max_age: max_age.value,
        }
    }

    /// What a device removal does to the login sessions of `user`, a member of `groups`:
    /// `[users.NAME.session]`, else the strictest of the groups' (terminate, lock, none), else
    /// `[session]`.
    #[must_use]
    pub fn on_removal_for(&self, user: &str, groups: &[String]) -> OnRemoval {
        self.on_removal_sourced(user, groups).value
    }

    /// Whether `user`, a member of `groups`, may enroll a PIN-less (9E) key: the user's table, else
    /// the groups' (false if any of them says false), else `[piv]`.
    #[must_use]
    pub fn allow_pinless_for(&self, user: &str, groups: &[String]) -> bool {
        self.allow_pinless_sourced(user, groups).value
    }

    /// [`Config::reuse_rules_for`]: `reuse` and `max_age`, each with its source.
    fn reuse_sourced(&self, service: Option<&str>) -> (Sourced<bool>, Sourced<Duration>) {
        let p = &self.pam;
        let d = PamPolicy::default();
        let mut reuse = Sourced::global(ConfigTable::Pam, p.reuse, &d.reuse);
        let mut max_age = Sourced::global(ConfigTable::Pam, p.max_age, &d.max_age);
        if let Some((name, o)) = service.and_then(|s| p.services.get_key_value(s)) {
            let src = || Source::PamService(name.clone());
            reuse.set(o.reuse, src);
            max_age.set(o.max_age, src);
        }
        (reuse, max_age)
    }

    /// [`Config::on_removal_for`] with its source.
    fn on_removal_sourced(&self, user: &str, groups: &[String]) -> Sourced<OnRemoval> {
        let p = &self.session;
        let t = ConfigTable::Session;
        let mut r = Sourced::global(t, p.on_removal, &OnRemoval::default());
        let set = of_member_groups(&p.groups, groups).map(|(name, v)| (name, *v));
        r.set_from(strictest(t, set, |a, b| a > b));
        r.set_by_user(t, user, p.users.get(user).copied());
        r
    }

    /// [`Config::allow_pinless_for`] with its source.
    fn allow_pinless_sourced(&self, user: &str, groups: &[String]) -> Sourced<bool> {
        let p = &self.piv;
        let t = ConfigTable::Piv;
        let mut r = Sourced::global(t, p.allow_pinless, &PivPolicy::default().allow_pinless);
        let set = of_member_groups(&p.groups_allow_pinless, groups).map(|(name, v)| (name, *v));
        r.set_from(strictest(t, set, |a, b| !*a && *b));
        r.set_by_user(t, user, p.users_allow_pinless.get(user).copied());
        r
    }

    fn resolve(&self, user: &str, groups: &[String]) -> Resolved {
        let d = TokenPolicy::default();
        let g = &self.token;
        let t = ConfigTable::Token;
        let mut r = Resolved {
            lifetime: Sourced::global(t, g.lifetime, &d.lifetime),
            max_lifetime: Sourced::global(t, g.max_lifetime, &d.max_lifetime),
            idle_timeout: Sourced::global(t, g.idle_timeout, &d.idle_timeout),
            single_use: Sourced::global(t, g.single_use, &d.single_use),
            revoke_on_removal: Sourced::global(t, g.revoke_on_removal, &d.revoke_on_removal),
            max_live_per_user: Sourced::global(t, g.max_live_per_user, &d.max_live_per_user),
            audience: Sourced::global(t, g.audience.clone(), &d.audience),
            min_refresh_interval: Sourced::global(
                t,
                g.min_refresh_interval,
                &d.min_refresh_interval,
            ),
        };

        // BTreeMap order: ties and the audience go to the group whose name sorts first.
        let member: Vec<(&String, &TokenOverride)> =
            of_member_groups(&self.groups, groups).collect();
        let shorter = |a: &Duration, b: &Duration| a < b;
        let truer = |a: &bool, b: &bool| *a && !*b;
        r.lifetime
            .set_from(strictest_token(&member, |o| o.lifetime, shorter));
        r.max_lifetime
            .set_from(strictest_token(&member, |o| o.max_lifetime, shorter));
        r.idle_timeout.set_from(strictest_token(
            &member,
            |o| o.idle_timeout,
            |a, b| match (a, b) {
                (Some(a), Some(b)) => a < b,
                (Some(_), None) => true,
                (None, _) => false,
            },
        ));
        r.single_use
            .set_from(strictest_token(&member, |o| o.single_use, truer));
        r.revoke_on_removal
            .set_from(strictest_token(&member, |o| o.revoke_on_removal, truer));
        r.max_live_per_user.set_from(strictest_token(
            &member,
            |o| o.max_live_per_user,
            |a, b| a < b,
        ));
        r.min_refresh_interval.set_from(strictest_token(
            &member,
            |o| o.min_refresh_interval,
            |a, b| a > b,
        ));
        r.audience.set_from(strictest_token(
            &member,
            |o| o.audience.clone(),
            |_, _| false,
        ));

        if let Some(o) = self.users.get(user) {
            r.lifetime.set_by_user(t, user, o.lifetime);
            r.max_lifetime.set_by_user(t, user, o.max_lifetime);
            r.idle_timeout.set_by_user(t, user, o.idle_timeout);
            r.single_use.set_by_user(t, user, o.single_use);
            r.revoke_on_removal
                .set_by_user(t, user, o.revoke_on_removal);
            r.max_live_per_user
                .set_by_user(t, user, o.max_live_per_user);
            r.audience.set_by_user(t, user, o.audience.clone());
            r.min_refresh_interval
                .set_by_user(t, user, o.min_refresh_interval);
        }

        // Only a user table combined with group tables can get here (load checks each table
        // against [token]); a token must never outlive its session, so the stricter limit wins.
        if r.lifetime.value > r.max_lifetime.value {
            r.lifetime = r.max_lifetime.clone();
        }
        r
    }
}

/// Token policy values with their sources, while resolving.
struct Resolved {
    lifetime: Sourced<Duration>,
    max_lifetime: Sourced<Duration>,
    idle_timeout: Sourced<Option<Duration>>,
    single_use: Sourced<bool>,
    revoke_on_removal: Sourced<bool>,
    max_live_per_user: Sourced<u32>,
    audience: Sourced<String>,
    min_refresh_interval: Sourced<Duration>,
}

/// The strictest value the member `groups` set for one `[token]` key (see [`strictest`]).
fn strictest_token<T>(
    groups: &[(&String, &TokenOverride)],
    get: impl Fn(&TokenOverride) -> Option<T>,
    stricter: impl Fn(&T, &T) -> bool,
) -> Option<Sourced<T>> {
    let set = groups
        .iter()
        .filter_map(|(name, o)| get(o).map(|v| (*name, v)));
    strictest(ConfigTable::Token, set, stricter)
}

/// `d` as written in the file: the largest whole unit of d, h, m, s ("0s" for zero).
pub(crate) fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 {
        return humantime::format_duration(d).to_string().replace(' ', "");
    }
    match s {
        0 => "0s".into(),
        _ if s % DAY == 0 => format!("{}d", s / DAY),
        _ if s % 3600 == 0 => format!("{}h", s / 3600),
        _ if s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// A user or group name as a TOML key: bare when it can be, quoted otherwise.
pub(crate) fn toml_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_owned()
    } else {
        toml::Value::String(name.to_owned()).to_string()
    }
}

#[cfg(test)]
#[path = "config_test.rs"]
mod tests;
