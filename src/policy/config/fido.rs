//! The `[fido]` table: the relying-party id, user verification, PIN and algorithm rules of FIDO
//! security keys (CTAP 2.1, WebAuthn), with the per-user and per-group overrides of
//! `user_verification` and `pin_required`.

use std::collections::BTreeMap;

use super::sourced::{of_member_groups, strictest, Sourced};
use super::{Config, ConfigTable};
use crate::authenticator::UserVerification;

/// The relying-party id when `[fido] rp_id` is not set. Fixed, never the hostname: an enrollment
/// must survive the machine being renamed (a credential is scoped to its rp id, WebAuthn §6.1).
pub const DEFAULT_RP_ID: &str = "pam://tessera";

/// The signature algorithms `[fido] algorithms` may name (JOSE names in lower case, RFC 7518 §3.1
/// and RFC 8037 §3.1).
pub const ALGORITHMS: &[&str] = &["es256", "eddsa"];

/// FIDO rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FidoPolicy {
    /// `rp_id`: the relying-party id every credential is made for and every assertion is checked
    /// against (its SHA-256 is the authData rpIdHash, WebAuthn §6.1). Default "pam://tessera".
    pub rp_id: String,
    /// `user_verification` (before overrides, see [`Config::fido_rules_for`]). Default "preferred".
    pub user_verification: UserVerification,
    /// `pin_required`: the key must have a PIN set and every login uses it (before overrides).
    /// Default false.
    pub pin_required: bool,
    /// `algorithms`: the credential algorithms accepted at enrollment, most preferred first, each
    /// one of [`ALGORITHMS`]; never empty. Default `["es256"]`.
    pub algorithms: Vec<String>,
    /// `check_sign_count`: refuse an assertion whose signature counter did not rise (a cloned key,
    /// CTAP 2.1 §6.2, WebAuthn §6.1.1). Default true.
    pub check_sign_count: bool,
    /// `[users.NAME.fido]`, by user name.
    pub users: BTreeMap<String, FidoOverride>,
    /// `[groups.NAME.fido]`, by Unix group name.
    pub groups: BTreeMap<String, FidoOverride>,
}

/// What one `[users.NAME.fido]` or `[groups.NAME.fido]` table sets; `None`: not set there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FidoOverride {
    /// `user_verification`.
    pub user_verification: Option<UserVerification>,
    /// `pin_required`.
    pub pin_required: Option<bool>,
}

/// The FIDO rules in force for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FidoRules {
    /// Whether the user must be verified (PIN or built-in UV) at enrollment and login.
    pub user_verification: UserVerification,
    /// Whether the key must use its PIN.
    pub pin_required: bool,
}

impl FidoRules {
    /// Whether every login must verify the user (PIN or built-in UV), whatever the enrollment
    /// recorded: a policy made stricter after enrollment applies at once.
    pub fn demands_verification(self) -> bool {
        self.pin_required || self.user_verification == UserVerification::Required
    }
}

impl Default for FidoPolicy {
    fn default() -> Self {
        FidoPolicy {
            rp_id: DEFAULT_RP_ID.into(),
            user_verification: UserVerification::default(),
            pin_required: false,
            algorithms: vec!["es256".into()],
            check_sign_count: true,
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
        }
    }
}

/// The policy name of `uv`, as written in the file.
pub fn uv_name(uv: UserVerification) -> &'static str {
    match uv {
        UserVerification::Required => "required",
        UserVerification::Preferred => "preferred",
        UserVerification::Discouraged => "discouraged",
    }
}

/// `uv` parsed from its name in the file.
pub(crate) fn uv_from_name(name: &str) -> Option<UserVerification> {
    match name {
        "required" => Some(UserVerification::Required),
        "preferred" => Some(UserVerification::Preferred),
        "discouraged" => Some(UserVerification::Discouraged),
        _ => None,
    }
}

/// How strict a user-verification requirement is, for "the strictest group wins".
fn strictness(uv: UserVerification) -> u8 {
    match uv {
        UserVerification::Discouraged => 0,
        UserVerification::Preferred => 1,
        UserVerification::Required => 2,
    }
}

impl Config {
    /// The FIDO rules of `user`, a member of `groups`: each key from the user's table, else the
    /// strictest of its groups' tables, else `[fido]`.
    #[must_use]
    pub fn fido_rules_for(&self, user: &str, groups: &[String]) -> FidoRules {
        let (user_verification, pin_required) = self.fido_rules_sourced(user, groups);
        FidoRules {
            user_verification: user_verification.value,
            pin_required: pin_required.value,
        }
    }

    /// [`Config::fido_rules_for`]: `user_verification` and `pin_required`, each with its source.
    pub(super) fn fido_rules_sourced(
        &self,
        user: &str,
        groups: &[String],
    ) -> (Sourced<UserVerification>, Sourced<bool>) {
        let f = &self.fido;
        let d = FidoPolicy::default();
        let t = ConfigTable::Fido;
        let member = || of_member_groups(&f.groups, groups);
        let own = f.users.get(user).copied().unwrap_or_default();

        let mut uv = Sourced::global(t, f.user_verification, &d.user_verification);
        let set = member().filter_map(|(name, o)| o.user_verification.map(|v| (name, v)));
        uv.set_from(strictest(t, set, |a, b| strictness(*a) > strictness(*b)));
        uv.set_by_user(t, user, own.user_verification);

        let mut pin = Sourced::global(t, f.pin_required, &d.pin_required);
        let set = member().filter_map(|(name, o)| o.pin_required.map(|v| (name, v)));
        pin.set_from(strictest(t, set, |a, b| *a && !*b));
        pin.set_by_user(t, user, own.pin_required);
        (uv, pin)
    }

    /// Whether any `[groups.NAME.fido]` table exists (group look-ups are needed only then).
    #[must_use]
    pub fn fido_has_group_rules(&self) -> bool {
        !self.fido.groups.is_empty()
    }
}
