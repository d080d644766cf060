//! Unit tests of the card model: every instruction, the PIN rule of each slot, counters, blocking,
//! PUK reset, chaining, GET RESPONSE, management-key authentication, the state file, and garbage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use rand_core::{OsRng, RngCore};
use tessera::iso7816::apdu::Command;
use tessera::iso7816::tlv;
use tessera::transport::CardTransport;

use super::mgmt;
use super::*;

fn card() -> PivCard {
    PivCard::in_memory(&SimOptions::default()).unwrap()
}

/// Sends a command built from parts and returns (data, sw).
fn send(card: &mut PivCard, cmd: Command) -> (Vec<u8>, u16) {
    split(card.process(&cmd.to_bytes().unwrap()))
}

fn split(mut resp: Vec<u8>) -> (Vec<u8>, u16) {
    assert!(resp.len() >= 2, "response too short: {resp:02X?}");
    let sw = resp.split_off(resp.len() - 2);
    (resp, u16::from_be_bytes([sw[0], sw[1]]))
}

fn padded(pin: &[u8]) -> Vec<u8> {
    let mut v = pin.to_vec();
    v.resize(8, 0xFF);
    v
}

fn verify(card: &mut PivCard, pin: &[u8]) -> u16 {
    send(card, Command::new(0, 0x20, 0, 0x80).with_data(padded(pin))).1
}

fn verify_status(card: &mut PivCard) -> u16 {
    send(card, Command::new(0, 0x20, 0, 0x80)).1
}

fn get_data(card: &mut PivCard, tag: &[u8]) -> (Vec<u8>, u16) {
    let field = tlv::encode(0x5C, tag).unwrap();
    // Extended Le: the whole object in one response.
    send(
        card,
        Command::new(0, 0xCB, 0x3F, 0xFF)
            .with_data(field)
            .with_le(65536),
    )
}

fn sign_apdu(slot: u8, hash: &[u8]) -> Command {
    let mut inner = tlv::encode(0x82, &[]).unwrap();
    tlv::write(&mut inner, 0x81, hash).unwrap();
    Command::new(0, 0x87, ALG_ECC_P256, slot)
        .with_data(tlv::encode(0x7C, &inner).unwrap())
        .with_le(256)
}

/// Signs `hash` in `slot` and checks the signature against the slot's public key.
fn sign_ok(card: &mut PivCard, slot: Slot, hash: &[u8; 32]) {
    let (data, sw) = send(card, sign_apdu(slot.key_reference(), hash));
    assert_eq!(sw, 0x9000, "signing in {slot:?}");
    let template = tlv::expect_one(&data, 0x7C).unwrap();
    let der = tlv::expect_one(template, 0x82).unwrap();
    let sig = Signature::from_der(der).unwrap();
    let public = card.state().public_key(slot).unwrap();
    VerifyingKey::from(public)
        .verify_prehash(hash, &sig)
        .unwrap();
}

fn mgmt_auth(card: &mut PivCard, key: &[u8; 24]) -> u16 {
    // Mutual authentication (SP 800-73-4 Part 2 Appendix A.2), as yubico-piv-tool does it.
    let req = tlv::encode(0x7C, &tlv::encode(0x80, &[]).unwrap()).unwrap();
    let (data, sw) = send(
        card,
        Command::new(0, 0x87, ALG_3DES, 0x9B)
            .with_data(req)
            .with_le(256),
    );
    assert_eq!(sw, 0x9000);
    let inner = tlv::expect_one(&data, 0x7C).unwrap();
    let encrypted: [u8; 8] = tlv::expect_one(inner, 0x80).unwrap().try_into().unwrap();
    let witness = decrypt(key, &encrypted);
    let challenge = [9u8, 8, 7, 6, 5, 4, 3, 2];
    let mut inner = tlv::encode(0x80, &witness).unwrap();
    tlv::write(&mut inner, 0x81, &challenge).unwrap();
    let (data, sw) = send(
        card,
        Command::new(0, 0x87, ALG_3DES, 0x9B)
            .with_data(tlv::encode(0x7C, &inner).unwrap())
            .with_le(256),
    );
    if sw == 0x9000 {
        let inner = tlv::expect_one(&data, 0x7C).unwrap();
        assert_eq!(
            tlv::expect_one(inner, 0x82).unwrap(),
            mgmt::encrypt(key, &challenge)
        );
    }
    sw
}

fn decrypt(key: &[u8; 24], block: &[u8; 8]) -> [u8; 8] {
    use des::cipher::{BlockDecrypt, KeyInit};
    let cipher = des::TdesEde3::new(key.into());
    let mut out = *block;
    cipher.decrypt_block((&mut out).into());
    out
}

#[test]
fn select_returns_the_application_property_template() {
    let mut card = card();
    let (data, sw) = send(
        &mut card,
        Command::new(0, 0xA4, 0x04, 0)
            .with_data(PIV_AID)
            .with_le(256),
    );
    assert_eq!(sw, 0x9000);
    let apt = tlv::expect_one(&data, 0x61).unwrap();
    assert_eq!(
        tlv::find(apt, 0x4F).unwrap().unwrap(),
        [0x00, 0x00, 0x10, 0x00, 0x01, 0x00]
    );
    let authority = tlv::find(apt, 0x79).unwrap().unwrap();
    assert_eq!(
        tlv::expect_one(authority, 0x4F).unwrap(),
        [0xA0, 0x00, 0x00, 0x03, 0x08]
    );
    assert!(tlv::find(apt, 0x50).unwrap().is_some());
    let algs = tlv::find(apt, 0xAC).unwrap().unwrap();
    let algs: Vec<_> = tlv::parse_all(algs)
        .unwrap()
        .into_iter()
        .filter(|t| t.tag == 0x80)
        .map(|t| t.value.to_vec())
        .collect();
    assert!(algs.contains(&vec![0x11]));
    assert!(algs.contains(&vec![0x03]));
    // Right-truncated AID (ISO/IEC 7816-4 §11.2.2) is accepted.
    let (_, sw) = send(
        &mut card,
        Command::new(0, 0xA4, 0x04, 0)
            .with_data(&PIV_AID[..9])
            .with_le(256),
    );
    assert_eq!(sw, 0x9000);
    // Other AIDs are not here.
    let (_, sw) = send(
        &mut card,
        Command::new(0, 0xA4, 0x04, 0).with_data([0xA0, 0x00, 0x00, 0x05, 0x27, 0x20, 0x01]),
    );
    assert_eq!(sw, 0x6A82);
}

#[test]
fn get_data_objects() {
    let mut card = card();
    let (chuid, sw) = get_data(&mut card, &[0x5F, 0xC1, 0x02]);
    assert_eq!(sw, 0x9000);
    let body = tlv::expect_one(&chuid, 0x53).unwrap();
    let guid = tlv::find(body, 0x34).unwrap().unwrap();
    assert_eq!(guid, card.state().guid().unwrap());
    assert_eq!(tlv::find(body, 0x30).unwrap().unwrap().len(), 25);

    let (disc, sw) = get_data(&mut card, &[0x7E]);
    assert_eq!(sw, 0x9000);
    let body = tlv::expect_one(&disc, 0x7E).unwrap();
    assert_eq!(tlv::find(body, 0x4F).unwrap().unwrap(), PIV_AID);

    let (ccc, sw) = get_data(&mut card, &[0x5F, 0xC1, 0x07]);
    assert_eq!(sw, 0x9000);
    assert!(tlv::find(tlv::expect_one(&ccc, 0x53).unwrap(), 0xF0)
        .unwrap()
        .is_some());

    for slot in [Slot::Authentication, Slot::CardAuthentication] {
        let tag = slot.object_tag().to_be_bytes();
        let (obj, sw) = get_data(&mut card, &tag[1..]);
        assert_eq!(sw, 0x9000);
        let cert = objects::certificate_from_object(&obj).unwrap();
        assert_eq!(Some(cert), card.state().certificate(slot));
        // The certificate carries the slot's public key.
        use der::Decode;
        let cert =
            x509_cert::Certificate::from_der(&card.state().certificate(slot).unwrap()).unwrap();
        let spki_key = cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes()
            .to_vec();
        let public = card.state().public_key(slot).unwrap();
        assert_eq!(
            spki_key,
            p256::EncodedPoint::from(public).as_bytes().to_vec()
        );
    }
    // 9C and 9D have no certificate on a new card.
    assert_eq!(get_data(&mut card, &[0x5F, 0xC1, 0x0A]).1, 0x6A82);
    assert_eq!(get_data(&mut card, &[0x5F, 0xC1, 0x0B]).1, 0x6A82);
    // Malformed field and wrong P1P2.
    let (_, sw) = send(
        &mut card,
        Command::new(0, 0xCB, 0x3F, 0xFF).with_data([0x5C, 0x05, 0x5F]),
    );
    assert_eq!(sw, 0x6A80);
    let (_, sw) = send(
        &mut card,
        Command::new(0, 0xCB, 0x00, 0x00).with_data([0x5C, 0x01, 0x7E]),
    );
    assert_eq!(sw, 0x6A86);
}

#[test]
fn verify_counts_down_blocks_and_status_query_spends_nothing() {
    let mut card = card();
    assert_eq!(verify_status(&mut card), 0x63C3);
    assert_eq!(verify(&mut card, b"000000"), 0x63C2);
    assert_eq!(verify_status(&mut card), 0x63C2);
    assert_eq!(verify_status(&mut card), 0x63C2);
    // A correct PIN refills the counter.
    assert_eq!(verify(&mut card, b"123456"), 0x9000);
    assert_eq!(card.state().pin_retries_left(), 3);
    assert_eq!(verify_status(&mut card), 0x9000);
    // Reset drops the security status.
    card.reset();
    assert_eq!(verify_status(&mut card), 0x63C3);
    for expected in [0x63C2, 0x63C1, 0x63C0] {
        assert_eq!(verify(&mut card, b"654321"), expected);
    }
    assert_eq!(verify(&mut card, b"123456"), 0x6983);
    assert_eq!(verify_status(&mut card), 0x6983);
    // Malformed PIN field: not 8 bytes.
    let mut fresh = self::card();
    let (_, sw) = send(
        &mut fresh,
        Command::new(0, 0x20, 0, 0x80).with_data(b"123456".to_vec()),
    );
    assert_eq!(sw, 0x6A80);
    assert_eq!(fresh.state().pin_retries_left(), 3);
    // Wrong key reference.
    let (_, sw) = send(
        &mut fresh,
        Command::new(0, 0x20, 0, 0x81).with_data(padded(b"12345678")),
    );
    assert_eq!(sw, 0x6A88);
}

#[test]
fn verify_p1_ff_resets_security_status() {
    let mut card = card();
    assert_eq!(verify(&mut card, b"123456"), 0x9000);
    assert_eq!(send(&mut card, Command::new(0, 0x20, 0xFF, 0x80)).1, 0x9000);
    assert_eq!(verify_status(&mut card), 0x63C3);
}

#[test]
fn options_set_pin_puk_and_retries_of_a_new_card() {
    let options = SimOptions {
        pin: zeroize::Zeroizing::new("24681357".into()),
        puk: zeroize::Zeroizing::new("87654321".into()),
        pin_retries: 5,
        fault: None,
        profile: CardProfile::Specification,
    };
    let mut card = PivCard::in_memory(&options).unwrap();
    assert_eq!(verify_status(&mut card), 0x63C5);
    assert_eq!(verify(&mut card, b"123456"), 0x63C4);
    assert_eq!(verify(&mut card, b"24681357"), 0x9000);
    let bad = SimOptions {
        pin: zeroize::Zeroizing::new("12ab56".into()),
        ..SimOptions::default()
    };
    assert!(PivCard::in_memory(&bad).is_err());
    let bad = SimOptions {
        pin_retries: 16,
        ..SimOptions::default()
    };
    assert!(PivCard::in_memory(&bad).is_err());
}

#[test]
fn slot_pin_rules() {
    let mut card = card();
    let hash = [0x42u8; 32];
    // 9E: no PIN.
    sign_ok(&mut card, Slot::CardAuthentication, &hash);
    // 9A: PIN once per session.
    assert_eq!(send(&mut card, sign_apdu(0x9A, &hash)).1, 0x6982);
    assert_eq!(verify(&mut card, b"123456"), 0x9000);
    sign_ok(&mut card, Slot::Authentication, &hash);
    sign_ok(&mut card, Slot::Authentication, &hash);
    // A wrong PIN drops the security status.
    assert_eq!(verify(&mut card, b"999999"), 0x63C2);
    assert_eq!(send(&mut card, sign_apdu(0x9A, &hash)).1, 0x6982);
    // SELECT of another application drops it too; SELECT of PIV does not.
    assert_eq!(verify(&mut card, b"123456"), 0x9000);
    send(
        &mut card,
        Command::new(0, 0xA4, 4, 0).with_data(PIV_AID).with_le(256),
    );
    sign_ok(&mut card, Slot::Authentication, &hash);
    send(
        &mut card,
        Command::new(0, 0xA4, 4, 0).with_data([0xD2, 0x76, 0x00, 0x01]),
    );
    assert_eq!(send(&mut card, sign_apdu(0x9A, &hash)).1, 0x6982);
}

#[test]
fn signature_slot_needs_verify_immediately_before_every_signature() {
    let mut card = card();
    let hash = [7u8; 32];
    assert_eq!(mgmt_auth(&mut card, &mgmt_key()), 0x9000);
    let gen = Command::new(0, 0x47, 0, 0x9C)
        .with_data([0xAC, 0x03, 0x80, 0x01, 0x11])
        .with_le(256);
    assert_eq!(send(&mut card, gen).1, 0x9000);
    assert_eq!(send(&mut card, sign_apdu(0x9C, &hash)).1, 0x6982);
    assert_eq!(verify(&mut card, b"123456"), 0x9000);
    sign_ok(&mut card, Slot::Signature, &hash);
    // The second signature needs another VERIFY, though the session PIN is still verified.
    assert_eq!(send(&mut card, sign_apdu(0x9C, &hash)).1, 0x6982);
    sign_ok(&mut card, Slot::Authentication, &hash);
    // A command between VERIFY and the signature spends the permission.
    assert_eq!(verify(&mut card, b"123456"), 0x9000);
    assert_eq!(verify_status(&mut card), 0x9000);
    assert_eq!(send(&mut card, sign_apdu(0x9C, &hash)).1, 0x6982);
    assert_eq!(verify(&mut card, b"123456"), 0x9000);
    sign_ok(&mut card, Slot::Signature, &hash);
}

fn mgmt_key() -> [u8; 24] {
    DEFAULT_MGMT_KEY
}

#[test]
fn sign_rejects_bad_input() {
    let mut card = card();
    // Wrong algorithm for the key.
    let mut cmd = sign_apdu(0x9E, &[1u8; 32]);
    cmd.p1 = 0x14;
    assert_eq!(send(&mut card, cmd).1, 0x6A86);
    // Hash longer than the field.
    assert_eq!(send(&mut card, sign_apdu(0x9E, &[1u8; 33])).1, 0x6A80);
    // Empty slot.
    assert_eq!(send(&mut card, sign_apdu(0x9D, &[1u8; 32])).1, 0x6A88);
    // Unknown key reference.
    assert_eq!(send(&mut card, sign_apdu(0x95, &[1u8; 32])).1, 0x6A86);
    // Not a 7C template.
    let cmd = Command::new(0, 0x87, 0x11, 0x9E).with_data([0x7D, 0x00]);
    assert_eq!(send(&mut card, cmd).1, 0x6A80);
    // A short hash is signed as the integer it is (left-padded).
    let (data, sw) = send(&mut card, sign_apdu(0x9E, &[0xAB; 20]));
    assert_eq!(sw, 0x9000);
    let der = tlv::expect_one(tlv::expect_one(&data, 0x7C).unwrap(), 0x82).unwrap();
    let mut padded = [0u8; 32];
    padded[12..].fill(0xAB);
    let public = card.state().public_key(Slot::CardAuthentication).unwrap();
    VerifyingKey::from(public)
        .verify_prehash(&padded, &Signature::from_der(der).unwrap())
        .unwrap();
}

#[test]
fn change_reference_data_for_pin_and_puk() {
    let mut card = card();
    let mut data = padded(b"123456");
    data.extend(padded(b"11223344"));
    assert_eq!(
        send(&mut card, Command::new(0, 0x24, 0, 0x80).with_data(data)).1,
        0x9000
    );
    assert_eq!(verify(&mut card, b"123456"), 0x63C2);
    assert_eq!(verify(&mut card, b"11223344"), 0x9000);
    // A wrong old PIN spends a try.
    let mut data = padded(b"000000");
    data.extend(padded(b"55667788"));
    assert_eq!(
        send(&mut card, Command::new(0, 0x24, 0, 0x80).with_data(data)).1,
        0x63C2
    );
    // New PIN must be digits.
    let mut data = padded(b"11223344");
    data.extend(padded(b"abcdef"));
    assert_eq!(
        send(&mut card, Command::new(0, 0x24, 0, 0x80).with_data(data)).1,
        0x6A80
    );
    // PUK.
    let mut data = padded(b"12345678");
    data.extend(padded(b"87654321"));
    assert_eq!(
        send(&mut card, Command::new(0, 0x24, 0, 0x81).with_data(data)).1,
        0x9000
    );
    let mut data = padded(b"12345678");
    data.extend(padded(b"11111111"));
    assert_eq!(
        send(&mut card, Command::new(0, 0x24, 0, 0x81).with_data(data)).1,
        0x63C2
    );
    assert_eq!(card.state().puk_retries_left(), 2);
    // Wrong length.
    assert_eq!(
        send(
            &mut card,
            Command::new(0, 0x24, 0, 0x80).with_data(padded(b"123456"))
        )
        .1,
        0x6A80
    );
}

#[test]
fn puk_unblocks_the_pin_and_has_its_own_counter() {
    let mut card = card();
    for _ in 0..3 {
        verify(&mut card, b"000000");
    }
    assert_eq!(verify(&mut card, b"123456"), 0x6983);
    let rrc = |puk: &[u8], pin: &[u8]| {
        let mut data = padded(puk);
        data.extend(padded(pin));
        Command::new(0, 0x2C, 0, 0x80).with_data(data)
    };
    assert_eq!(send(&mut card, rrc(b"00000000", b"654321")).1, 0x63C2);
    assert_eq!(card.state().puk_retries_left(), 2);
    assert_eq!(card.state().pin_retries_left(), 0);
    assert_eq!(send(&mut card, rrc(b"12345678", b"654321")).1, 0x9000);
    assert_eq!(card.state().puk_retries_left(), 3);
    assert_eq!(card.state().pin_retries_left(), 3);
    assert_eq!(verify(&mut card, b"654321"), 0x9000);
    // Block the PUK.
    for expected in [0x63C2, 0x63C1, 0x63C0] {
        assert_eq!(send(&mut card, rrc(b"00000000", b"111111")).1, expected);
    }
    assert_eq!(send(&mut card, rrc(b"12345678", b"111111")).1, 0x6983);
    // RESET RETRY COUNTER of the PUK itself is not a thing.
    let mut data = padded(b"12345678");
    data.extend(padded(b"111111"));
    assert_eq!(
        send(&mut card, Command::new(0, 0x2C, 0, 0x81).with_data(data)).1,
        0x6A88
    );
}

#[test]
fn management_key_mutual_and_external_authentication() {
    let mut card = card();
    let key = mgmt_key();
    // Without authentication: no key generation, no PUT DATA.
    let gen = Command::new(0, 0x47, 0, 0x9A)
        .with_data([0xAC, 0x03, 0x80, 0x01, 0x11])
        .with_le(256);
    assert_eq!(send(&mut card, gen.clone()).1, 0x6982);
    // Wrong key.
    // Bit 0 of each DES key byte is parity and ignored: change a key bit.
    let mut wrong = key;
    wrong[0] ^= 0x02;
    assert_eq!(mgmt_auth(&mut card, &wrong), 0x6982);
    assert_eq!(send(&mut card, gen.clone()).1, 0x6982);
    // Right key (mutual).
    assert_eq!(mgmt_auth(&mut card, &key), 0x9000);
    let old = card.state().public_key(Slot::Authentication).unwrap();
    let (data, sw) = send(&mut card, gen);
    assert_eq!(sw, 0x9000);
    let point = tlv::expect_one(tlv::expect_one(&data, 0x7F49).unwrap(), 0x86).unwrap();
    let new = card.state().public_key(Slot::Authentication).unwrap();
    assert_ne!(old, new);
    assert_eq!(point, p256::EncodedPoint::from(new).as_bytes());
    // Reset ends it.
    card.reset();
    let put = put_data_cmd(0x5FC10B, &[0x70, 0x01, 0x00]);
    assert_eq!(send(&mut card, put.clone()).1, 0x6982);
    // External authentication: challenge, then its encryption.
    let req = tlv::encode(0x7C, &tlv::encode(0x81, &[]).unwrap()).unwrap();
    let (data, sw) = send(
        &mut card,
        Command::new(0, 0x87, 0x03, 0x9B)
            .with_data(req)
            .with_le(256),
    );
    assert_eq!(sw, 0x9000);
    let challenge: [u8; 8] = tlv::expect_one(tlv::expect_one(&data, 0x7C).unwrap(), 0x81)
        .unwrap()
        .try_into()
        .unwrap();
    let answer = tlv::encode(
        0x7C,
        &tlv::encode(0x82, &mgmt::encrypt(&key, &challenge)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        send(
            &mut card,
            Command::new(0, 0x87, 0x03, 0x9B).with_data(answer.clone())
        )
        .1,
        0x9000
    );
    assert_eq!(send(&mut card, put).1, 0x9000);
    // A replayed answer without a fresh challenge fails.
    assert_eq!(
        send(
            &mut card,
            Command::new(0, 0x87, 0x03, 0x9B).with_data(answer)
        )
        .1,
        0x6985
    );
    // Wrong algorithm.
    let req = tlv::encode(0x7C, &tlv::encode(0x80, &[]).unwrap()).unwrap();
    assert_eq!(
        send(&mut card, Command::new(0, 0x87, 0x11, 0x9B).with_data(req)).1,
        0x6A86
    );
}

fn put_data_cmd(tag: u32, contents: &[u8]) -> Command {
    let mut data = tlv::encode(0x5C, &tag.to_be_bytes()[1..]).unwrap();
    tlv::write(&mut data, 0x53, contents).unwrap();
    Command::new(0, 0xDB, 0x3F, 0xFF).with_data(data)
}

#[test]
fn put_data_with_chaining_and_get_response() {
    let mut card = card();
    assert_eq!(mgmt_auth(&mut card, &mgmt_key()), 0x9000);
    // A 1000-byte "certificate" container: needs chaining (short APDUs carry 255 bytes).
    let mut contents = Vec::new();
    let cert: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    tlv::write(&mut contents, 0x70, &cert).unwrap();
    tlv::write(&mut contents, 0x71, &[0]).unwrap();
    let data = put_data_cmd(0x5FC10A, &contents).data.to_vec();
    let chunks: Vec<&[u8]> = data.chunks(255).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let cla = if i + 1 < chunks.len() { 0x10 } else { 0x00 };
        let (resp, sw) = send(
            &mut card,
            Command::new(cla, 0xDB, 0x3F, 0xFF).with_data(chunk.to_vec()),
        );
        assert_eq!((resp.len(), sw), (0, 0x9000), "chunk {i}");
    }
    // Read it back with short APDUs: 256 bytes at a time, 61xx, GET RESPONSE.
    let field = tlv::encode(0x5C, &[0x5F, 0xC1, 0x0A]).unwrap();
    let (mut all, mut sw) = send(
        &mut card,
        Command::new(0, 0xCB, 0x3F, 0xFF)
            .with_data(field)
            .with_le(256),
    );
    let mut rounds = 0;
    while sw >> 8 == 0x61 {
        assert_eq!(all.len() % 256, 0);
        let le = match sw & 0xFF {
            0 => 256,
            n => usize::from(n as u8),
        };
        let (more, next) = send(&mut card, Command::new(0, 0xC0, 0, 0).with_le(le));
        assert!(more.len() <= 256);
        all.extend(more);
        sw = next;
        rounds += 1;
    }
    assert_eq!(sw, 0x9000);
    assert_eq!(rounds, 3);
    assert_eq!(all, tlv::encode(0x53, &contents).unwrap());
    // GET RESPONSE with nothing pending.
    assert_eq!(
        send(&mut card, Command::new(0, 0xC0, 0, 0).with_le(256)).1,
        0x6985
    );
    // An extended Le takes the whole object at once.
    let (obj, sw) = get_data(&mut card, &[0x5F, 0xC1, 0x0A]);
    assert_eq!((obj.len(), sw), (all.len(), 0x9000));
    // The same object in one extended APDU (ISO/IEC 7816-4 §5.1, case 3E).
    let cmd = put_data_cmd(0x5FC10A, &contents);
    let bytes = cmd.to_bytes().unwrap();
    assert_eq!(bytes[4], 0x00, "extended Lc marker");
    assert_eq!(
        usize::from(u16::from_be_bytes([bytes[5], bytes[6]])),
        cmd.data.len()
    );
    assert_eq!(split(card.process(&bytes)).1, 0x9000);
    assert_eq!(get_data(&mut card, &[0x5F, 0xC1, 0x0A]).0, all);
    // An empty 53 deletes.
    assert_eq!(send(&mut card, put_data_cmd(0x5FC10A, &[])).1, 0x9000);
    assert_eq!(get_data(&mut card, &[0x5F, 0xC1, 0x0A]).1, 0x6A82);
    // Not a PIV container tag.
    assert_eq!(send(&mut card, put_data_cmd(0x5F0000, &[1])).1, 0x6A80);
}

#[test]
fn an_interrupted_chain_is_abandoned() {
    let mut card = card();
    assert_eq!(mgmt_auth(&mut card, &mgmt_key()), 0x9000);
    let data = put_data_cmd(0x5FC10D, &[0x70, 0x02, 1, 2]).data.to_vec();
    let (head, tail) = data.split_at(4);
    assert_eq!(
        send(
            &mut card,
            Command::new(0x10, 0xDB, 0x3F, 0xFF).with_data(head.to_vec())
        )
        .1,
        0x9000
    );
    // Another command in between: the chain is dropped, the command runs alone.
    assert_eq!(
        send(&mut card, Command::new(0, 0xFD, 0, 0).with_le(256)).1,
        0x9000
    );
    assert_eq!(
        send(
            &mut card,
            Command::new(0, 0xDB, 0x3F, 0xFF).with_data(tail.to_vec())
        )
        .1,
        0x6A80
    );
}

#[test]
fn yubico_version_serial_and_unknown_instructions() {
    let mut card = card();
    assert_eq!(
        send(&mut card, Command::new(0, 0xFD, 0, 0).with_le(256)),
        (vec![5, 4, 3], 0x9000)
    );
    let (serial, sw) = send(&mut card, Command::new(0, 0xF8, 0, 0).with_le(256));
    assert_eq!(sw, 0x9000);
    assert_eq!(serial, card.state().serial().to_be_bytes());
    assert_eq!(send(&mut card, Command::new(0, 0x99, 0, 0)).1, 0x6D00);
    assert_eq!(send(&mut card, Command::new(0x80, 0xFD, 0, 0)).1, 0x6E00);
    assert_eq!(card.process(&[0x00, 0xFD, 0x00]), vec![0x67, 0x00]);
}

#[test]
fn the_atr_has_a_valid_check_byte() {
    let card = card();
    let atr = card.atr();
    assert_eq!(atr[0], 0x3B);
    assert_eq!(atr[1..].iter().fold(0u8, |a, b| a ^ b), 0, "TCK");
    // TS, T0, TD1 (T=1, nothing further), the historical bytes, TCK.
    assert_eq!(atr[2], 0x01, "TD1: T=1 and no more interface bytes");
    assert_eq!(
        usize::from(atr[1] & 0x0F),
        atr.len() - 4,
        "historical byte count"
    );
    // Not the PC/SC Part 3 contactless form 3B 8n 80 01: this is a contact card.
    assert_ne!(&atr[2..4], &[0x80, 0x01]);
}

#[test]
fn state_file_round_trip_and_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    let options = SimOptions::default();
    let (serial, guid, cert, public) = {
        let mut card = PivCard::open(&path, &options).unwrap();
        assert_eq!(verify(&mut card, b"000000"), 0x63C2);
        (
            card.state().serial(),
            card.state().guid().unwrap(),
            card.state().certificate(Slot::Authentication).unwrap(),
            card.state().public_key(Slot::CardAuthentication).unwrap(),
        )
    };
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // No temporary file left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // Options do not change an existing card.
    let other = SimOptions {
        pin: zeroize::Zeroizing::new("999999".into()),
        pin_retries: 7,
        ..SimOptions::default()
    };
    let mut card = PivCard::open(&path, &other).unwrap();
    assert_eq!(card.state().serial(), serial);
    assert_eq!(card.state().guid().unwrap(), guid);
    assert_eq!(
        card.state().certificate(Slot::Authentication).unwrap(),
        cert
    );
    assert_eq!(
        card.state().public_key(Slot::CardAuthentication).unwrap(),
        public
    );
    assert_eq!(verify_status(&mut card), 0x63C2);
    // The correct PIN refills the counter (a write); then it does not write again.
    assert_eq!(verify(&mut card, b"123456"), 0x9000);
    let written = std::fs::metadata(&path).unwrap().modified().unwrap();
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(verify(&mut card, b"123456"), 0x9000);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.modified().unwrap(), written);
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&meta), inode);
    drop(card);
    let card = PivCard::open(&path, &options).unwrap();
    assert_eq!(card.state().pin_retries_left(), 3);
    // The file never holds the PIN in a way the Debug output would show.
    assert!(!format!("{card:?}").contains("123456"));
}

#[test]
fn a_corrupt_state_file_is_an_error_not_a_new_card() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    std::fs::write(&path, b"{ not json").unwrap();
    assert!(matches!(
        PivCard::open(&path, &SimOptions::default()),
        Err(SimError::State(_))
    ));
}

#[test]
fn an_unwritable_state_file_fails_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    let mut card = PivCard::open(&path, &SimOptions::default()).unwrap();
    // Replace the directory's contents with a directory named like the temp file's target: rename fails.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("x"), b"x").unwrap();
    assert_eq!(verify(&mut card, b"000000"), 0x6581);
}

#[test]
fn remove_on_sign_pulls_the_card() {
    let options = SimOptions {
        fault: Some(Fault::RemoveOnSign),
        ..SimOptions::default()
    };
    let mut card = PivCard::in_memory(&options).unwrap();
    let ok = card
        .transmit(&Command::new(0, 0xFD, 0, 0).with_le(256).to_bytes().unwrap())
        .unwrap();
    assert_eq!(ok, vec![5, 4, 3, 0x90, 0x00]);
    // The 9E signature that identifies the card at insertion is spared; a login signature is not.
    let spared = card
        .transmit(&sign_apdu(0x9E, &[1; 32]).to_bytes().unwrap())
        .unwrap();
    assert_eq!(&spared[spared.len() - 2..], &[0x90, 0x00]);
    assert!(!card.is_pulled());
    assert_eq!(verify(&mut card, b"123456"), 0x9000);
    let err = card
        .transmit(&sign_apdu(0x9A, &[1; 32]).to_bytes().unwrap())
        .unwrap_err();
    assert!(matches!(err, tessera::Error::DeviceRemoved));
    assert!(card.is_pulled());
    assert!(card.process(&[0, 0xFD, 0, 0]).is_empty());
}

#[test]
fn stall_on_sign_waits() {
    let options = SimOptions {
        fault: Some("stall-on-sign=150".parse().unwrap()),
        ..SimOptions::default()
    };
    let mut card = PivCard::in_memory(&options).unwrap();
    let start = std::time::Instant::now();
    sign_ok(&mut card, Slot::CardAuthentication, &[3; 32]);
    assert!(
        start.elapsed() < std::time::Duration::from_millis(150),
        "9E is spared"
    );
    assert_eq!(verify(&mut card, b"123456"), 0x9000);
    let start = std::time::Instant::now();
    sign_ok(&mut card, Slot::Authentication, &[3; 32]);
    assert!(start.elapsed() >= std::time::Duration::from_millis(150));
    assert!("explode".parse::<Fault>().is_err());
}

#[test]
fn garbage_never_panics() {
    let mut card = card();
    // Let some security state exist so deeper paths are reachable.
    assert_eq!(mgmt_auth(&mut card, &mgmt_key()), 0x9000);
    let interesting_ins = [
        0xA4, 0xCB, 0xDB, 0x20, 0x24, 0x2C, 0x87, 0x47, 0xFD, 0xF8, 0xC0,
    ];
    let mut rng = OsRng;
    for i in 0..20_000u32 {
        let len = (rng.next_u32() % 300) as usize;
        let mut apdu = vec![0u8; len];
        rng.fill_bytes(&mut apdu);
        // Half the time, make the header plausible so the PIV handlers see the garbage.
        if i % 2 == 0 && apdu.len() >= 4 {
            apdu[0] &= 0x10;
            apdu[1] = interesting_ins[(rng.next_u32() as usize) % interesting_ins.len()];
            if apdu.len() >= 5 {
                apdu[4] = (apdu.len() - 5).min(255) as u8;
                apdu.truncate(5 + usize::from(apdu[4]));
            }
        }
        let resp = card.process(&apdu);
        assert!(resp.len() >= 2, "{apdu:02X?} -> {resp:02X?}");
    }
    // Structured garbage inside valid templates.
    for _ in 0..5_000 {
        let mut inner = vec![0u8; (rng.next_u32() % 40) as usize];
        rng.fill_bytes(&mut inner);
        for ins in [0x87u8, 0x47, 0xDB, 0xCB] {
            let outer = match ins {
                0x47 => 0xAC,
                0x87 => 0x7C,
                _ => 0x5C,
            };
            let data = tlv::encode(outer, &inner).unwrap();
            let p2 = [0x9A, 0x9B, 0x9C, 0x9E, 0xFF][(rng.next_u32() % 5) as usize];
            let p1 = [0x03, 0x11, 0x3F, 0x00][(rng.next_u32() % 4) as usize];
            let resp = card.process(
                &Command::new(0, ins, p1, p2)
                    .with_data(data)
                    .to_bytes()
                    .unwrap(),
            );
            assert!(resp.len() >= 2);
        }
    }
}

#[test]
fn a_short_le_gets_that_many_bytes_and_the_rest_by_get_response() {
    let mut card = card();
    let (whole, sw) = get_data(&mut card, &[0x5F, 0xC1, 0x02]);
    assert_eq!(sw, 0x9000);
    let field = tlv::encode(0x5C, &[0x5F, 0xC1, 0x02]).unwrap();
    let (head, sw) = send(
        &mut card,
        Command::new(0, 0xCB, 0x3F, 0xFF)
            .with_data(field)
            .with_le(16),
    );
    assert_eq!(head.len(), 16);
    let rest = whole.len() - 16;
    assert_eq!(sw, 0x6100 | u16::try_from(rest).unwrap());
    let (tail, sw) = send(&mut card, Command::new(0, 0xC0, 0, 0).with_le(rest));
    assert_eq!(sw, 0x9000);
    assert_eq!([head, tail].concat(), whole);
    // Any other command discards what was not fetched.
    let field = tlv::encode(0x5C, &[0x5F, 0xC1, 0x02]).unwrap();
    send(
        &mut card,
        Command::new(0, 0xCB, 0x3F, 0xFF)
            .with_data(field)
            .with_le(16),
    );
    send(&mut card, Command::new(0, 0xFD, 0, 0).with_le(256));
    assert_eq!(send(&mut card, Command::new(0, 0xC0, 0, 0)).1, 0x6985);
}

/// The core library's PIV client against the card, in-process through `CardTransport`.
#[test]
fn tessera_piv_client_interoperates() {
    use tessera::piv as client;
    let mut card = card();
    let guid = card.state().guid().unwrap();
    let cert9a = card.state().certificate(Slot::Authentication).unwrap();
    let pub9a = card.state().public_key(Slot::Authentication).unwrap();
    let pub9e = card.state().public_key(Slot::CardAuthentication).unwrap();
    let mut piv = client::Piv::new(&mut card);
    let props = piv.select().unwrap();
    assert!(props.algorithms.contains(&ALG_ECC_P256));
    assert_eq!(piv.chuid().unwrap().unwrap().guid, Some(guid));
    assert_eq!(
        piv.certificate(client::Slot::Authentication).unwrap(),
        Some(cert9a)
    );
    assert_eq!(piv.certificate(client::Slot::Signature).unwrap(), None);
    let digest = [0x33u8; 32];
    let der = piv
        .sign_p256(client::Slot::CardAuthentication, &digest)
        .unwrap();
    VerifyingKey::from(pub9e)
        .verify_prehash(&digest, &Signature::from_der(&der).unwrap())
        .unwrap();
    assert!(piv
        .sign_p256(client::Slot::Authentication, &digest)
        .is_err());
    assert_eq!(piv.pin_status().unwrap(), client::PinStatus::Retries(3));
    piv.verify_pin(&client::Pin::new("123456").unwrap())
        .unwrap();
    assert_eq!(piv.pin_status().unwrap(), client::PinStatus::Verified);
    let der = piv
        .sign_p256(client::Slot::Authentication, &digest)
        .unwrap();
    VerifyingKey::from(pub9a)
        .verify_prehash(&digest, &Signature::from_der(&der).unwrap())
        .unwrap();
}

fn select(card: &mut PivCard, aid: &[u8]) -> (Vec<u8>, u16) {
    send(
        card,
        Command::new(0, 0xA4, 0x04, 0).with_data(aid).with_le(256),
    )
}

/// SP 800-73-4 Part 1 §2.2 and Part 2 §3.1.1: the full AID or the right-truncated AID without the
/// version, nothing shorter (the RID alone is what Tessera once sent and strict cards refuse).
#[test]
fn select_takes_the_full_or_the_truncated_aid_and_nothing_shorter() {
    let mut card = card();
    for len in [9, 11] {
        let (data, sw) = select(&mut card, &PIV_AID[..len]);
        assert_eq!(sw, 0x9000, "{len}-byte AID");
        tlv::expect_one(&data, 0x61).unwrap();
    }
    for len in [1, 4, 5, 6, 8, 10] {
        assert_eq!(
            select(&mut card, &PIV_AID[..len]).1,
            0x6A82,
            "{len}-byte AID"
        );
    }
    // A longer AID, a wrong version, no AID: not the PIV application either.
    let mut longer = PIV_AID.to_vec();
    longer.push(0x00);
    let mut other_version = PIV_AID;
    other_version[10] = 0x01;
    for aid in [&longer[..], &other_version[..], &[]] {
        assert_eq!(select(&mut card, aid).1, 0x6A82, "{aid:02X?}");
    }
    // P2 = 00 only (first or only occurrence, FCI requested).
    let (_, sw) = send(
        &mut card,
        Command::new(0, 0xA4, 0x04, 0x0C)
            .with_data(PIV_AID)
            .with_le(256),
    );
    assert_eq!(sw, 0x6A86);
    // The RID alone deselects PIV like any other AID: the PIN is no longer verified.
    assert_eq!(select(&mut card, &PIV_AID).1, 0x9000);
    assert_eq!(verify(&mut card, b"123456"), 0x9000);
    assert_eq!(select(&mut card, &PIV_AID[..5]).1, 0x6A82);
    assert_eq!(verify_status(&mut card), 0x63C3);
}

/// The YubiKey profile takes any right truncation down to the RID, as yubico-piv-tool needs.
#[test]
fn the_yubikey_profile_also_selects_with_the_rid() {
    let options = SimOptions {
        profile: CardProfile::YubiKey,
        ..SimOptions::default()
    };
    let mut card = PivCard::in_memory(&options).unwrap();
    for len in 5..=11 {
        assert_eq!(
            select(&mut card, &PIV_AID[..len]).1,
            0x9000,
            "{len}-byte AID"
        );
    }
    assert_eq!(select(&mut card, &PIV_AID[..4]).1, 0x6A82);
}

/// ISO/IEC 7816-4 §5.1: no Le means Ne = 0, so the data waits for GET RESPONSE behind 61xx.
#[test]
fn a_command_without_le_gets_61xx_and_its_data_by_get_response() {
    let mut card = card();
    let (template, sw) = select(&mut card, &PIV_AID);
    assert_eq!(sw, 0x9000);
    let (data, sw) = send(&mut card, Command::new(0, 0xA4, 0x04, 0).with_data(PIV_AID));
    assert!(data.is_empty());
    assert_eq!(sw, 0x6100 | u16::try_from(template.len()).unwrap());
    let (fetched, sw) = send(
        &mut card,
        Command::new(0, 0xC0, 0, 0).with_le(template.len()),
    );
    assert_eq!((fetched, sw), (template, 0x9000));
    // Commands without response data still answer 9000.
    assert_eq!(verify(&mut card, b"123456"), 0x9000);
    // 256 bytes or more: 6100.
    let (whole, _) = get_data(&mut card, &[0x5F, 0xC1, 0x05]);
    assert!(whole.len() > 256);
    let field = tlv::encode(0x5C, &[0x5F, 0xC1, 0x05]).unwrap();
    let (data, sw) = send(
        &mut card,
        Command::new(0, 0xCB, 0x3F, 0xFF).with_data(field),
    );
    assert!(data.is_empty());
    assert_eq!(sw, 0x6100);

    // The YubiKey profile answers with up to 256 bytes at once.
    let options = SimOptions {
        profile: CardProfile::YubiKey,
        ..SimOptions::default()
    };
    let mut yubikey = PivCard::in_memory(&options).unwrap();
    let (data, sw) = send(
        &mut yubikey,
        Command::new(0, 0xA4, 0x04, 0).with_data(PIV_AID),
    );
    assert_eq!(sw, 0x9000);
    tlv::expect_one(&data, 0x61).unwrap();
}

/// A reset (vpcd reset, power off or on) clears the security status: the PIN is no longer
/// verified (SP 800-73-4 Part 2 §3.2.1), the management key no longer authenticated, and data
/// waiting for GET RESPONSE is gone (ISO/IEC 7816-4 §5.4, security status since the answer to reset).
#[test]
fn reset_clears_the_security_status() {
    let mut card = card();
    let hash = [3u8; 32];
    assert_eq!(verify(&mut card, b"123456"), 0x9000);
    assert_eq!(mgmt_auth(&mut card, &mgmt_key()), 0x9000);
    sign_ok(&mut card, Slot::Authentication, &hash);
    let field = tlv::encode(0x5C, &[0x5F, 0xC1, 0x02]).unwrap();
    let (_, sw) = send(
        &mut card,
        Command::new(0, 0xCB, 0x3F, 0xFF)
            .with_data(field)
            .with_le(16),
    );
    assert_eq!(sw & 0xFF00, 0x6100);
    card.reset();
    assert_eq!(
        send(&mut card, Command::new(0, 0xC0, 0, 0).with_le(256)).1,
        0x6985
    );
    assert_eq!(verify_status(&mut card), 0x63C3);
    assert_eq!(send(&mut card, sign_apdu(0x9A, &hash)).1, 0x6982);
    let gen = Command::new(0, 0x47, 0, 0x9A)
        .with_data([0xAC, 0x03, 0x80, 0x01, 0x11])
        .with_le(256);
    assert_eq!(send(&mut card, gen).1, 0x6982);
    // The counter, durable state, is not touched by a reset.
    assert_eq!(card.state().pin_retries_left(), 3);
}
