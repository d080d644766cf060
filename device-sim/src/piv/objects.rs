//! The PIV data objects a new simulated card carries (NIST SP 800-73-4 Part 1 §3): CHUID, CCC,
//! Discovery object, certificate containers, and the application property template of SELECT
//! (Part 2 §3.1.1). Builders only; what GET DATA returns is decided in [`super::card`].

use std::str::FromStr;
use std::time::Duration;

use der::Encode;
use p256::ecdsa::{DerSignature, SigningKey};
use tessera::iso7816::tlv;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;

use super::{SimError, ALG_3DES, ALG_ECC_P256};

/// The PIV application identifier: NIST RID A0 00 00 03 08 and PIX 00 00 10 00 01 00
/// (SP 800-73-4 Part 1 §2.2).
pub const PIV_AID: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];
/// NIST's registered application provider identifier, the first five bytes of [`PIV_AID`].
pub const NIST_RID: [u8; 5] = [0xA0, 0x00, 0x00, 0x03, 0x08];
const PIV_PIX: [u8; 6] = [0x00, 0x00, 0x10, 0x00, 0x01, 0x00];

/// Card Capability Container (SP 800-73-4 Part 1 Table 3).
pub const TAG_CCC: u32 = 0x5FC107;
/// Card Holder Unique Identifier.
pub const TAG_CHUID: u32 = 0x5FC102;
/// Discovery object: a BER-TLV 7E template, not wrapped in 53 (Part 1 §3.3.2).
pub const TAG_DISCOVERY: u32 = 0x7E;

/// FASC-N of a non-federal issuer: agency, system and credential codes all 9
/// (TIG SCEPACS; the value every test card uses).
const FASC_N: [u8; 25] = [
    0xD4, 0xE7, 0x39, 0xDA, 0x73, 0x9C, 0xED, 0x39, 0xCE, 0x73, 0x9D, 0x83, 0x68, 0x58, 0x21, 0x08,
    0x42, 0x10, 0x84, 0x21, 0xC8, 0x42, 0x10, 0xC3, 0xEB,
];

/// Response to SELECT of the PIV application: the application property template
/// (SP 800-73-4 Part 2 Table 3).
pub fn application_property_template() -> Result<Vec<u8>, SimError> {
    let mut body = Vec::new();
    // Table 3: tag 4F carries the PIX; the RID is in the coexistent tag allocation authority.
    tlv::write(&mut body, 0x4F, &PIV_PIX)?;
    tlv::write(&mut body, 0x79, &tlv::encode(0x4F, &NIST_RID)?)?;
    tlv::write(&mut body, 0x50, b"Tessera simulated PIV")?;
    let mut algorithms = Vec::new();
    for alg in [ALG_3DES, ALG_ECC_P256] {
        tlv::write(&mut algorithms, 0x80, &[alg])?;
    }
    // Table 3: the list ends with an empty object identifier (tag 06).
    tlv::write(&mut algorithms, 0x06, &[])?;
    tlv::write(&mut body, 0xAC, &algorithms)?;
    Ok(tlv::encode(0x61, &body)?)
}

/// The Discovery object: the PIV AID and a PIN usage policy "PIV PIN only" (Part 1 §3.3.2).
pub fn discovery() -> Result<Vec<u8>, SimError> {
    let mut body = Vec::new();
    tlv::write(&mut body, 0x4F, &PIV_AID)?;
    tlv::write(&mut body, 0x5F2F, &[0x40, 0x00])?;
    Ok(tlv::encode(0x7E, &body)?)
}

/// The CHUID container (Part 1 Table 9) with `guid`; the issuer signature is left empty, which
/// relying software accepts for test cards.
pub fn chuid(guid: &[u8; 16]) -> Result<Vec<u8>, SimError> {
    let mut body = Vec::new();
    tlv::write(&mut body, 0x30, &FASC_N)?;
    tlv::write(&mut body, 0x34, guid)?;
    tlv::write(&mut body, 0x35, b"20351231")?;
    tlv::write(&mut body, 0x3E, &[])?;
    tlv::write(&mut body, 0xFE, &[])?;
    Ok(tlv::encode(0x53, &body)?)
}

/// The Card Capability Container (Part 1 Table 8) with a 14-byte card identifier.
pub fn ccc(card_id: &[u8; 14]) -> Result<Vec<u8>, SimError> {
    let mut identifier = vec![0xA0, 0x00, 0x00, 0x01, 0x16, 0xFF, 0x02];
    identifier.extend_from_slice(card_id);
    let mut body = Vec::new();
    tlv::write(&mut body, 0xF0, &identifier)?;
    for (tag, value) in [
        (0xF1, &[0x21][..]), // capability container version
        (0xF2, &[0x21][..]), // grammar version
        (0xF3, &[][..]),     // applications CardURL
        (0xF4, &[0x00][..]), // no PKCS#15
        (0xF5, &[0x10][..]), // registered data model number
        (0xF6, &[][..]),
        (0xF7, &[][..]),
        (0xFA, &[][..]),
        (0xFB, &[][..]),
        (0xFC, &[][..]),
        (0xFD, &[][..]),
        (0xFE, &[][..]),
    ] {
        tlv::write(&mut body, tag, value)?;
    }
    Ok(tlv::encode(0x53, &body)?)
}

/// A certificate container (Part 1 Table 10): 70 certificate, 71 CertInfo (00 = not compressed),
/// FE error detection code.
pub fn certificate_object(der: &[u8]) -> Result<Vec<u8>, SimError> {
    let mut body = Vec::new();
    tlv::write(&mut body, 0x70, der)?;
    tlv::write(&mut body, 0x71, &[0x00])?;
    tlv::write(&mut body, 0xFE, &[])?;
    Ok(tlv::encode(0x53, &body)?)
}

/// The DER certificate inside a certificate container, if it has one.
pub fn certificate_from_object(object: &[u8]) -> Option<Vec<u8>> {
    let body = tlv::find(object, 0x53).ok()??;
    tlv::find(body, 0x70).ok()?.map(<[u8]>::to_vec)
}

/// A self-signed X.509 v3 certificate for `key`, valid for ten years from now.
pub fn self_signed_certificate(
    key: &SigningKey,
    common_name: &str,
    card_serial: u32,
) -> Result<Vec<u8>, SimError> {
    let cert_error = |e: &dyn std::fmt::Display| SimError::Certificate(e.to_string());
    let mut serial = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut serial);
    // A positive INTEGER of at most 20 octets (RFC 5280 §4.1.2.2).
    if let Some(first) = serial.first_mut() {
        *first &= 0x7F;
        *first |= 0x01;
    }
    let serial = SerialNumber::new(&serial).map_err(|e| cert_error(&e))?;
    let validity = Validity::from_now(Duration::from_secs(10 * 365 * 24 * 3600))
        .map_err(|e| cert_error(&e))?;
    let subject = Name::from_str(&format!(
        "CN={common_name},serialNumber={card_serial},O=Tessera"
    ))
    .map_err(|e| cert_error(&e))?;
    let spki =
        SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).map_err(|e| cert_error(&e))?;
    let builder = CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, key)
        .map_err(|e| cert_error(&e))?;
    let cert = builder
        .build::<DerSignature>()
        .map_err(|e| cert_error(&e))?;
    cert.to_der().map_err(|e| cert_error(&e))
}
