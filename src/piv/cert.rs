//! Reading the P-256 public key (and a few display fields) out of a PIV slot's X.509 certificate
//! (RFC 5280). The certificate only carries the key: Tessera trusts the key enrolled for a user, not a
//! CA, so signatures, issuers and validity dates are reported but not checked here.

use der::asn1::ObjectIdentifier;
use der::Decode;
use p256::elliptic_curve::ALGORITHM_OID;
use p256::pkcs8::AssociatedOid;
use p256::NistP256;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;

use crate::{Error, Result};

/// What `tessera` shows about an enrolled certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// Subject distinguished name in RFC 4514 form, e.g. `CN=Alice`.
    pub subject: String,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: u64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: u64,
    pub public_key: p256::PublicKey,
}

/// The P-256 public key of a DER certificate. The key must be `id-ecPublicKey` with the named curve
/// `prime256v1` (RFC 5480 §2.1.1); anything else is [`Error::Device`].
pub fn p256_public_key(cert_der: &[u8]) -> Result<p256::PublicKey> {
    key_of(&parse(cert_der)?.tbs_certificate.subject_public_key_info)
}

/// Subject, validity and key of a DER certificate.
pub fn summarize(cert_der: &[u8]) -> Result<CertSummary> {
    let cert = parse(cert_der)?;
    let tbs = &cert.tbs_certificate;
    Ok(CertSummary {
        subject: tbs.subject.to_string(),
        not_before: tbs.validity.not_before.to_unix_duration().as_secs(),
        not_after: tbs.validity.not_after.to_unix_duration().as_secs(),
        public_key: key_of(&tbs.subject_public_key_info)?,
    })
}

/// Strict DER parse of the whole input; trailing bytes are an error.
fn parse(cert_der: &[u8]) -> Result<Certificate> {
    Certificate::from_der(cert_der)
        .map_err(|e| Error::Device(format!("malformed certificate: {e}")))
}

fn key_of(spki: &SubjectPublicKeyInfoOwned) -> Result<p256::PublicKey> {
    let not_p256 = || Error::Device("certificate key is not P-256".into());
    if spki.algorithm.oid != ALGORITHM_OID {
        return Err(not_p256());
    }
    // Named curve only (RFC 5480 §2.1.1: implicit and specified curves MUST NOT be used).
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .map(|p| p.decode_as::<ObjectIdentifier>());
    if !matches!(curve, Some(Ok(oid)) if oid == NistP256::OID) {
        return Err(not_p256());
    }
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| Error::Device("certificate key has unused bits".into()))?;
    // Rejects the identity point and points off the curve (SEC 1 §2.3.4).
    p256::PublicKey::from_sec1_bytes(point)
        .map_err(|_| Error::Device("certificate key is not a valid P-256 point".into()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::str::FromStr;
    use std::time::Duration;

    use der::asn1::{BitString, UtcTime};
    use der::{Any, Encode};
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{DerSignature, SigningKey};
    use rand_core::OsRng;
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::AlgorithmIdentifierOwned;
    use x509_cert::time::{Time, Validity};
    use x509_cert::{TbsCertificate, Version};

    use super::*;

    const NOT_BEFORE: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
    const NOT_AFTER: u64 = 2_082_758_400; // 2036-01-01T00:00:00Z

    fn utc(secs: u64) -> Time {
        Time::UtcTime(UtcTime::from_unix_duration(Duration::from_secs(secs)).unwrap())
    }

    /// A self-signed certificate assembled by hand rather than with x509-cert's builder: the builder
    /// needs sha2's `oid` feature, which this package does not enable.
    fn make_cert(key: &SigningKey) -> Certificate {
        let ecdsa_with_sha256 = AlgorithmIdentifierOwned {
            oid: ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2"),
            parameters: None,
        };
        let name = Name::from_str("CN=Alice Example,O=Tessera").unwrap();
        let tbs_certificate = TbsCertificate {
            version: Version::V3,
            serial_number: SerialNumber::from(7u32),
            signature: ecdsa_with_sha256.clone(),
            issuer: name.clone(),
            validity: Validity {
                not_before: utc(NOT_BEFORE),
                not_after: utc(NOT_AFTER),
            },
            subject: name,
            subject_public_key_info: SubjectPublicKeyInfoOwned::from_key(*key.verifying_key())
                .unwrap(),
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: None,
        };
        let signature: DerSignature = key.sign(&tbs_certificate.to_der().unwrap());
        Certificate {
            tbs_certificate,
            signature_algorithm: ecdsa_with_sha256,
            signature: BitString::from_bytes(signature.as_bytes()).unwrap(),
        }
    }

    #[test]
    fn reads_key_and_summary_of_a_p256_certificate() {
        let key = SigningKey::random(&mut OsRng);
        let der = make_cert(&key).to_der().unwrap();
        let want = p256::PublicKey::from(key.verifying_key());
        assert_eq!(p256_public_key(&der).unwrap(), want);
        let summary = summarize(&der).unwrap();
        assert_eq!(
            summary,
            CertSummary {
                subject: "CN=Alice Example,O=Tessera".into(),
                not_before: NOT_BEFORE,
                not_after: NOT_AFTER,
                public_key: want,
            }
        );
    }

    type SpkiEdit = Box<dyn Fn(&mut SubjectPublicKeyInfoOwned)>;

    #[test]
    fn rejects_other_key_types() {
        let key = SigningKey::random(&mut OsRng);
        let secp384r1 = ObjectIdentifier::new_unwrap("1.3.132.0.34");
        let ed25519 = ObjectIdentifier::new_unwrap("1.3.101.112");
        let edits: [(&str, SpkiEdit); 4] = [
            (
                "P-384 curve",
                Box::new(move |s| {
                    s.algorithm.parameters = Some(Any::encode_from(&secp384r1).unwrap())
                }),
            ),
            ("no curve", Box::new(|s| s.algorithm.parameters = None)),
            (
                "NULL parameters",
                Box::new(|s| {
                    s.algorithm.parameters = Some(Any::encode_from(&der::asn1::Null).unwrap())
                }),
            ),
            ("Ed25519", Box::new(move |s| s.algorithm.oid = ed25519)),
        ];
        for (name, edit) in edits {
            let mut cert = make_cert(&key);
            edit(&mut cert.tbs_certificate.subject_public_key_info);
            let der = cert.to_der().unwrap();
            match p256_public_key(&der) {
                Err(Error::Device(m)) => assert_eq!(m, "certificate key is not P-256", "{name}"),
                other => panic!("{name}: {other:?}"),
            }
            assert!(summarize(&der).is_err(), "{name}");
        }
    }

    #[test]
    fn rejects_a_point_off_the_curve() {
        let key = SigningKey::random(&mut OsRng);
        let mut cert = make_cert(&key);
        let spki = &mut cert.tbs_certificate.subject_public_key_info;
        let mut point = spki.subject_public_key.raw_bytes().to_vec();
        *point.last_mut().unwrap() ^= 0x01;
        spki.subject_public_key = BitString::from_bytes(&point).unwrap();
        assert!(
            matches!(p256_public_key(&cert.to_der().unwrap()), Err(Error::Device(m)) if m.contains("valid P-256 point"))
        );
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let der = make_cert(&SigningKey::random(&mut OsRng)).to_der().unwrap();
        for len in 0..der.len() {
            assert!(
                matches!(p256_public_key(&der[..len]), Err(Error::Device(_))),
                "prefix {len}"
            );
            assert!(summarize(&der[..len]).is_err(), "prefix {len}");
        }
        let mut trailing = der.clone();
        trailing.push(0x00);
        assert!(p256_public_key(&trailing).is_err(), "trailing byte");
        for junk in [
            &b""[..],
            b"\x30",
            b"\x30\x80\x00\x00",
            b"\xFF\xFF\xFF\xFF",
            b"not a certificate",
        ] {
            assert!(p256_public_key(junk).is_err(), "{junk:02X?}");
        }
        // Every single-byte corruption either fails cleanly or still yields a key.
        for i in 0..der.len() {
            let mut bent = der.clone();
            bent[i] ^= 0xA5;
            let _ = summarize(&bent);
        }
    }
}
