//! The enrollment record: which user may authenticate with which credential of which device, in
//! terms every kind of device shares (PIV now, FIDO next), and its mapping to the `enrollments` table.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::Row;

use crate::error::{Error, Result};

/// One enrolled credential: which user may authenticate with which key of which device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// Opaque unique id.
    pub id: String,
    /// Unix account name.
    pub user: String,
    /// Unix uid of `user` at enrollment time.
    pub uid: u32,
    /// What kind of device holds the credential.
    pub kind: DeviceKind,
    /// Which credential of the device: for PIV the key reference as hex, e.g. "9a" (NIST SP 800-73-4
    /// Part 1, Table 4b); for FIDO the credential id (CTAP 2.1 section 6.1), base64url.
    pub credential: String,
    /// The algorithm of `public_key` and of the signatures the device makes with it.
    pub algorithm: KeyAlgorithm,
    /// The public key, encoded as `algorithm` says (es256: SEC1 uncompressed point 0x04 || X || Y;
    /// eddsa: the 32-byte Ed25519 public key).
    pub public_key: Vec<u8>,
    /// Thumbprint of `public_key` (unique per user).
    pub key_thumbprint: String,
    /// FIDO relying-party id the credential is scoped to (WebAuthn section 6.1); `None` for PIV.
    pub rp_id: Option<String>,
    /// The last signature counter the device reported (CTAP 2.1 section 6.2, WebAuthn section
    /// 6.1.1); 0 for devices without one (PIV).
    pub sign_count: u32,
    /// What the device says it is: the PIV card's CHUID GUID (SP 800-73-4 Part 1, Table 9) or the
    /// FIDO authenticator's AAGUID (WebAuthn section 6.5.1); `None` if it had none.
    pub device_identity: Option<[u8; 16]>,
    /// Thumbprint of the device's own key at enrollment, if it had one (PIV: the Card
    /// Authentication 9E key): the device must prove it holds that key before it is sent a PIN.
    pub device_key_thumbprint: Option<String>,
    /// What the device or credential calls itself (PIV: the certificate's subject), if anything.
    pub label: Option<String>,
    /// Whether authentication with this credential needs the PIN.
    pub require_pin: bool,
    /// Unix seconds.
    pub created: u64,
    /// The latest authentication of the pruned tokens of this enrollment, Unix seconds (written by
    /// [`super::WriteOp::PruneExpired`]; tokens still stored speak for themselves). `None`: none yet.
    pub last_used: Option<u64>,
}

/// An enum of names from a closed set, written and read as its name (on the wire and in a text
/// column): `as_str`, `Display`, `FromStr` (an unknown name is [`Error::InvalidArgument`]) and the
/// SQL conversions, where an unknown name fails the read rather than being taken for another.
macro_rules! named {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// The name on the wire and in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(Error::InvalidArgument(format!(concat!("unknown ", $what, " {:?}"), other))),
                }
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e: Error| FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

named! {
    /// The kind of device an enrollment belongs to.
    DeviceKind, "device kind" {
        /// A PIV card (NIST SP 800-73-4) over PC/SC: "piv".
        Piv = "piv",
        /// A FIDO2 or U2F security key (CTAP 2.1), over USB HID or NFC: "fido".
        Fido = "fido",
    }
}

named! {
    /// The signature algorithm of an enrolled public key, named as in JOSE (RFC 7518 section 3.1) and
    /// COSE (RFC 9053 section 2.1: ES256 is -7), in lower case.
    KeyAlgorithm, "key algorithm" {
        /// ECDSA on P-256 with SHA-256 (FIPS 186-4); the key is a SEC1 uncompressed point: "es256".
        Es256 = "es256",
        /// EdDSA with Ed25519 (RFC 8032; COSE -8, RFC 9053 section 2.2); the key is its 32 raw
        /// bytes (RFC 8032 section 5.1.5): "eddsa".
        EdDsa = "eddsa",
    }
}

/// The columns of an enrollment, in the order of [`enrollment_row`] and [`insert_params`].
pub(super) const ENR: &str = "id, user, uid, kind, credential, algorithm, public_key, \
                              key_thumbprint, rp_id, sign_count, device_identity, \
                              device_key_thumbprint, label, require_pin, created, last_used";

/// `INSERT` of one enrollment; its parameters are [`insert_params`].
pub(super) fn insert_sql() -> String {
    format!("INSERT INTO enrollments ({ENR}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)")
}

/// The values of [`ENR`] for `e`.
pub(super) fn insert_params(e: &Enrollment) -> [&dyn ToSql; 16] {
    [
        &e.id,
        &e.user,
        &e.uid,
        &e.kind,
        &e.credential,
        &e.algorithm,
        &e.public_key,
        &e.key_thumbprint,
        &e.rp_id,
        &e.sign_count,
        &e.device_identity,
        &e.device_key_thumbprint,
        &e.label,
        &e.require_pin,
        &e.created,
        &e.last_used,
    ]
}

/// An enrollment from a row of `SELECT {ENR}`.
pub(super) fn enrollment_row(r: &Row<'_>) -> rusqlite::Result<Enrollment> {
    Ok(Enrollment {
        id: r.get(0)?,
        user: r.get(1)?,
        uid: r.get(2)?,
        kind: r.get(3)?,
        credential: r.get(4)?,
        algorithm: r.get(5)?,
        public_key: r.get(6)?,
        key_thumbprint: r.get(7)?,
        rp_id: r.get(8)?,
        sign_count: r.get(9)?,
        device_identity: r.get(10)?,
        device_key_thumbprint: r.get(11)?,
        label: r.get(12)?,
        require_pin: r.get(13)?,
        created: r.get(14)?,
        last_used: r.get(15)?,
    })
}
