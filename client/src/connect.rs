//! Which bus to use ("system", "session" or a D-Bus address, as `--bus` and `TESSERA_BUS` say) and
//! connecting to it, with a failure that says which address was tried.

use std::fmt;

use zbus::Connection;

use crate::error::{Error, Result};

/// The environment variable that names the bus, for the CLI and the daemon alike.
pub const BUS_ENV: &str = "TESSERA_BUS";

/// A bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusChoice {
    /// The session bus of the environment.
    Session,
    /// The system bus.
    System,
    /// A bus at this D-Bus address (`unix:path=...`).
    Address(String),
}

impl std::str::FromStr for BusChoice {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "session" => BusChoice::Session,
            "system" => BusChoice::System,
            other => BusChoice::Address(other.to_owned()),
        })
    }
}

impl fmt::Display for BusChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusChoice::Session => f.write_str("session"),
            BusChoice::System => f.write_str("system"),
            BusChoice::Address(a) => f.write_str(a),
        }
    }
}

impl BusChoice {
    /// A connection builder for this bus.
    pub fn builder(&self) -> zbus::Result<zbus::connection::Builder<'_>> {
        match self {
            BusChoice::Session => zbus::connection::Builder::session(),
            BusChoice::System => zbus::connection::Builder::system(),
            BusChoice::Address(a) => zbus::connection::Builder::address(a.as_str()),
        }
    }
}

/// Connects to `bus`; a failure is [`Error::NoBus`].
pub async fn connect(bus: &BusChoice) -> Result<Connection> {
    let built = match bus.builder() {
        Ok(b) => b.build().await,
        Err(e) => Err(e),
    };
    built.map_err(|e| Error::no_bus(&bus.to_string(), e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_and_shows() {
        for s in ["system", "session", "unix:path=/run/x"] {
            let b: BusChoice = s.parse().unwrap();
            assert_eq!(b.to_string(), s);
        }
        assert_eq!("session".parse::<BusChoice>().unwrap(), BusChoice::Session);
    }

    #[tokio::test]
    async fn a_missing_socket_is_no_bus() {
        let bus = BusChoice::Address("unix:path=/nonexistent/tessera-test-bus".into());
        let e = connect(&bus).await.err().unwrap();
        assert_eq!(e.name(), "NoBus");
        assert!(
            e.to_string().starts_with(
                "connecting to the bus at unix:path=/nonexistent/tessera-test-bus failed: "
            ),
            "{e}"
        );
    }
}
