//! The one secret type at the edge of the core: a PIN, PUK or new PIN as the user typed it, held in
//! a zeroizing buffer and never printed. Each authenticator checks its own rules on it (PIV: 6–8
//! printable ASCII bytes; FIDO: 4–63 UTF-8 bytes) and builds its on-device form from it.

use std::fmt;

use zeroize::Zeroizing;

/// A PIN, PUK or new PIN from a caller. Zeroized when dropped; `Debug` shows no content.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps what the caller sent; nothing is checked here (each authenticator has its own rules).
    pub fn new(s: Zeroizing<String>) -> Self {
        Secret(s)
    }

    /// The secret's text, for the authenticator that encodes it for its device.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_nothing_of_the_secret() {
        let s = Secret::new(Zeroizing::new("123456".into()));
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert_eq!(s.expose(), "123456");
    }
}
