#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aes::cipher::{BlockEncrypt, KeyInit};
use coset::{KeyType, RegisteredLabelWithPrivate};
use zeroize::Zeroizing;

use super::*;

/// The authenticator side of a key agreement, computed here without `PinProtocol`: its static
/// key, Z = ECDH(its key, the platform's), and the shared secret by the formulas of §6.5.6-7.
struct AuthenticatorSide {
    secret: p256::SecretKey,
}

impl AuthenticatorSide {
    fn new() -> Self {
        AuthenticatorSide {
            secret: p256::SecretKey::from_slice(&[0x5A; 32]).unwrap(),
        }
    }

    fn public(&self) -> p256::PublicKey {
        self.secret.public_key()
    }

    fn z(&self, platform: &CoseKey) -> Vec<u8> {
        let peer = authenticator_key(platform).unwrap();
        let shared = p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), peer.as_affine());
        shared.raw_secret_bytes().to_vec()
    }

    /// §6.5.6: SHA-256(Z). §6.5.7: HKDF-SHA-256 spelled out with HMAC (RFC 5869 §2.2-2.3: PRK
    /// = HMAC(salt, IKM); T(1) = HMAC(PRK, info ‖ 0x01), which is the whole of L = 32).
    fn shared(&self, protocol: PinProtocol, platform: &CoseKey) -> Vec<u8> {
        let z = self.z(platform);
        match protocol {
            PinProtocol::One => Sha256::digest(&z).to_vec(),
            PinProtocol::Two => {
                let prk = hmac(&[0u8; 32], &z);
                let mut out = hmac(&prk, b"CTAP2 HMAC key\x01");
                out.extend(hmac(&prk, b"CTAP2 AES key\x01"));
                out
            }
        }
    }
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn aes_block(key: &[u8], block: [u8; 16]) -> [u8; 16] {
    let cipher = aes::Aes256::new_from_slice(key).unwrap();
    let mut b = block.into();
    cipher.encrypt_block(&mut b);
    b.into()
}

fn xor(a: &[u8], b: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

fn secret(s: &str) -> Secret {
    Secret::new(Zeroizing::new(s.into()))
}

#[test]
fn both_sides_agree_on_the_shared_secret() {
    let auth = AuthenticatorSide::new();
    for protocol in [PinProtocol::One, PinProtocol::Two] {
        let (platform, shared) = protocol.encapsulate(&auth.public()).unwrap();
        assert_eq!(
            shared.as_bytes(),
            auth.shared(protocol, &platform).as_slice()
        );
        assert_eq!(
            shared.as_bytes().len(),
            if protocol == PinProtocol::One { 32 } else { 64 }
        );
        // The platform key: EC2, P-256, alg -25 (§6.5.6 getPublicKey).
        assert_eq!(platform.kty, KeyType::Assigned(iana::KeyType::EC2));
        assert_eq!(
            platform.alg,
            Some(RegisteredLabelWithPrivate::Assigned(
                iana::Algorithm::ECDH_ES_HKDF_256
            ))
        );
    }
}

#[test]
fn fresh_keys_every_time() {
    let auth = AuthenticatorSide::new();
    let (a, sa) = PinProtocol::Two.encapsulate(&auth.public()).unwrap();
    let (b, sb) = PinProtocol::Two.encapsulate(&auth.public()).unwrap();
    assert_ne!(a, b);
    assert_ne!(sa.as_bytes(), sb.as_bytes());
}

#[test]
fn protocol_one_encryption_is_cbc_with_a_zero_iv() {
    let auth = AuthenticatorSide::new();
    let (platform, shared) = PinProtocol::One.encapsulate(&auth.public()).unwrap();
    let key = auth.shared(PinProtocol::One, &platform);
    let plain: Vec<u8> = (0u8..32).collect();
    let ct = PinProtocol::One.encrypt(&shared, &plain).unwrap();
    assert_eq!(ct.len(), 32);
    let c1 = aes_block(&key, xor(&plain[..16], &[0; 16]));
    let c2 = aes_block(&key, xor(&plain[16..], &c1));
    assert_eq!(&ct[..16], &c1);
    assert_eq!(&ct[16..], &c2);
    assert_eq!(
        PinProtocol::One.decrypt(&shared, &ct).unwrap().as_slice(),
        &plain
    );
}

#[test]
fn protocol_two_encryption_has_a_random_iv_and_the_aes_half() {
    let auth = AuthenticatorSide::new();
    let (platform, shared) = PinProtocol::Two.encapsulate(&auth.public()).unwrap();
    let key = auth.shared(PinProtocol::Two, &platform);
    let plain = [0x77u8; 16];
    let ct = PinProtocol::Two.encrypt(&shared, &plain).unwrap();
    assert_eq!(ct.len(), 32);
    let (iv, body) = ct.split_at(16);
    assert_eq!(body, aes_block(&key[32..], xor(&plain, iv)));
    let again = PinProtocol::Two.encrypt(&shared, &plain).unwrap();
    assert_ne!(ct, again, "a fresh IV each time");
    assert_eq!(
        PinProtocol::Two
            .decrypt(&shared, &again)
            .unwrap()
            .as_slice(),
        &plain
    );
}

#[test]
fn ciphertext_lengths_are_checked() {
    let auth = AuthenticatorSide::new();
    let (_, s1) = PinProtocol::One.encapsulate(&auth.public()).unwrap();
    let (_, s2) = PinProtocol::Two.encapsulate(&auth.public()).unwrap();
    assert!(PinProtocol::One.decrypt(&s1, &[]).is_err());
    assert!(PinProtocol::One.decrypt(&s1, &[0; 17]).is_err());
    assert!(PinProtocol::Two.decrypt(&s2, &[0; 15]).is_err());
    assert!(PinProtocol::Two.decrypt(&s2, &[0; 16]).is_err());
    assert!(PinProtocol::Two.decrypt(&s2, &[0; 33]).is_err());
    assert!(PinProtocol::One.encrypt(&s1, &[0; 15]).is_err());
    assert!(PinProtocol::Two.encrypt(&s2, &[]).is_err());
}

/// RFC 4231 §4.3 (test case 2): HMAC-SHA-256 with key "Jefe".
#[test]
fn authenticate_is_hmac_sha256_truncated_for_protocol_one() {
    let full = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
    let msg = b"what do ya want for nothing?";
    assert_eq!(
        hex::encode(PinProtocol::Two.authenticate(b"Jefe", msg)),
        full
    );
    assert_eq!(
        hex::encode(PinProtocol::One.authenticate(b"Jefe", msg)),
        &full[..32]
    );
    // Protocol 2 with a 64-byte shared secret uses its first 32 bytes (the HMAC key).
    let key: Vec<u8> = (0u8..64).collect();
    assert_eq!(
        PinProtocol::Two.authenticate(&key, msg),
        hmac(&key[..32], msg)
    );
    assert_eq!(
        PinProtocol::One.authenticate(&key[..32], msg),
        hmac(&key[..32], msg)[..16].to_vec()
    );
}

#[test]
fn pin_hash_enc_is_the_left_half_of_sha256_encrypted() {
    let auth = AuthenticatorSide::new();
    for protocol in [PinProtocol::One, PinProtocol::Two] {
        let (platform, shared) = protocol.encapsulate(&auth.public()).unwrap();
        let enc = protocol.pin_hash_enc(&shared, &secret("123456")).unwrap();
        // Decrypted by the authenticator side: SHA-256("123456") begins 8d969eef….
        let key = auth.shared(protocol, &platform);
        let plain = match protocol {
            PinProtocol::One => {
                assert_eq!(enc.len(), 16);
                enc.clone()
            }
            PinProtocol::Two => {
                assert_eq!(enc.len(), 32);
                enc[16..].to_vec()
            }
        };
        let expected = hex::decode("8d969eef6ecad3c29a3a629280e686cf").unwrap();
        let iv = if protocol == PinProtocol::One {
            [0u8; 16]
        } else {
            enc[..16].try_into().unwrap()
        };
        let aes_key = if protocol == PinProtocol::One {
            &key[..]
        } else {
            &key[32..]
        };
        assert_eq!(plain, aes_block(aes_key, xor(&expected, &iv)));
    }
}

#[test]
fn new_pin_enc_pads_to_64_bytes() {
    let auth = AuthenticatorSide::new();
    let (_, s1) = PinProtocol::One.encapsulate(&auth.public()).unwrap();
    let enc = PinProtocol::One.new_pin_enc(&s1, &secret("abcd")).unwrap();
    assert_eq!(enc.len(), 64);
    let plain = PinProtocol::One.decrypt(&s1, &enc).unwrap();
    assert_eq!(&plain[..4], b"abcd");
    assert!(plain[4..].iter().all(|b| *b == 0));
    let (_, s2) = PinProtocol::Two.encapsulate(&auth.public()).unwrap();
    assert_eq!(
        PinProtocol::Two
            .new_pin_enc(&s2, &secret(&"x".repeat(63)))
            .unwrap()
            .len(),
        80
    );
}

#[test]
fn pin_rules() {
    assert!(check_pin(&secret("1234")).is_ok());
    assert!(check_pin(&secret("ääää")).is_ok(), "4 code points, 8 bytes");
    assert!(check_pin(&secret(&"x".repeat(63))).is_ok());
    for bad in ["", "123", &"x".repeat(64), &"ä".repeat(32)] {
        assert!(
            matches!(check_pin(&secret(bad)), Err(Error::PinFormat(_))),
            "{bad:?}"
        );
    }
    let auth = AuthenticatorSide::new();
    let (_, s) = PinProtocol::Two.encapsulate(&auth.public()).unwrap();
    assert!(PinProtocol::Two.pin_hash_enc(&s, &secret("12")).is_err());
    assert!(PinProtocol::Two
        .new_pin_enc(&s, &secret(&"x".repeat(64)))
        .is_err());
}

#[test]
fn the_token_decrypts_and_authenticates() {
    let auth = AuthenticatorSide::new();
    let token = [0x7Eu8; 32];
    let cdh = [0x01u8; 32];
    for protocol in [PinProtocol::One, PinProtocol::Two] {
        let (platform, shared) = protocol.encapsulate(&auth.public()).unwrap();
        // The authenticator encrypts its token with its own view of the secret.
        let key = auth.shared(protocol, &platform);
        let enc = match protocol {
            PinProtocol::One => {
                let c1 = aes_block(&key, token[..16].try_into().unwrap());
                let c2 = aes_block(&key, xor(&token[16..], &c1));
                [c1, c2].concat()
            }
            PinProtocol::Two => {
                let iv = [0x09u8; 16];
                let c1 = aes_block(&key[32..], xor(&token[..16], &iv));
                let c2 = aes_block(&key[32..], xor(&token[16..], &c1));
                [iv, c1, c2].concat()
            }
        };
        let t = protocol.decrypt_token(&shared, &enc).unwrap();
        assert_eq!(t.protocol(), protocol);
        let expected = hmac(&token, &cdh);
        let expected = match protocol {
            PinProtocol::One => expected[..16].to_vec(),
            PinProtocol::Two => expected,
        };
        assert_eq!(t.authenticate(&cdh), expected);
        assert_eq!(
            format!("{t:?}"),
            format!("PinUvAuthToken({protocol:?}, ..)")
        );
        // A token of 48 bytes is refused.
        let long = protocol.encrypt(&shared, &[0u8; 48]).unwrap();
        assert!(protocol.decrypt_token(&shared, &long).is_err());
    }
    // Protocol 1 also allows 16-byte tokens.
    let (_, s1) = PinProtocol::One.encapsulate(&auth.public()).unwrap();
    let enc = PinProtocol::One.encrypt(&s1, &[1u8; 16]).unwrap();
    assert!(PinProtocol::One.decrypt_token(&s1, &enc).is_ok());
}

#[test]
fn choosing_a_protocol() {
    assert_eq!(PinProtocol::choose(&[2, 1]), Some(PinProtocol::Two));
    assert_eq!(PinProtocol::choose(&[1, 2]), Some(PinProtocol::Two));
    assert_eq!(PinProtocol::choose(&[1]), Some(PinProtocol::One));
    assert_eq!(PinProtocol::choose(&[3]), None);
    assert_eq!(PinProtocol::from_number(2), Some(PinProtocol::Two));
    assert_eq!(PinProtocol::One.number(), 1);
    assert_eq!(PinProtocol::from_number(0), None);
}

#[test]
fn secrets_do_not_print() {
    let auth = AuthenticatorSide::new();
    let (_, s) = PinProtocol::One.encapsulate(&auth.public()).unwrap();
    assert_eq!(format!("{s:?}"), "SharedSecret(..)");
}
