//! The one way Tessera's command-line tools print an error:
//!
//! ```text
//! tessera: <ErrorName>: <message>
//! hint: <what to try>
//! ```
//!
//! The first line always has the three parts, so scripts can split it on ": "; the hint line is
//! there only when one helps.

use crate::error::{Error, ErrorName};

/// The error as the CLI prints it on standard error (without a trailing newline).
pub fn render(program: &str, e: &Error) -> String {
    match hint(e) {
        Some(h) => format!("{}\nhint: {h}", first_line(program, e)),
        None => first_line(program, e),
    }
}

/// `<program>: <ErrorName>: <message>`.
pub fn first_line(program: &str, e: &Error) -> String {
    let message = chain(e);
    let message = if message.is_empty() {
        "no details"
    } else {
        message.as_str()
    };
    // A message that spans lines (a configuration error points at the line of the file) is
    // printed as it is: its first line still has the three parts.
    format!("{program}: {}: {message}", e.name())
}

/// An error and its causes, "outer: inner: ...", each said once: a cause whose text the message
/// already holds (many errors quote their source) is not repeated.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let said = cause.to_string();
        if !said.is_empty() && !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        next = cause.source();
    }
    text
}

/// What to try next, where the error alone does not say.
pub fn hint(e: &Error) -> Option<&'static str> {
    match e {
        Error::NoBus { .. } => {
            Some("is the bus address right? (--bus, or TESSERA_BUS: system, session or unix:path=...)")
        }
        Error::Bus { name, .. } => match name.as_str() {
            "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner" => Some("is tesserad running?"),
            "org.freedesktop.DBus.Error.UnknownMethod"
            | "org.freedesktop.DBus.Error.UnknownInterface" => {
                Some("is tesserad older than this tessera? (`tesserad --version`)")
            }
            "org.freedesktop.DBus.Error.AccessDenied" => {
                Some("the bus policy refuses the call: is the D-Bus policy for org.tessera.Tessera1 installed?")
            }
            "org.freedesktop.DBus.Error.NoReply" | "org.freedesktop.DBus.Error.Timeout" => {
                Some("tesserad did not answer; its log may say why (journalctl -u tesserad)")
            }
            _ => None,
        },
        Error::Daemon { name, .. } => match name {
            ErrorName::NoDevice => Some(
                "insert your card or key; `tessera status` lists the devices, and --device takes a \
                 device id, object path or reader name",
            ),
            ErrorName::NotEnrolled => Some("enroll the card first: `tessera enroll`"),
            ErrorName::PinWouldBlock | ErrorName::PinBlocked => {
                Some("unblock the card with its PUK: `tessera unblock`")
            }
            ErrorName::DeviceAmbiguous => Some("name one with --device (`tessera status` lists them)"),
            ErrorName::Busy => Some("retry in a moment"),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_error_is_one_line_with_its_name() {
        let e = Error::from_names(
            "org.tessera.Tessera1.Error.PinInvalid",
            "wrong PIN, 2 retries left".into(),
        );
        assert_eq!(
            render("tessera", &e),
            "tessera: PinInvalid: wrong PIN, 2 retries left"
        );
    }

    #[test]
    fn service_unknown_asks_whether_the_daemon_runs() {
        let e = Error::from(zbus::fdo::Error::ServiceUnknown(
            "The name is not activatable".into(),
        ));
        assert_eq!(
            render("tessera", &e),
            "tessera: ServiceUnknown: The name is not activatable\nhint: is tesserad running?"
        );
    }

    #[test]
    fn no_bus_says_the_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = Error::no_bus(
            "unix:path=/nonexistent",
            zbus::Error::InputOutput(std::sync::Arc::new(io)),
        );
        let text = render("tessera", &e);
        assert_eq!(
            text.lines().next(),
            Some("tessera: NoBus: connecting to the bus at unix:path=/nonexistent failed: No such file or directory")
        );
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
        assert!(text.contains("\nhint: is the bus address right?"), "{text}");
    }

    #[test]
    fn a_cause_is_said_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("opening the state: {0}")]
        struct Quoting(#[source] std::io::Error);
        let e = Quoting(std::io::Error::other("disk on fire"));
        assert_eq!(chain(&e), "opening the state: disk on fire");
        #[derive(Debug, thiserror::Error)]
        #[error("opening the state")]
        struct Silent(#[source] std::io::Error);
        let e = Silent(std::io::Error::other("disk on fire"));
        assert_eq!(chain(&e), "opening the state: disk on fire");
    }

    #[test]
    fn empty_and_multiline_messages() {
        let e = Error::from_names("org.example.Error.X", String::new());
        assert_eq!(first_line("tessera", &e), "tessera: X: no details");
        let e = Error::from_names("org.example.Error.X", "a\n  b".into());
        assert_eq!(first_line("tessera", &e), "tessera: X: a\n  b");
    }
}
