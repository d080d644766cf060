//! The module's options on its PAM configuration line, parsed once: an unknown or malformed option
//! is an error (the caller returns PAM_SERVICE_ERR), never ignored.

#![forbid(unsafe_code)]

use std::fmt;
use std::time::Duration;

/// The default `timeout=`: the whole authentication, device and PIN included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The default `max_age=` of a reuse (the issue's `auth sufficient pam_tessera.so reuse max_age=15m`).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(15 * 60);
/// The daemon's bound on a request's timeout (README: 1–3600 s).
const MAX_TIMEOUT_SECS: u64 = 3600;

/// Which device kinds to accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Piv,
    Fido,
}

impl Kind {
    /// The name on the bus.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Piv => "piv",
            Kind::Fido => "fido",
        }
    }
}

/// What to answer for a user without an enrollment (NotEnrolled, NoSuchUser).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoUser {
    /// PAM_USER_UNKNOWN (the default).
    #[default]
    Unknown,
    /// PAM_AUTHINFO_UNAVAIL.
    Unavail,
}

/// The parsed options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `timeout=SECONDS`.
    pub timeout: Duration,
    /// `kinds=piv,fido`; `None` = all kinds.
    pub kinds: Option<Vec<Kind>>,
    /// `audience=`; `None` = `pam:<PAM_SERVICE>`.
    pub audience: Option<String>,
    /// `nouser=unknown|unavail`.
    pub nouser: NoUser,
    /// `allow_remote`.
    pub allow_remote: bool,
    /// `reuse`: verify once, no device.
    pub reuse: bool,
    /// `max_age=DURATION` (for `reuse`).
    pub max_age: Duration,
    /// `debug`: more syslog lines (never secrets).
    pub debug: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: DEFAULT_TIMEOUT,
            kinds: None,
            audience: None,
            nouser: NoUser::default(),
            allow_remote: false,
            reuse: false,
            max_age: DEFAULT_MAX_AGE,
            debug: false,
        }
    }
}

/// An option the module does not accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadOption {
    /// The argument as written.
    pub arg: String,
    /// Why.
    pub why: &'static str,
}

impl fmt::Display for BadOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "option {:?}: {}", self.arg, self.why)
    }
}

impl Options {
    /// Parses the module's arguments.
    pub fn parse(args: &[String]) -> Result<Options, BadOption> {
        let mut o = Options::default();
        for arg in args {
            let bad = |why| BadOption {
                arg: arg.clone(),
                why,
            };
            let (key, value) = match arg.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (arg.as_str(), None),
            };
            match (key, value) {
                ("timeout", Some(v)) => {
                    let secs: u64 = v.parse().map_err(|_| bad("not a number of seconds"))?;
                    if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
                        return Err(bad("must be 1 to 3600 seconds"));
                    }
                    o.timeout = Duration::from_secs(secs);
                }
                ("kinds", Some(v)) => {
                    let mut kinds = Vec::new();
                    for k in v.split(',') {
                        let kind = match k {
                            "piv" => Kind::Piv,
                            "fido" => Kind::Fido,
                            _ => return Err(bad("kinds are \"piv\" and \"fido\"")),
                        };
                        if !kinds.contains(&kind) {
                            kinds.push(kind);
                        }
                    }
                    o.kinds = Some(kinds);
                }
                ("audience", Some(v)) => {
                    // The daemon's bound: at most 128 bytes of printable ASCII.
                    if v.is_empty()
                        || v.len() > 128
                        || !v.bytes().all(|b| (0x21..0x7f).contains(&b))
                    {
                        return Err(bad("1 to 128 printable ASCII characters"));
                    }
                    o.audience = Some(v.to_owned());
                }
                ("nouser", Some("unknown")) => o.nouser = NoUser::Unknown,
                ("nouser", Some("unavail")) => o.nouser = NoUser::Unavail,
                ("nouser", _) => return Err(bad("nouser is \"unknown\" or \"unavail\"")),
                ("allow_remote", None) => o.allow_remote = true,
                ("reuse", None) => o.reuse = true,
                ("max_age", Some(v)) => {
                    let age =
                        duration(v).ok_or_else(|| bad("a duration such as 300s, 15m or 1h"))?;
                    if age.is_zero() {
                        return Err(bad("must be more than 0"));
                    }
                    o.max_age = age;
                }
                ("debug", None) => o.debug = true,
                ("timeout" | "kinds" | "audience" | "max_age", None) => {
                    return Err(bad("needs a value"))
                }
                ("allow_remote" | "reuse" | "debug", Some(_)) => return Err(bad("takes no value")),
                _ => return Err(bad("unknown option")),
            }
        }
        Ok(o)
    }

    /// The audience of the tokens for `service`.
    pub fn audience_for(&self, service: &str) -> String {
        self.audience
            .clone()
            .unwrap_or_else(|| format!("pam:{service}"))
    }
}

/// "300", "300s", "15m", "1h", "1d".
fn duration(s: &str) -> Option<Duration> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(factor).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, BadOption> {
        Options::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn defaults() {
        let o = parse(&[]).unwrap();
        assert_eq!(o, Options::default());
        assert_eq!(o.audience_for("sudo"), "pam:sudo");
    }

    #[test]
    fn every_option() {
        let o = parse(&[
            "timeout=5",
            "kinds=fido,piv,fido",
            "audience=login",
            "nouser=unavail",
            "allow_remote",
            "reuse",
            "max_age=5m",
            "debug",
        ])
        .unwrap();
        assert_eq!(o.timeout, Duration::from_secs(5));
        assert_eq!(o.kinds, Some(vec![Kind::Fido, Kind::Piv]));
        assert_eq!(o.audience_for("sudo"), "login");
        assert_eq!(o.nouser, NoUser::Unavail);
        assert!(o.allow_remote && o.reuse && o.debug);
        assert_eq!(o.max_age, Duration::from_secs(300));
    }

    #[test]
    fn durations() {
        for (s, secs) in [
            ("300", 300),
            ("300s", 300),
            ("15m", 900),
            ("1h", 3600),
            ("2d", 172800),
        ] {
            assert_eq!(
                parse(&[&format!("max_age={s}")]).unwrap().max_age.as_secs(),
                secs
            );
        }
    }

    #[test]
    fn refused() {
        for arg in [
            "bogus",
            "use_first_pass",
            "timeout=0",
            "timeout=3601",
            "timeout=x",
            "timeout",
            "kinds=",
            "kinds=piv,tpm",
            "audience=",
            "audience=a b",
            "nouser",
            "nouser=ignore",
            "allow_remote=1",
            "reuse=yes",
            "max_age=0",
            "max_age=5y",
            "max_age=-1s",
            "debug=1",
        ] {
            assert!(parse(&[arg]).is_err(), "{arg} was accepted");
        }
        let e = parse(&["timeout=5", "frobnicate"]).unwrap_err();
        assert_eq!(e.to_string(), "option \"frobnicate\": unknown option");
    }
}
