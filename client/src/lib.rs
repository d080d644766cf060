//! `tessera-client`: the client side of the `org.tessera.Tessera1` D-Bus contract — the proxies of
//! its interfaces, the bus names and object paths, the error names and the one way the command-line
//! tools print an error.
//!
//! The daemon takes its names from here, so the two sides cannot drift apart; the `tessera` command,
//! the tests and the PAM module use it without pulling in the daemon or the core library.

#![forbid(unsafe_code)]

pub mod connect;
pub mod error;
pub mod names;
pub mod progress;
pub mod proxy;
pub mod report;
pub mod request;

pub use connect::{connect, BusChoice};
pub use error::{Error, ErrorName};
pub use progress::{Progress, SecretPrompt};
pub use proxy::{DeviceProxy, ManagerProxy, RequestProxy};
