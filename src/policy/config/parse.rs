//! Reading the configuration file: a TOML tree that keeps each value's position, checked key by
//! key so that every mistake is reported with its key path, its line and what is wrong.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use super::fido::{uv_from_name, FidoOverride, ALGORITHMS};
use super::{
    fmt_duration, toml_key, Config, OnRemoval, PamOverride, TokenOverride, TokenPolicy, DAY,
};
use crate::{Error, Result};

/// Parses and checks configuration text (see [`Config::parse`]).
pub(super) fn parse(text: &str) -> Result<Config> {
    // The plain parse reports syntax errors in toml's words; the spanned one adds line numbers
    // to our own messages but cannot represent dotted keys, so they fall back to the plain tree.
    let plain: toml::Table = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
    let root = match toml::from_str::<Spanned<Kind>>(text) {
        Ok(s) => Node::from(s),
        Err(_) => Node::from_value(toml::Value::Table(plain)),
    };
    Checker { text }.config(&root)
}

/// Durations longer than this are typos (a missing unit, "30y" for "30d"), not policy.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(3650 * DAY);
const MAX_DURATION_TEXT: &str = "10 years (3650d)";
/// Counts above this are typos, not policy; they also keep the arithmetic on them far from overflow.
const MAX_COUNT: i64 = 1_000_000;
const HOW_TO_WRITE_DURATIONS: &str = "write it like \"90s\", \"15m\", \"8h\" or \"30d\"";

/// The keys of each table, in the order of the example file.
pub(crate) const TOP_KEYS: &[&str] = &[
    "token", "pin", "piv", "auth", "keys", "device", "fido", "pam", "session", "users", "groups",
];
pub(crate) const TOKEN_KEYS: &[&str] = &[
    "lifetime",
    "max_lifetime",
    "idle_timeout",
    "single_use",
    "revoke_on_removal",
    "max_live_per_user",
    "audience",
    "min_refresh_interval",
];
pub(crate) const PIN_KEYS: &[&str] = &["keep_last_retry"];
pub(crate) const PIV_KEYS: &[&str] = &["allow_pinless"];
pub(crate) const AUTH_KEYS: &[&str] = &["max_failures", "failure_window", "lockout"];
pub(crate) const KEYS_KEYS: &[&str] = &["rotate_every"];
pub(crate) const FIDO_KEYS: &[&str] = &[
    "rp_id",
    "user_verification",
    "pin_required",
    "algorithms",
    "check_sign_count",
];
/// The `[fido]` keys a user or group table may set.
const FIDO_OVERRIDE_KEYS: &[&str] = &["user_verification", "pin_required"];
pub(crate) const DEVICE_KEYS: &[&str] = &[
    "timeout",
    "insert_timeout",
    "pin_timeout",
    "touch_timeout",
    "simulated_hid_dir",
];
const OVERRIDE_KEYS: &[&str] = &["token", "piv", "fido", "session"];
/// `[pam]`; `services` holds the `[pam.services.NAME]` tables, which take the other keys.
pub(crate) const PAM_KEYS: &[&str] = &["reuse", "max_age", "services"];
const PAM_SERVICE_KEYS: &[&str] = &["reuse", "max_age"];
pub(crate) const SESSION_KEYS: &[&str] = &["on_removal"];

/// A parsed TOML value with its byte span in the file when known.
struct Node {
    span: Option<Range<usize>>,
    kind: Kind,
}

enum Kind {
    Table(BTreeMap<String, Node>),
    Str(String),
    Int(i64),
    Bool(bool),
    Array(Vec<Node>),
    /// Values no Tessera key takes, by name: "a float", "an array", "a datetime".
    Other(&'static str),
}

impl From<Spanned<Kind>> for Node {
    fn from(s: Spanned<Kind>) -> Node {
        let span = s.span();
        Node {
            span: Some(span),
            kind: s.into_inner(),
        }
    }
}

impl Node {
    fn from_value(v: toml::Value) -> Node {
        let kind = match v {
            toml::Value::Table(t) => Kind::Table(
                t.into_iter()
                    .map(|(k, v)| (k, Node::from_value(v)))
                    .collect(),
            ),
            toml::Value::String(s) => Kind::Str(s),
            toml::Value::Integer(i) => Kind::Int(i),
            toml::Value::Boolean(b) => Kind::Bool(b),
            toml::Value::Float(_) => Kind::Other("a float"),
            toml::Value::Array(a) => Kind::Array(a.into_iter().map(Node::from_value).collect()),
            toml::Value::Datetime(_) => Kind::Other("a datetime"),
        };
        Node { span: None, kind }
    }

    fn found(&self) -> String {
        match &self.kind {
            Kind::Table(_) => "a table".into(),
            Kind::Str(s) => format!("string {s:?}"),
            Kind::Int(i) => format!("integer {i}"),
            Kind::Bool(b) => format!("boolean {b}"),
            Kind::Array(_) => "an array".into(),
            Kind::Other(what) => (*what).to_owned(),
        }
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Kind, D::Error> {
        d.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Kind, E> {
        Ok(Kind::Str(v.to_owned()))
    }

    fn visit_i64<E>(self, v: i64) -> std::result::Result<Kind, E> {
        Ok(Kind::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> std::result::Result<Kind, E> {
        // TOML integers are i64; saturating keeps "absurdly large" the answer if one ever is not.
        Ok(Kind::Int(i64::try_from(v).unwrap_or(i64::MAX)))
    }

    fn visit_bool<E>(self, v: bool) -> std::result::Result<Kind, E> {
        Ok(Kind::Bool(v))
    }

    fn visit_f64<E>(self, _: f64) -> std::result::Result<Kind, E> {
        Ok(Kind::Other("a float"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Kind>>()? {
            items.push(Node::from(item));
        }
        Ok(Kind::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Kind, A::Error> {
        let mut table = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            // toml hands datetimes to serde as a one-entry map with this private key.
            if key.starts_with("$__toml_private") {
                map.next_value::<IgnoredAny>()?;
                return Ok(Kind::Other("a datetime"));
            }
            let value: Spanned<Kind> = map.next_value()?;
            table.insert(key, Node::from(value));
        }
        Ok(Kind::Table(table))
    }
}

/// Turns the parsed tree into a [`Config`], with one message per kind of mistake.
struct Checker<'a> {
    text: &'a str,
}

impl Checker<'_> {
    fn config(&self, root: &Node) -> Result<Config> {
        let top = self.table(root, "", TOP_KEYS)?;
        let mut cfg = Config::default();
        if let Some(t) = top.get("token") {
            let o = self.token_override(t, "token")?;
            self.check_lifetimes(&TokenPolicy::default(), &o, "token", t)?;
            apply(&mut cfg.token, &o);
        }
        if let Some(t) = top.get("pin") {
            let t = self.table(t, "pin", PIN_KEYS)?;
            if let Some(v) = t.get("keep_last_retry") {
                cfg.pin.keep_last_retry = self.boolean(v, "pin.keep_last_retry")?;
            }
        }
        if let Some(t) = top.get("piv") {
            cfg.piv.allow_pinless = self.allow_pinless(t, "piv")?;
        }
        if let Some(t) = top.get("fido") {
            self.fido(t, &mut cfg)?;
        }
        if let Some(t) = top.get("auth") {
            let t = self.table(t, "auth", AUTH_KEYS)?;
            if let Some(v) = t.get("max_failures") {
                cfg.auth.max_failures = self.count(
                    v,
                    "auth.max_failures",
                    "0 would lock every user out before their first attempt",
                )?;
            }
            if let Some(v) = t.get("failure_window") {
                cfg.auth.failure_window = self.positive(v, "auth.failure_window")?;
            }
            if let Some(v) = t.get("lockout") {
                cfg.auth.lockout = self.positive(v, "auth.lockout")?;
            }
        }
        if let Some(t) = top.get("keys") {
            let t = self.table(t, "keys", KEYS_KEYS)?;
            if let Some(v) = t.get("rotate_every") {
                cfg.keys.rotate_every = self.positive(v, "keys.rotate_every")?;
            }
        }
        if let Some(t) = top.get("device") {
            let t = self.table(t, "device", DEVICE_KEYS)?;
            if let Some(v) = t.get("timeout") {
                cfg.device.timeout = self.positive(v, "device.timeout")?;
            }
            if let Some(v) = t.get("insert_timeout") {
                cfg.device.insert_timeout = self.positive(v, "device.insert_timeout")?;
            }
            if let Some(v) = t.get("pin_timeout") {
                cfg.device.pin_timeout = self.positive(v, "device.pin_timeout")?;
            }
            if let Some(v) = t.get("touch_timeout") {
                cfg.device.touch_timeout = self.positive(v, "device.touch_timeout")?;
            }
            if let Some(v) = t.get("simulated_hid_dir") {
                cfg.device.simulated_hid_dir =
                    Some(self.absolute_path(v, "device.simulated_hid_dir")?);
            }
        }
        if let Some(t) = top.get("pam") {
            self.pam(t, &mut cfg)?;
        }
        if let Some(t) = top.get("session") {
            if let Some(v) = self.session(t, "session")? {
                cfg.session.on_removal = v;
            }
        }
        let sessions = [
            ("users", &mut cfg.session.users),
            ("groups", &mut cfg.session.groups),
        ];
        for (section, map) in sessions {
            let Some(Node {
                kind: Kind::Table(names),
                ..
            }) = top.get(section)
            else {
                // Not a table: reported below with the other overrides.
                continue;
            };
            for (name, entry) in names {
                let Kind::Table(entry) = &entry.kind else {
                    continue;
                };
                if let Some(t) = entry.get("session") {
                    let path = format!("{section}.{}.session", toml_key(name));
                    if let Some(v) = self.session(t, &path)? {
                        map.insert(name.clone(), v);
                    }
                }
            }
        }
        let sections = [
            (
                "users",
                &mut cfg.users,
                &mut cfg.piv.users_allow_pinless,
                &mut cfg.fido.users,
            ),
            (
                "groups",
                &mut cfg.groups,
                &mut cfg.piv.groups_allow_pinless,
                &mut cfg.fido.groups,
            ),
        ];
        for (section, map, pinless, fido) in sections {
            let Some(node) = top.get(section) else {
                continue;
            };
            let Kind::Table(names) = &node.kind else {
                return Err(self.wrong_type(node, section, "a table of names"));
            };
            for (name, entry) in names {
                let path = format!("{section}.{}", toml_key(name));
                let entry = self.table(entry, &path, OVERRIDE_KEYS)?;
                if let Some(t) = entry.get("piv") {
                    if let Some(v) = self.optional_allow_pinless(t, &format!("{path}.piv"))? {
                        pinless.insert(name.clone(), v);
                    }
                }
                if let Some(t) = entry.get("fido") {
                    let o = self.fido_override(t, &format!("{path}.fido"))?;
                    if o != FidoOverride::default() {
                        fido.insert(name.clone(), o);
                    }
                }
                let Some(t) = entry.get("token") else {
                    continue;
                };
                let path = format!("{path}.token");
                let o = self.token_override(t, &path)?;
                self.check_lifetimes(&cfg.token, &o, &path, t)?;
                map.insert(name.clone(), o);
            }
        }
        Ok(cfg)
    }

    /// `lifetime <= max_lifetime` for the table at `path` (`o`, parsed from `node`) over `base`: the
    /// defaults for `[token]`, `[token]` for a user or group table.
    fn check_lifetimes(
        &self,
        base: &TokenPolicy,
        o: &TokenOverride,
        path: &str,
        node: &Node,
    ) -> Result<()> {
        let lifetime = o.lifetime.unwrap_or(base.lifetime);
        let max = o.max_lifetime.unwrap_or(base.max_lifetime);
        if lifetime <= max {
            return Ok(());
        }
        let default = TokenPolicy::default();
        let from = |key: &str, set_here: bool, inherited_from_token: bool| {
            if set_here {
                format!("{path}.{key}")
            } else if inherited_from_token {
                format!("token.{key}")
            } else {
                "the default".to_owned()
            }
        };
        let lifetime_from = from(
            "lifetime",
            o.lifetime.is_some(),
            base.lifetime != default.lifetime,
        );
        let max_from = from(
            "max_lifetime",
            o.max_lifetime.is_some(),
            base.max_lifetime != default.max_lifetime,
        );
        // `base` is consistent on its own, so this table wrote at least one of the two.
        let key = if o.lifetime.is_some() {
            "lifetime"
        } else {
            "max_lifetime"
        };
        let key_node = match &node.kind {
            Kind::Table(t) => t.get(key),
            _ => None,
        };
        Err(self.error(
            &format!("{path}.{key}"),
            key_node,
            format!(
                "lifetime {} ({lifetime_from}) is longer than max_lifetime {} ({max_from}); \
                 a token cannot outlive its session",
                fmt_duration(lifetime),
                fmt_duration(max),
            ),
        ))
    }

    /// The `[pam]` table, with its `[pam.services.NAME]` tables, into `cfg.pam`.
    fn pam(&self, node: &Node, cfg: &mut Config) -> Result<()> {
        let t = self.table(node, "pam", PAM_KEYS)?;
        let o = self.pam_override(t, "pam")?;
        if let Some(v) = o.reuse {
            cfg.pam.reuse = v;
        }
        if let Some(v) = o.max_age {
            cfg.pam.max_age = v;
        }
        let Some(services) = t.get("services") else {
            return Ok(());
        };
        let Kind::Table(names) = &services.kind else {
            return Err(self.wrong_type(services, "pam.services", "a table of PAM service names"));
        };
        for (name, entry) in names {
            let path = format!("pam.services.{}", toml_key(name));
            let t = self.table(entry, &path, PAM_SERVICE_KEYS)?;
            cfg.pam
                .services
                .insert(name.clone(), self.pam_override(t, &path)?);
        }
        Ok(())
    }

    /// `reuse` and `max_age` of the `[pam]` (or `[pam.services.NAME]`) table at `path`.
    fn pam_override(&self, t: &BTreeMap<String, Node>, path: &str) -> Result<PamOverride> {
        Ok(PamOverride {
            reuse: t
                .get("reuse")
                .map(|v| self.boolean(v, &format!("{path}.reuse")))
                .transpose()?,
            max_age: t
                .get("max_age")
                .map(|v| self.positive(v, &format!("{path}.max_age")))
                .transpose()?,
        })
    }

    /// `on_removal` of the `session` table at `path`, if it sets it.
    fn session(&self, node: &Node, path: &str) -> Result<Option<OnRemoval>> {
        let t = self.table(node, path, SESSION_KEYS)?;
        let Some(v) = t.get("on_removal") else {
            return Ok(None);
        };
        let key = format!("{path}.on_removal");
        let Kind::Str(name) = &v.kind else {
            return Err(self.wrong_type(v, &key, "\"lock\", \"terminate\" or \"none\""));
        };
        OnRemoval::from_name(name).map(Some).ok_or_else(|| {
            self.error(
                &key,
                Some(v),
                format!("{name:?} is not one of \"lock\", \"terminate\", \"none\""),
            )
        })
    }

    /// `allow_pinless` of the `[piv]` table at `path`; false when the table leaves it out.
    fn allow_pinless(&self, node: &Node, path: &str) -> Result<bool> {
        Ok(self.optional_allow_pinless(node, path)?.unwrap_or(false))
    }

    /// `allow_pinless` of a `piv` table at `path`, if it sets it.
    fn optional_allow_pinless(&self, node: &Node, path: &str) -> Result<Option<bool>> {
        let t = self.table(node, path, PIV_KEYS)?;
        t.get("allow_pinless")
            .map(|v| self.boolean(v, &format!("{path}.allow_pinless")))
            .transpose()
    }

    /// The `[fido]` table into `cfg.fido`.
    fn fido(&self, node: &Node, cfg: &mut Config) -> Result<()> {
        let t = self.table(node, "fido", FIDO_KEYS)?;
        if let Some(v) = t.get("rp_id") {
            let Kind::Str(s) = &v.kind else {
                return Err(self.wrong_type(v, "fido.rp_id", "a string"));
            };
            if s.trim().is_empty() {
                return Err(self.error(
                    "fido.rp_id",
                    Some(v),
                    "must not be empty (every credential is made for this relying-party id)",
                ));
            }
            if s.trim() != s {
                return Err(self.error(
                    "fido.rp_id",
                    Some(v),
                    "has leading or trailing spaces; credentials would be scoped to them",
                ));
            }
            cfg.fido.rp_id.clone_from(s);
        }
        let o = self.fido_override(node, "fido")?;
        if let Some(uv) = o.user_verification {
            cfg.fido.user_verification = uv;
        }
        if let Some(p) = o.pin_required {
            cfg.fido.pin_required = p;
        }
        if let Some(v) = t.get("algorithms") {
            cfg.fido.algorithms = self.algorithms(v, "fido.algorithms")?;
        }
        if let Some(v) = t.get("check_sign_count") {
            cfg.fido.check_sign_count = self.boolean(v, "fido.check_sign_count")?;
        }
        Ok(())
    }

    /// `user_verification` and `pin_required` of the FIDO table at `path` (`[fido]` itself, whose
    /// other keys the caller reads, or a user's or group's, which may set only these two).
    fn fido_override(&self, node: &Node, path: &str) -> Result<FidoOverride> {
        let allowed = if path == "fido" {
            FIDO_KEYS
        } else {
            FIDO_OVERRIDE_KEYS
        };
        let t = self.table(node, path, allowed)?;
        let key = |k: &str| format!("{path}.{k}");
        let mut o = FidoOverride::default();
        if let Some(v) = t.get("user_verification") {
            let Kind::Str(s) = &v.kind else {
                return Err(self.wrong_type(
                    v,
                    &key("user_verification"),
                    "\"required\", \"preferred\" or \"discouraged\"",
                ));
            };
            let Some(uv) = uv_from_name(s) else {
                return Err(self.error(
                    &key("user_verification"),
                    Some(v),
                    format!("unknown value {s:?}; expected \"required\", \"preferred\" or \"discouraged\""),
                ));
            };
            o.user_verification = Some(uv);
        }
        if let Some(v) = t.get("pin_required") {
            o.pin_required = Some(self.boolean(v, &key("pin_required"))?);
        }
        Ok(o)
    }

    /// A non-empty list of distinct names from [`ALGORITHMS`], in the file's order.
    fn algorithms(&self, node: &Node, path: &str) -> Result<Vec<String>> {
        let expected = "an array of algorithm names like [\"es256\", \"eddsa\"]";
        let Kind::Array(items) = &node.kind else {
            return Err(self.wrong_type(node, path, expected));
        };
        if items.is_empty() {
            return Err(self.error(
                path,
                Some(node),
                "must name at least one algorithm (\"es256\", \"eddsa\")",
            ));
        }
        let mut out: Vec<String> = Vec::with_capacity(items.len());
        for item in items {
            let Kind::Str(name) = &item.kind else {
                return Err(self.wrong_type(item, path, "algorithm names (strings)"));
            };
            if !ALGORITHMS.contains(&name.as_str()) {
                return Err(self.error(
                    path,
                    Some(item),
                    format!("unknown algorithm {name:?}; expected \"es256\" or \"eddsa\""),
                ));
            }
            if out.contains(name) {
                return Err(self.error(path, Some(item), format!("{name:?} is listed twice")));
            }
            out.push(name.clone());
        }
        Ok(out)
    }

    /// An absolute path (the daemon does not resolve relative paths against its working directory).
    fn absolute_path(&self, node: &Node, path: &str) -> Result<PathBuf> {
        let Kind::Str(s) = &node.kind else {
            return Err(self.wrong_type(node, path, "a path string"));
        };
        if s.is_empty() {
            return Err(self.error(
                path,
                Some(node),
                "must not be empty (leave the key out to turn it off)",
            ));
        }
        let p = PathBuf::from(s);
        if !p.is_absolute() {
            return Err(self.error(path, Some(node), format!("{s:?} is not an absolute path")));
        }
        Ok(p)
    }

    fn token_override(&self, node: &Node, path: &str) -> Result<TokenOverride> {
        let t = self.table(node, path, TOKEN_KEYS)?;
        let key = |k: &str| format!("{path}.{k}");
        let mut o = TokenOverride::default();
        if let Some(v) = t.get("lifetime") {
            o.lifetime = Some(self.positive(v, &key("lifetime"))?);
        }
        if let Some(v) = t.get("max_lifetime") {
            o.max_lifetime = Some(self.positive(v, &key("max_lifetime"))?);
        }
        if let Some(v) = t.get("idle_timeout") {
            let d = self.duration(v, &key("idle_timeout"))?;
            o.idle_timeout = Some((!d.is_zero()).then_some(d));
        }
        if let Some(v) = t.get("single_use") {
            o.single_use = Some(self.boolean(v, &key("single_use"))?);
        }
        if let Some(v) = t.get("revoke_on_removal") {
            o.revoke_on_removal = Some(self.boolean(v, &key("revoke_on_removal"))?);
        }
        if let Some(v) = t.get("max_live_per_user") {
            o.max_live_per_user = Some(self.count(
                v,
                &key("max_live_per_user"),
                "0 would revoke every token as it is issued",
            )?);
        }
        if let Some(v) = t.get("audience") {
            let Kind::Str(s) = &v.kind else {
                return Err(self.wrong_type(v, &key("audience"), "a string"));
            };
            if s.is_empty() {
                return Err(self.error(&key("audience"), Some(v), "must not be empty"));
            }
            o.audience = Some(s.clone());
        }
        if let Some(v) = t.get("min_refresh_interval") {
            o.min_refresh_interval = Some(self.duration(v, &key("min_refresh_interval"))?);
        }
        Ok(o)
    }

    /// The entries of the table at `node`, all of them among `allowed`.
    fn table<'n>(
        &self,
        node: &'n Node,
        path: &str,
        allowed: &[&str],
    ) -> Result<&'n BTreeMap<String, Node>> {
        let Kind::Table(t) = &node.kind else {
            return Err(self.wrong_type(node, path, "a table"));
        };
        for (k, v) in t {
            if !allowed.contains(&k.as_str()) {
                let full = if path.is_empty() {
                    toml_key(k)
                } else {
                    format!("{path}.{}", toml_key(k))
                };
                let expected = allowed
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let problem = if allowed == OVERRIDE_KEYS {
                    format!(
                        "unknown key; only `token`, `piv`, `fido` and `session` are allowed under [{path}]"
                    )
                } else {
                    format!("unknown key; expected one of {expected}")
                };
                return Err(self.error(&full, Some(v), problem));
            }
        }
        Ok(t)
    }

    fn duration(&self, node: &Node, path: &str) -> Result<Duration> {
        let Kind::Str(s) = &node.kind else {
            return Err(self.wrong_type(node, path, "a duration string like \"15m\""));
        };
        let d = humantime::parse_duration(s).map_err(|e| {
            self.error(
                path,
                Some(node),
                format!("invalid duration {s:?} ({e}); {HOW_TO_WRITE_DURATIONS}"),
            )
        })?;
        if d > MAX_DURATION {
            return Err(self.error(
                path,
                Some(node),
                format!("{s:?} is absurdly long; the limit is {MAX_DURATION_TEXT}"),
            ));
        }
        Ok(d)
    }

    fn positive(&self, node: &Node, path: &str) -> Result<Duration> {
        let d = self.duration(node, path)?;
        if d.is_zero() {
            return Err(self.error(path, Some(node), "must be longer than 0s"));
        }
        Ok(d)
    }

    fn boolean(&self, node: &Node, path: &str) -> Result<bool> {
        match node.kind {
            Kind::Bool(b) => Ok(b),
            _ => Err(self.wrong_type(node, path, "true or false")),
        }
    }

    /// A count from 1 to [`MAX_COUNT`]; `why_not_zero` explains the 0 message.
    fn count(&self, node: &Node, path: &str, why_not_zero: &str) -> Result<u32> {
        let Kind::Int(i) = node.kind else {
            return Err(self.wrong_type(node, path, "a whole number"));
        };
        if i < 0 {
            return Err(self.error(path, Some(node), format!("{i} is negative")));
        }
        if i == 0 {
            return Err(self.error(
                path,
                Some(node),
                format!("must be at least 1 ({why_not_zero})"),
            ));
        }
        if i > MAX_COUNT {
            return Err(self.error(
                path,
                Some(node),
                format!("{i} is absurdly large; the limit is {MAX_COUNT}"),
            ));
        }
        // In range by the checks above.
        u32::try_from(i).map_err(|_| self.error(path, Some(node), "out of range"))
    }

    fn wrong_type(&self, node: &Node, path: &str, expected: &str) -> Error {
        self.error(
            path,
            Some(node),
            format!("expected {expected}, found {}", node.found()),
        )
    }

    /// "path: problem", then where in the file when known.
    fn error(&self, path: &str, node: Option<&Node>, problem: impl fmt::Display) -> Error {
        let path = if path.is_empty() { "(top level)" } else { path };
        let at = node
            .and_then(|n| n.span.as_ref())
            .map(|s| excerpt(self.text, s))
            .unwrap_or_default();
        Error::Config(format!("{path}: {problem}{at}"))
    }
}

fn apply(p: &mut TokenPolicy, o: &TokenOverride) {
    if let Some(v) = o.lifetime {
        p.lifetime = v;
    }
    if let Some(v) = o.max_lifetime {
        p.max_lifetime = v;
    }
    if let Some(v) = o.idle_timeout {
        p.idle_timeout = v;
    }
    if let Some(v) = o.single_use {
        p.single_use = v;
    }
    if let Some(v) = o.revoke_on_removal {
        p.revoke_on_removal = v;
    }
    if let Some(v) = o.max_live_per_user {
        p.max_live_per_user = v;
    }
    if let Some(v) = &o.audience {
        p.audience.clone_from(v);
    }
    if let Some(v) = o.min_refresh_interval {
        p.min_refresh_interval = v;
    }
}

/// Where `span` is, in the style of toml's own errors: line, column and the line with a caret.
fn excerpt(text: &str, span: &Range<usize>) -> String {
    let start = span.start.min(text.len());
    let Some(before) = text.get(..start) else {
        return String::new();
    };
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_no = before.matches('\n').count() + 1;
    let line_end = text
        .get(start..)
        .and_then(|s| s.find('\n'))
        .map_or(text.len(), |i| start + i);
    let line = text.get(line_start..line_end).unwrap_or_default();
    let column = text.get(line_start..start).map_or(0, |s| s.chars().count());
    let width = text
        .get(start..span.end.clamp(start, line_end))
        .map_or(1, |s| s.chars().count().max(1));
    let pad = " ".repeat(line_no.to_string().len());
    format!(
        "\n at line {line_no}, column {}:\n{pad} |\n{line_no} | {line}\n{pad} | {}{}",
        column + 1,
        " ".repeat(column),
        "^".repeat(width)
    )
}
