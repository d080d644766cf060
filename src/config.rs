//! The administrator's configuration (`/etc/tessera/tessera.toml`): token lifetimes, PIN and device
//! rules. Unknown keys and bad values are errors that name the file, the key and what is wrong; the
//! daemon refuses to start on them rather than guess.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::{Error, Result};

/// Default location of the configuration file.
pub const DEFAULT_PATH: &str = "/etc/tessera/tessera.toml";

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Token rules.
    pub token: TokenPolicy,
    /// PIN rules.
    pub pin: PinPolicy,
    /// Device access rules.
    pub device: DevicePolicy,
}

/// How tokens are issued and when they die.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// `exp - iat` of a new token.
    pub lifetime: Duration,
    /// Value of the `aud` claim.
    pub audience: String,
    /// Whether pulling the device out revokes its tokens.
    pub revoke_on_removal: bool,
}

/// PIN handling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinPolicy {
    /// Never spend a card's last PIN retry (answer PinWouldBlock instead).
    pub keep_last_retry: bool,
}

/// Device access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePolicy {
    /// The longest one device operation (an enrollment or authentication exchange) may take.
    pub timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            token: TokenPolicy {
                lifetime: Duration::from_secs(15 * 60),
                audience: "tessera".into(),
                revoke_on_removal: true,
            },
            pin: PinPolicy {
                keep_last_retry: true,
            },
            device: DevicePolicy {
                timeout: Duration::from_secs(10),
            },
        }
    }
}

impl Config {
    /// Reads and checks the file at `path`. Errors name the file, the key and the problem.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: cannot read: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Parses configuration text.
    pub fn parse(text: &str) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        let mut cfg = Config::default();
        if let Some(t) = raw.token {
            if let Some(v) = t.lifetime {
                cfg.token.lifetime = positive("token.lifetime", v.0)?;
            }
            if let Some(v) = t.audience {
                if v.is_empty() {
                    return Err(Error::Config("token.audience: must not be empty".into()));
                }
                cfg.token.audience = v;
            }
            if let Some(v) = t.revoke_on_removal {
                cfg.token.revoke_on_removal = v;
            }
        }
        if let Some(p) = raw.pin {
            if let Some(v) = p.keep_last_retry {
                cfg.pin.keep_last_retry = v;
            }
        }
        if let Some(d) = raw.device {
            if let Some(v) = d.timeout {
                cfg.device.timeout = positive("device.timeout", v.0)?;
            }
        }
        Ok(cfg)
    }
}

fn positive(key: &str, d: Duration) -> Result<Duration> {
    if d.is_zero() {
        return Err(Error::Config(format!("{key}: must be longer than 0s")));
    }
    Ok(d)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    token: Option<RawToken>,
    pin: Option<RawPin>,
    device: Option<RawDevice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    lifetime: Option<HumanDuration>,
    audience: Option<String>,
    revoke_on_removal: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPin {
    keep_last_retry: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    timeout: Option<HumanDuration>,
}

/// A duration written like "90s", "15m", "8h", "30d".
#[derive(Debug, Clone, Copy)]
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?} ({e}); write it like \"90s\", \"15m\", \"8h\" or \"30d\""
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(Config::default().token.lifetime, Duration::from_secs(900));
    }

    #[test]
    fn values_are_read() {
        let c = Config::parse(
            "[token]\nlifetime = \"90s\"\naudience = \"login\"\nrevoke_on_removal = false\n\
             [pin]\nkeep_last_retry = false\n[device]\ntimeout = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(c.token.lifetime, Duration::from_secs(90));
        assert_eq!(c.token.audience, "login");
        assert!(!c.token.revoke_on_removal);
        assert!(!c.pin.keep_last_retry);
        assert_eq!(c.device.timeout, Duration::from_secs(2));
    }

    #[test]
    fn mistakes_name_the_key() {
        for (text, needle) in [
            ("[token]\nlifetim = \"1m\"\n", "lifetim"),
            ("[tokn]\n", "tokn"),
            ("[token]\nlifetime = \"soon\"\n", "soon"),
            ("[token]\nlifetime = 5\n", "lifetime"),
            ("[token]\nlifetime = \"0s\"\n", "token.lifetime"),
            ("[token]\naudience = \"\"\n", "token.audience"),
            ("[token\n", "token"),
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
