//! The Manager's TokenIssued and EnrollmentAdded signals, for `tessera watch` and other observers.
//! Sent from a task of their own, so they never delay the reply that carries the token or id.

use base64::Engine as _;
use zbus::object_server::SignalEmitter;
use zbus::Connection;

use crate::interface::Manager;
use crate::MANAGER_PATH;

/// What a completed request announces to observers.
pub enum Announce {
    /// An authentication: TokenIssued for its token.
    Token,
    /// An enrollment of this account: EnrollmentAdded for its id.
    Enrollment(String),
    /// Nothing (unblocking).
    Nothing,
}

impl Announce {
    /// Sends the announcement for a request completed with `result`.
    pub fn completed(&self, conn: &Connection, result: &str) {
        match self {
            Announce::Token => token_issued(conn, result),
            Announce::Enrollment(user) => enrollment_added(conn, result.to_owned(), user.clone()),
            Announce::Nothing => {}
        }
    }
}

/// Announces the token just issued: its id (jti) and subject, read from its payload (RFC 7519
/// section 4.1); the token itself is never sent.
pub fn token_issued(conn: &Connection, token: &str) {
    let Some((jti, user)) = identity(token) else {
        tracing::warn!("TokenIssued not sent: the token's payload has no jti and sub");
        return;
    };
    let conn = conn.clone();
    tokio::spawn(async move {
        let sent = match SignalEmitter::new(&conn, MANAGER_PATH) {
            Ok(e) => Manager::token_issued(&e, &jti, &user).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::warn!("sending TokenIssued failed: {e}");
        }
    });
}

/// Announces an enrollment.
pub fn enrollment_added(conn: &Connection, id: String, user: String) {
    let conn = conn.clone();
    tokio::spawn(async move {
        let sent = match SignalEmitter::new(&conn, MANAGER_PATH) {
            Ok(e) => Manager::enrollment_added(&e, &id, &user).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::warn!("sending EnrollmentAdded failed: {e}");
        }
    });
}

/// (jti, sub) from a JWT's payload, without checking the signature (the daemon made the token).
fn identity(token: &str) -> Option<(String, String)> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let jti = claims.get("jti")?.as_str()?.to_owned();
    let sub = claims.get("sub")?.as_str()?.to_owned();
    Some((jti, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_jti_and_sub() {
        // {"sub":"alice","jti":"j1"}
        let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImp0aSI6ImoxIn0.sig";
        assert_eq!(identity(token), Some(("j1".into(), "alice".into())));
        assert_eq!(identity("no-dots"), None);
        assert_eq!(identity("a.!!!.c"), None);
    }
}
