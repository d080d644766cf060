//! Session tokens and the keys that sign them.
//!
//! The claims of a Tessera session token (an ES256 JWT, RFC 7519 / RFC 7515) and the small pure helpers
//! around it: RFC 7638 key thumbprints, `jti` generation and the token hash the daemon indexes live
//! tokens by. Signing, verification and key storage live in [`crate::token::keys`].

pub mod keys;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::elliptic_curve::sec1::{Coordinates, ToEncodedPoint};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bytes of randomness in a `jti`: 128 bits, so ids never collide in practice (RFC 7519 §4.1.7 asks
/// for a negligible collision probability).
const JTI_BYTES: usize = 16;

/// The claims set of a session token.
///
/// Decoding is strict: every member is required and unknown members are rejected
/// (`deny_unknown_fields`), so a token minted by a different or newer issuer never half-parses.
/// `exp`/`nbf` are *not* checked by decoding; the service checks them with its [`crate::clock::Clock`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Issuer (RFC 7519 §4.1.1): this daemon.
    pub iss: String,
    /// Subject (RFC 7519 §4.1.2): the Unix user name the token was issued to.
    pub sub: String,
    /// Audience (RFC 7519 §4.1.3). Tessera always issues a single string, never an array.
    pub aud: String,
    /// Issued-at time, seconds since the Unix epoch (RFC 7519 §4.1.6).
    pub iat: u64,
    /// Not-before time, seconds since the Unix epoch (RFC 7519 §4.1.5).
    pub nbf: u64,
    /// Expiry time, seconds since the Unix epoch (RFC 7519 §4.1.4).
    pub exp: u64,
    /// Token id (RFC 7519 §4.1.7): base64url of 128 random bits, see [`new_jti`].
    pub jti: String,
    /// Authentication methods (RFC 8176 §2): e.g. `"hwk"` (hardware key), `"sc"` (smart card), `"pin"`.
    pub amr: Vec<String>,
    /// Proof-of-possession confirmation (RFC 7800 §3.1): binds the token to the device key.
    pub cnf: Confirmation,
    /// Tessera-private claim: the device-session id (ends when the card is removed).
    pub sid: String,
    /// Tessera-private claim: the enrollment id of the device key that authenticated.
    pub enr: String,
    /// Tessera-private claim: the logind session the token is bound to (PAM `open_session`,
    /// BindSession); absent until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsid: Option<String>,
    /// Tessera-private claim: the seat of that logind session ("seat0"), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seat: Option<String>,
}

/// The `cnf` claim (RFC 7800 §3.1) holding a JWK SHA-256 thumbprint (`jkt`, RFC 9449 §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    /// RFC 7638 thumbprint of the *device's* public key, see [`jwk_thumbprint`].
    pub jkt: String,
}

/// The longest token text accepted anywhere (ours are well under 1 KiB); refusing larger input
/// bounds the work a hostile caller can cause, and anything longer is not ours.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// A fresh token id: base64url (no padding) of 16 bytes from the operating system's CSPRNG.
///
/// Panics only if `getrandom(2)` itself fails, which on Linux means the kernel cannot provide
/// randomness at all; no token can be issued safely then, so there is nothing better to do.
pub fn new_jti() -> String {
    let mut bytes = [0u8; JTI_BYTES];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The RFC 7638 JWK thumbprint of a P-256 public key: base64url(SHA-256(canonical JWK)).
///
/// The canonical JWK holds only the required members of an EC key (RFC 7638 §3.2: `crv`, `kty`, `x`,
/// `y`), in lexicographic order, without whitespace; `x` and `y` are the 32-byte big-endian
/// coordinates, base64url-encoded without padding (RFC 7518 §6.2.1.2-3). Every value is a fixed ASCII
/// string or base64url text, so no JSON escaping can occur and the text is built directly.
pub fn jwk_thumbprint(key: &p256::PublicKey) -> String {
    let (x, y) = ec_coordinates_b64(key);
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// SHA-256 of the token text, by which the daemon indexes (and revokes) live tokens, so the token
/// itself never has to be stored.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The base64url (no padding) `x` and `y` coordinates of a P-256 key (RFC 7518 §6.2.1.2-3).
pub(crate) fn ec_coordinates_b64(key: &p256::PublicKey) -> (String, String) {
    let point = key.to_encoded_point(false);
    match point.coordinates() {
        Coordinates::Uncompressed { x, y } => {
            (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y))
        }
        // Unreachable: a `PublicKey` is never the identity and we asked for the uncompressed form.
        // Empty coordinates can never equal a real key's, so nothing downstream can be confused.
        Coordinates::Identity | Coordinates::Compact { .. } | Coordinates::Compressed { .. } => {
            (String::new(), String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// RFC 9449 §4.1 (the DPoP proof's `jwk`) and §6.1 (its `cnf.jkt`): an independent P-256 vector.
    const RFC9449_X: &str = "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs";
    const RFC9449_Y: &str = "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA";
    const RFC9449_JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";

    fn key_from_xy(x: &str, y: &str) -> p256::PublicKey {
        let mut sec1 = vec![0x04];
        sec1.extend(URL_SAFE_NO_PAD.decode(x).unwrap());
        sec1.extend(URL_SAFE_NO_PAD.decode(y).unwrap());
        p256::PublicKey::from_sec1_bytes(&sec1).unwrap()
    }

    fn sample_claims() -> Claims {
        Claims {
            iss: "tesserad".into(),
            sub: "alice".into(),
            aud: "tessera".into(),
            iat: 1_700_000_000,
            nbf: 1_700_000_000,
            exp: 1_700_000_900,
            jti: new_jti(),
            amr: vec!["hwk".into(), "sc".into(), "pin".into()],
            cnf: Confirmation {
                jkt: RFC9449_JKT.into(),
            },
            sid: "ds-1".into(),
            enr: "en-1".into(),
            lsid: None,
            seat: None,
        }
    }

    #[test]
    fn thumbprint_matches_rfc9449_example() {
        assert_eq!(
            jwk_thumbprint(&key_from_xy(RFC9449_X, RFC9449_Y)),
            RFC9449_JKT
        );
    }

    #[test]
    fn thumbprint_matches_hand_built_canonical_json() {
        // A random key, hashed over JSON built here member by member from the raw SEC1 bytes, in
        // RFC 7638 order (crv < kty < x < y) and without whitespace.
        let key = p256::SecretKey::random(&mut OsRng).public_key();
        let sec1 = key.to_sec1_bytes();
        assert_eq!(sec1.len(), 65);
        assert_eq!(sec1[0], 0x04);
        let mut json = String::from("{");
        for (name, value) in [
            ("crv", "P-256".to_string()),
            ("kty", "EC".to_string()),
            ("x", URL_SAFE_NO_PAD.encode(&sec1[1..33])),
            ("y", URL_SAFE_NO_PAD.encode(&sec1[33..65])),
        ] {
            if json.len() > 1 {
                json.push(',');
            }
            json.push_str(&serde_json::to_string(name).unwrap());
            json.push(':');
            json.push_str(&serde_json::to_string(&value).unwrap());
        }
        json.push('}');
        assert!(!json.contains(' '));
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(json.as_bytes()));
        assert_eq!(jwk_thumbprint(&key), expected);
        // 32-byte SHA-256 digest -> 43 base64url characters.
        assert_eq!(expected.len(), 43);
    }

    #[test]
    fn thumbprints_differ_between_keys() {
        let a = p256::SecretKey::random(&mut OsRng).public_key();
        let b = p256::SecretKey::random(&mut OsRng).public_key();
        assert_ne!(jwk_thumbprint(&a), jwk_thumbprint(&b));
    }

    #[test]
    fn jti_is_128_random_bits_base64url() {
        let a = new_jti();
        let b = new_jti();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22); // ceil(16 * 8 / 6)
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), JTI_BYTES);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn token_hash_is_sha256_of_text() {
        // FIPS 180-2 appendix B.1 vector: SHA-256("abc").
        assert_eq!(
            hex::encode(token_hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(token_hash("a.b.c"), token_hash("a.b.d"));
    }

    #[test]
    fn claims_round_trip_through_json() {
        let claims = sample_claims();
        let json = serde_json::to_string(&claims).unwrap();
        assert_eq!(serde_json::from_str::<Claims>(&json).unwrap(), claims);
    }

    #[test]
    fn login_session_claims_are_absent_until_bound() {
        let unbound = serde_json::to_value(sample_claims()).unwrap();
        assert!(unbound.get("lsid").is_none() && unbound.get("seat").is_none());
        let mut bound = sample_claims();
        bound.lsid = Some("c7".into());
        bound.seat = Some("seat0".into());
        let json = serde_json::to_value(&bound).unwrap();
        assert_eq!(
            (json["lsid"].as_str(), json["seat"].as_str()),
            (Some("c7"), Some("seat0"))
        );
        assert_eq!(serde_json::from_value::<Claims>(json).unwrap(), bound);
        let mut mistyped = unbound;
        mistyped["lsid"] = serde_json::json!(7);
        assert!(serde_json::from_value::<Claims>(mistyped).is_err());
    }

    #[test]
    fn claims_reject_unknown_missing_and_mistyped_members() {
        let good = serde_json::to_value(sample_claims()).unwrap();

        let mut extra = good.clone();
        extra["admin"] = serde_json::Value::Bool(true);
        assert!(serde_json::from_value::<Claims>(extra).is_err());

        let mut extra_cnf = good.clone();
        extra_cnf["cnf"]["x5t#S256"] = "x".into();
        assert!(serde_json::from_value::<Claims>(extra_cnf).is_err());

        for member in [
            "iss", "sub", "aud", "iat", "nbf", "exp", "jti", "amr", "cnf", "sid", "enr",
        ] {
            let mut missing = good.clone();
            missing.as_object_mut().unwrap().remove(member);
            assert!(
                serde_json::from_value::<Claims>(missing).is_err(),
                "accepted a token without {member}"
            );
        }

        let mut aud_array = good.clone();
        aud_array["aud"] = serde_json::json!(["tessera"]);
        assert!(serde_json::from_value::<Claims>(aud_array).is_err());

        let mut exp_string = good.clone();
        exp_string["exp"] = "1700000900".into();
        assert!(serde_json::from_value::<Claims>(exp_string).is_err());

        let mut exp_negative = good;
        exp_negative["exp"] = serde_json::json!(-1);
        assert!(serde_json::from_value::<Claims>(exp_negative).is_err());
    }

    #[test]
    fn claims_reject_duplicate_members() {
        // RFC 7519 §4: a parser must reject duplicate claim names or use the last; we reject.
        let json = serde_json::to_string(&sample_claims()).unwrap();
        let dup = json.replacen("{", r#"{"sub":"root","#, 1);
        assert!(serde_json::from_str::<Claims>(&dup).is_err());
    }
}
