//! What a relying service demands of a token beyond its validity (CheckToken): its own audience, a
//! recent enough authentication, and the authentication methods it needs.

use crate::token::Claims;
use crate::{Error, Result};

/// The requirements of one CheckToken call; the default demands nothing beyond validity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenRequirements {
    /// The `aud` claim must equal this (RFC 7519 section 4.1.3: a service must refuse a token
    /// that does not name it).
    pub audience: Option<String>,
    /// At most this many seconds since the device was used to authenticate (OIDC Core 1.0 section
    /// 3.1.2.1 `max_age`, counted from `auth_time`, which refreshes keep).
    pub max_age: Option<u64>,
    /// Each of these methods (RFC 8176 section 2) must be in the `amr` claim.
    pub amr: Vec<String>,
}

impl TokenRequirements {
    /// Checks a valid token's `claims`, authenticated at `auth_time`, at `now`. An audience that
    /// differs is [`Error::WrongAudience`]; an authentication too old or without a required method
    /// is [`Error::StepUpRequired`]: the user must authenticate again with the device.
    pub(super) fn check(&self, claims: &Claims, auth_time: u64, now: u64) -> Result<()> {
        if let Some(aud) = &self.audience {
            if claims.aud != *aud {
                return Err(Error::WrongAudience(shown(aud)));
            }
        }
        if let Some(max_age) = self.max_age {
            let age = now.saturating_sub(auth_time);
            if age > max_age {
                return Err(Error::StepUpRequired(format!(
                    "authenticated {age} s ago, more than the {max_age} s allowed"
                )));
            }
        }
        if let Some(missing) = self.amr.iter().find(|m| !claims.amr.contains(m)) {
            return Err(Error::StepUpRequired(format!(
                "authentication method {:?} was not used",
                shown(missing)
            )));
        }
        Ok(())
    }
}

/// A caller's string, cut short enough for an error message.
fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}
