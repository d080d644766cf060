//! The effective policy view (`tessera policy show`, the D-Bus method `EffectivePolicy`): every
//! rule that applies to one user, as rows of key, value as written in the file, and source.
//!
//! Only the listing lives here. Each rule is resolved by the same code that decides it for the
//! service (`Config::*_for`, through [`Sourced`]), so the view shows what is enforced.

use super::sourced::Sourced;
use super::{fmt_duration, toml_key, uv_name, Config, ConfigTable, FidoPolicy, Source};

/// One rule of a user's effective policy and where its value came from (`tessera policy show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyItem {
    /// A `[token]` key by its bare name ("lifetime", as the first version of the view named them);
    /// any other by its path in the file: "session.on_removal", "pam.services.sudo.max_age".
    pub key: String,
    /// The value as written in TOML, durations without their quotes: "15m", "true", "32",
    /// "\"tessera\"", "[\"es256\"]".
    pub value: String,
    /// Where it came from.
    pub source: Source,
}

impl Config {
    /// Every key of [`Config::token_policy_for`] with its value as written in TOML and its source.
    #[must_use]
    pub fn explain_token_policy(&self, user: &str, groups: &[String]) -> Vec<PolicyItem> {
        let r = self.resolve(user, groups);
        let idle = r.idle_timeout.value.unwrap_or_default();
        vec![
            item(
                "lifetime",
                fmt_duration(r.lifetime.value),
                r.lifetime.source,
            ),
            item(
                "max_lifetime",
                fmt_duration(r.max_lifetime.value),
                r.max_lifetime.source,
            ),
            item("idle_timeout", fmt_duration(idle), r.idle_timeout.source),
            shown("single_use", r.single_use),
            shown("revoke_on_removal", r.revoke_on_removal),
            shown("max_live_per_user", r.max_live_per_user),
            item(
                "audience",
                toml_string(&r.audience.value),
                r.audience.source,
            ),
            item(
                "min_refresh_interval",
                fmt_duration(r.min_refresh_interval.value),
                r.min_refresh_interval.source,
            ),
        ]
    }

    /// Every rule that applies to `user`, a member of `groups`, in the order of the example file:
    /// the `[token]` rows of [`Config::explain_token_policy`]; `piv.allow_pinless`; the `[fido]`
    /// keys (`user_verification` and `pin_required` as resolved for the user); `pam.reuse` and
    /// `pam.max_age`, then both keys of each `[pam.services.NAME]` as they apply to that service
    /// (a key the service table leaves out shows the `[pam]` value and source); and
    /// `session.on_removal` as resolved for the user.
    #[must_use]
    pub fn explain_policy(&self, user: &str, groups: &[String]) -> Vec<PolicyItem> {
        let mut rows = self.explain_token_policy(user, groups);
        rows.push(shown(
            "piv.allow_pinless",
            self.allow_pinless_sourced(user, groups),
        ));

        let f = &self.fido;
        let d = FidoPolicy::default();
        let t = ConfigTable::Fido;
        let (uv, pin_required) = self.fido_rules_sourced(user, groups);
        let rp_id = Sourced::global(t, f.rp_id.clone(), &d.rp_id);
        let algorithms = Sourced::global(t, f.algorithms.clone(), &d.algorithms);
        let algorithm_names = algorithms
            .value
            .iter()
            .map(|a| toml::Value::String(a.clone()))
            .collect();
        rows.extend([
            item("fido.rp_id", toml_string(&rp_id.value), rp_id.source),
            item(
                "fido.user_verification",
                toml_string(uv_name(uv.value)),
                uv.source,
            ),
            shown("fido.pin_required", pin_required),
            item(
                "fido.algorithms",
                toml::Value::Array(algorithm_names).to_string(),
                algorithms.source,
            ),
            shown(
                "fido.check_sign_count",
                Sourced::global(t, f.check_sign_count, &d.check_sign_count),
            ),
        ]);

        rows.extend(self.reuse_rows("pam", None));
        for service in self.pam.services.keys() {
            let prefix = format!("pam.services.{}", toml_key(service));
            rows.extend(self.reuse_rows(&prefix, Some(service)));
        }

        let on_removal = self.on_removal_sourced(user, groups);
        rows.push(item(
            "session.on_removal",
            toml_string(on_removal.value.name()),
            on_removal.source,
        ));
        rows
    }

    /// `PREFIX.reuse` and `PREFIX.max_age` as they apply to the PAM service `service`.
    fn reuse_rows(&self, prefix: &str, service: Option<&str>) -> [PolicyItem; 2] {
        let (reuse, max_age) = self.reuse_sourced(service);
        [
            shown(&format!("{prefix}.reuse"), reuse),
            item(
                &format!("{prefix}.max_age"),
                fmt_duration(max_age.value),
                max_age.source,
            ),
        ]
    }
}

fn item(key: &str, value: String, source: Source) -> PolicyItem {
    PolicyItem {
        key: key.to_owned(),
        value,
        source,
    }
}

/// A row for a value that TOML writes as Rust displays it (booleans, counts).
fn shown<T: ToString>(key: &str, v: Sourced<T>) -> PolicyItem {
    item(key, v.value.to_string(), v.source)
}

/// `s` as a TOML string, quoted.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
#[path = "explain_test.rs"]
mod tests;
