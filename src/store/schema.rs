//! The database schema: its steps, applied in order to bring any older database to the newest
//! version, and the check that refuses a newer one.

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Error, Result};

/// The newest schema this code knows; `PRAGMA user_version` holds the database's.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Schema steps; entry `i` migrates `user_version` i to i + 1. Only ever append.
/// Times are Unix seconds; booleans 0/1; token `state` 0 live, 1 revoked, 2 consumed.
pub(super) const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE enrollments (
    id             TEXT PRIMARY KEY NOT NULL,
    user           TEXT NOT NULL,
    uid            INTEGER NOT NULL,
    slot           TEXT NOT NULL,
    public_key     BLOB NOT NULL,              -- SEC1 uncompressed point
    key_thumbprint TEXT NOT NULL,
    card_guid      BLOB,                       -- CHUID GUID, 16 bytes, if any
    cert_subject   TEXT,
    require_pin    INTEGER NOT NULL CHECK (require_pin IN (0, 1)),
    created        INTEGER NOT NULL,
    UNIQUE (user, key_thumbprint)
);
CREATE TABLE device_sessions (
    id             TEXT PRIMARY KEY NOT NULL,
    reader         TEXT NOT NULL,
    card_id        TEXT NOT NULL,
    event_counter  INTEGER NOT NULL,
    started        INTEGER NOT NULL,
    ended          INTEGER                     -- NULL while the card is present
);
CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY NOT NULL,
    created        INTEGER NOT NULL,
    retired        INTEGER
);
CREATE TABLE tokens (
    jti            TEXT PRIMARY KEY NOT NULL,
    token_hash     BLOB NOT NULL UNIQUE,       -- SHA-256 of the token text
    user           TEXT NOT NULL,
    enrollment_id  TEXT NOT NULL REFERENCES enrollments (id) ON DELETE CASCADE,
    device_session TEXT NOT NULL REFERENCES device_sessions (id),
    kid            TEXT NOT NULL REFERENCES signing_keys (kid),
    iat            INTEGER NOT NULL,
    exp            INTEGER NOT NULL,
    single_use     INTEGER NOT NULL CHECK (single_use IN (0, 1)),
    state          INTEGER NOT NULL CHECK (state IN (0, 1, 2)),
    reason         TEXT,
    changed_at     INTEGER,
    auth_time      INTEGER NOT NULL,
    idle_timeout   INTEGER NOT NULL,           -- seconds, 0 = off
    last_used      INTEGER,
    revoke_on_removal INTEGER NOT NULL CHECK (revoke_on_removal IN (0, 1))
);
CREATE INDEX enrollments_user ON enrollments (user);
CREATE INDEX tokens_user ON tokens (user);
CREATE INDEX tokens_device_session ON tokens (device_session);
CREATE INDEX tokens_enrollment ON tokens (enrollment_id);
CREATE INDEX tokens_exp ON tokens (exp);
",
    "
-- The latest auth_time of the enrollment's pruned tokens (PruneExpired folds them in before it
-- deletes them); tokens still in the table speak for themselves.
ALTER TABLE enrollments ADD COLUMN last_used INTEGER;
-- pcscd's process identity when the session's event_counter was read; NULL: unknown (never matches).
ALTER TABLE device_sessions ADD COLUMN source_instance TEXT;
ALTER TABLE enrollments ADD COLUMN card_auth_thumbprint TEXT;  -- the card's 9E key at enrollment
-- Wrong PINs each caller spent on a card enrolled for nobody, until a correct PIN is given on it.
CREATE TABLE pin_failures (
    card           TEXT NOT NULL,              -- the card's identity (slot keys, CHUID GUID)
    uid            INTEGER NOT NULL,
    count          INTEGER NOT NULL,
    PRIMARY KEY (card, uid)
);
",
    // Enrollments in device-neutral terms (PIV now, FIDO next). Columns are renamed, not copied,
    // so the rows, and the tokens that refer to them, stay as they are; every existing row is a PIV
    // one with an ES256 key, which the defaults say.
    "
ALTER TABLE enrollments RENAME COLUMN slot TO credential;          -- PIV slot or FIDO credential id
ALTER TABLE enrollments RENAME COLUMN card_guid TO device_identity; -- CHUID GUID or AAGUID, 16 bytes
ALTER TABLE enrollments RENAME COLUMN cert_subject TO label;
ALTER TABLE enrollments RENAME COLUMN card_auth_thumbprint TO device_key_thumbprint;
ALTER TABLE enrollments ADD COLUMN kind TEXT NOT NULL DEFAULT 'piv';        -- later also 'fido'
ALTER TABLE enrollments ADD COLUMN algorithm TEXT NOT NULL DEFAULT 'es256'; -- of public_key
ALTER TABLE enrollments ADD COLUMN rp_id TEXT;                               -- FIDO relying party
ALTER TABLE enrollments ADD COLUMN sign_count INTEGER NOT NULL DEFAULT 0    -- FIDO counter, u32
    CHECK (sign_count BETWEEN 0 AND 4294967295);
",
    // Tokens bound to a logind session (PAM open_session, BindSession): the binding outlives a
    // restart, and logout of the session finds its tokens. NULL: not bound. The claims a row did
    // not hold before, so that a restarted daemon can answer a session reuse from the row alone
    // (NULL on older rows: learnt from the token at its first validation, as before).
    "
ALTER TABLE tokens ADD COLUMN login_session TEXT;                  -- logind session id (lsid)
ALTER TABLE tokens ADD COLUMN seat TEXT;                           -- its seat, if it has one
ALTER TABLE tokens ADD COLUMN iss TEXT;
ALTER TABLE tokens ADD COLUMN aud TEXT;
ALTER TABLE tokens ADD COLUMN amr TEXT;                            -- JSON array of strings
ALTER TABLE tokens ADD COLUMN jkt TEXT;                            -- cnf.jkt
CREATE INDEX tokens_login_session ON tokens (login_session);
",
];

/// Brings the schema to [`SCHEMA_VERSION`]; refuses a newer database rather than misreading it.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(Error::Storage(format!(
            "database schema version {version} is newer than this Tessera supports \
             ({SCHEMA_VERSION}); upgrade Tessera or restore a backup"
        )));
    }
    for step in MIGRATIONS.iter().skip(version as usize) {
        tx.execute_batch(step)?;
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tracing::info!(from = version, to = SCHEMA_VERSION, "store schema migrated");
    }
    tx.commit()?;
    Ok(())
}
