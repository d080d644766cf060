#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::symlink;

use p256::elliptic_curve::sec1::ToEncodedPoint;
use tempfile::TempDir;

use super::*;
use crate::token::{new_jti, Confirmation};

const T0: u64 = 1_700_000_000;

fn claims() -> Claims {
    Claims {
        iss: "tesserad".into(),
        sub: "alice".into(),
        aud: "tessera".into(),
        iat: T0,
        nbf: T0,
        exp: T0 + 900,
        jti: new_jti(),
        amr: vec!["hwk".into(), "sc".into(), "pin".into()],
        cnf: Confirmation {
            jkt: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I".into(),
        },
        sid: "ds-1".into(),
        enr: "en-1".into(),
        lsid: None,
        seat: None,
    }
}

fn ring() -> (TempDir, KeyRing) {
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::load_or_create(dir.path(), T0).unwrap();
    (dir, ring)
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap()
}

fn parts(token: &str) -> (String, String, String) {
    let v: Vec<&str> = token.split('.').collect();
    assert_eq!(v.len(), 3);
    (v[0].into(), v[1].into(), v[2].into())
}

fn assert_invalid(ring: &KeyRing, token: &str) {
    match ring.verify(token) {
        Err(Error::TokenInvalid) => {}
        other => panic!("expected TokenInvalid for {token:?}, got {other:?}"),
    }
}

/// Signs arbitrary header and payload JSON with `key`, as a forger holding that key would.
fn forge(key: &SigningKey, header: &serde_json::Value, payload: &serde_json::Value) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(payload.to_string()));
    let sig =
        jsonwebtoken::crypto::sign(input.as_bytes(), &key.encoding, Algorithm::ES256).unwrap();
    // Normalise to low-S so only the property under test differs from a valid token.
    let sig = decode_signature(&sig).unwrap();
    let sig = sig.normalize_s().unwrap_or(sig);
    format!("{input}.{}", b64(sig.to_bytes()))
}

fn our_header(ring: &KeyRing) -> serde_json::Value {
    serde_json::json!({"typ": "JWT", "alg": "ES256", "kid": ring.active().kid()})
}

#[test]
fn sign_verify_round_trip() {
    let (_dir, ring) = ring();
    let c = claims();
    let token = ring.sign(&c).unwrap();
    let (got, kid) = ring.verify(&token).unwrap();
    assert_eq!(got, c);
    assert_eq!(kid, ring.active().kid());

    let (h, _, s) = parts(&token);
    let header: serde_json::Value = serde_json::from_slice(&unb64(&h)).unwrap();
    assert_eq!(header, our_header(&ring));
    // Low-S only, always (RFC 7518 §3.4 r || s, 64 bytes).
    let sig = Signature::from_slice(&unb64(&s)).unwrap();
    assert!(sig.normalize_s().is_none());
}

#[test]
fn every_signature_is_low_s() {
    let (_dir, ring) = ring();
    // aws-lc produces high S half of the time; 32 tokens all low-S means sign normalises.
    for _ in 0..32 {
        let token = ring.sign(&claims()).unwrap();
        let (_, _, s) = parts(&token);
        assert!(decode_signature(&s).unwrap().normalize_s().is_none());
        ring.verify(&token).unwrap();
    }
}

#[test]
fn verify_does_not_check_time_or_audience() {
    let (_dir, ring) = ring();
    let mut c = claims();
    c.nbf = u64::MAX;
    c.exp = 1;
    c.aud = "someone-else".into();
    let token = ring.sign(&c).unwrap();
    assert_eq!(ring.verify(&token).unwrap().0, c);
}

#[test]
fn tampered_payload_header_or_signature_is_invalid() {
    let (_dir, ring) = ring();
    let token = ring.sign(&claims()).unwrap();
    let (h, p, s) = parts(&token);

    let mut c = claims();
    c.sub = "root".into();
    let payload = b64(serde_json::to_vec(&c).unwrap());
    assert_invalid(&ring, &format!("{h}.{payload}.{s}"));

    let mut header: serde_json::Value = serde_json::from_slice(&unb64(&h)).unwrap();
    header["typ"] = "JWT ".into();
    assert_invalid(&ring, &format!("{}.{p}.{s}", b64(header.to_string())));
    // Same members, different serialisation: the signature covers the bytes, not the meaning.
    let reordered = format!(
        r#"{{"kid":"{}","alg":"ES256","typ":"JWT"}}"#,
        ring.active().kid()
    );
    assert_invalid(&ring, &format!("{}.{p}.{s}", b64(reordered)));

    let mut sig = unb64(&s);
    for i in [0, 31, 32, 63] {
        sig[i] ^= 0x01;
        assert_invalid(&ring, &format!("{h}.{p}.{}", b64(&sig)));
        sig[i] ^= 0x01;
    }
    assert_invalid(&ring, &format!("{h}.{p}.{}", b64([0u8; 64])));
    assert_invalid(&ring, &format!("{h}.{p}."));
    // Sanity: the untouched pieces still verify, so the failures above are the tampering's.
    ring.verify(&format!("{h}.{p}.{}", b64(&sig))).unwrap();
}

#[test]
fn high_s_twin_of_a_valid_signature_is_invalid() {
    let (_dir, ring) = ring();
    let token = ring.sign(&claims()).unwrap();
    let (h, p, s) = parts(&token);
    let low = Signature::from_slice(&unb64(&s)).unwrap();
    let (r, s_scalar) = low.split_scalars();
    let high = Signature::from_scalars(r, -*s_scalar).unwrap();
    assert!(high.normalize_s().is_some());
    // The twin is a mathematically valid ECDSA signature over the same input...
    let vk = p256::ecdsa::VerifyingKey::from(ring.active().public_key());
    let input = format!("{h}.{p}");
    use p256::ecdsa::signature::Verifier as _;
    vk.verify(input.as_bytes(), &high).unwrap();
    // ...but not a token text we issued.
    assert_invalid(&ring, &format!("{input}.{}", b64(high.to_bytes())));
}

#[test]
fn token_from_another_ring_is_invalid() {
    let (_dir, ring) = ring();
    let (_dir2, other) = self::ring();
    assert_invalid(&ring, &other.sign(&claims()).unwrap());
    // The other ring's key claiming to be ours.
    let payload = serde_json::to_value(claims()).unwrap();
    assert_invalid(&ring, &forge(other.active(), &our_header(&ring), &payload));
    // Control: the same forgery with our key verifies.
    ring.verify(&forge(ring.active(), &our_header(&ring), &payload))
        .unwrap();
}

#[test]
fn alg_none_is_invalid() {
    let (_dir, ring) = ring();
    let payload = b64(serde_json::to_vec(&claims()).unwrap());
    for alg in ["none", "None", "NONE"] {
        let header = serde_json::json!({"typ": "JWT", "alg": alg, "kid": ring.active().kid()});
        let input = format!("{}.{payload}", b64(header.to_string()));
        assert_invalid(&ring, &format!("{input}."));
        assert_invalid(&ring, &input);
    }
}

#[test]
fn hs256_with_the_public_key_as_secret_is_invalid() {
    let (_dir, ring) = ring();
    let public = ring.active().public_key();
    let jwks = ring.jwks_json();
    let (x, _) = ec_coordinates_b64(public);
    let secrets: Vec<Vec<u8>> = vec![
        public.to_encoded_point(false).as_bytes().to_vec(),
        public.to_encoded_point(true).as_bytes().to_vec(),
        jwks.into_bytes(),
        x.into_bytes(),
    ];
    for secret in secrets {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(ring.active().kid().to_string());
        let key = EncodingKey::from_secret(&secret).unwrap();
        let token = jsonwebtoken::encode(&header, &claims(), &key).unwrap();
        assert_invalid(&ring, &token);
    }
}

#[test]
fn unknown_or_missing_kid_is_invalid() {
    let (_dir, ring) = ring();
    let payload = serde_json::to_value(claims()).unwrap();
    let mut header = our_header(&ring);
    header["kid"] = "not-a-key".into();
    assert_invalid(&ring, &forge(ring.active(), &header, &payload));
    header.as_object_mut().unwrap().remove("kid");
    assert_invalid(&ring, &forge(ring.active(), &header, &payload));
    header["kid"] = serde_json::json!(1);
    assert_invalid(&ring, &forge(ring.active(), &header, &payload));
}

#[test]
fn header_with_extra_or_wrong_members_is_invalid() {
    let (_dir, ring) = ring();
    let payload = serde_json::to_value(claims()).unwrap();
    let extras = [
        ("crit", serde_json::json!(["b64"])),
        ("b64", serde_json::json!(false)),
        ("jku", serde_json::json!("https://evil.invalid/jwks")),
        ("jwk", serde_json::json!({"kty": "EC"})),
        ("cty", serde_json::json!("JWT")),
    ];
    for (name, value) in extras {
        let mut header = our_header(&ring);
        header[name] = value;
        assert_invalid(&ring, &forge(ring.active(), &header, &payload));
    }
    for (name, value) in [("typ", "at+jwt"), ("alg", "ES384"), ("alg", "es256")] {
        let mut header = our_header(&ring);
        header[name] = value.into();
        assert_invalid(&ring, &forge(ring.active(), &header, &payload));
    }
    let mut header = our_header(&ring);
    header.as_object_mut().unwrap().remove("typ");
    assert_invalid(&ring, &forge(ring.active(), &header, &payload));
}

#[test]
fn correctly_signed_but_malformed_claims_are_invalid() {
    let (_dir, ring) = ring();
    let header = our_header(&ring);
    let mut extra = serde_json::to_value(claims()).unwrap();
    extra["admin"] = true.into();
    assert_invalid(&ring, &forge(ring.active(), &header, &extra));
    let mut missing = serde_json::to_value(claims()).unwrap();
    missing.as_object_mut().unwrap().remove("cnf");
    assert_invalid(&ring, &forge(ring.active(), &header, &missing));
    let mut wrong_type = serde_json::to_value(claims()).unwrap();
    wrong_type["exp"] = "soon".into();
    assert_invalid(&ring, &forge(ring.active(), &header, &wrong_type));
    assert_invalid(
        &ring,
        &forge(ring.active(), &header, &serde_json::json!([])),
    );
    // Control: the well-formed claims forged the same way verify.
    let good = serde_json::to_value(claims()).unwrap();
    ring.verify(&forge(ring.active(), &header, &good)).unwrap();
}

#[test]
fn truncated_tokens_are_invalid() {
    let (_dir, ring) = ring();
    let token = ring.sign(&claims()).unwrap();
    for end in 0..token.len() {
        assert_invalid(&ring, &token[..end]);
    }
    assert_invalid(&ring, &token[1..]);
}

#[test]
fn bad_base64_and_bad_shapes_are_invalid() {
    let (_dir, ring) = ring();
    let token = ring.sign(&claims()).unwrap();
    let (h, p, s) = parts(&token);
    let padded_sig = format!("{s}==");
    let std_alphabet = s.replace('-', "+").replace('_', "/");
    let cases = [
        String::new(),
        ".".into(),
        "..".into(),
        "...".into(),
        "!!!.###.$$$".into(),
        format!("{h}.{p}"),
        format!("{h}.{p}.{s}.{s}"),
        format!("{h}.{p}.{s}."),
        format!(".{h}.{p}.{s}"),
        format!("{h}=.{p}.{s}"),
        format!("{h}.{p}.{padded_sig}"),
        format!("{h} .{p}.{s}"),
        format!("{h}.{p}.{s}\n"),
        format!("{h}.{p}.{s}A"),
        format!("{h}.{p}.{}", &s[..s.len() - 1]),
        format!("{h}.{p}.{}", b64([0xffu8; 64])),
        format!("{h}.{p}.{}", b64([0u8; 65])),
        format!("{h}.{p}.{}", b64("x".repeat(10_000))),
        format!("{h}.{p}.{h}"),
    ];
    for case in &cases {
        assert_invalid(&ring, case);
    }
    if std_alphabet != s {
        assert_invalid(&ring, &format!("{h}.{p}.{std_alphabet}"));
    }
    // Non-canonical base64url: same bytes but nonzero unused trailing bits.
    let last = s.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let pos = alphabet.find(last).unwrap();
    let bumped = alphabet.chars().nth(pos ^ 1).unwrap();
    assert_invalid(&ring, &format!("{h}.{p}.{}{bumped}", &s[..s.len() - 1]));
}

#[test]
fn huge_input_is_invalid() {
    let (_dir, ring) = ring();
    let token = ring.sign(&claims()).unwrap();
    let (h, _, s) = parts(&token);
    let mut c = serde_json::to_value(claims()).unwrap();
    c["sub"] = "a".repeat(MAX_TOKEN_LEN).into();
    assert_invalid(&ring, &forge(ring.active(), &our_header(&ring), &c));
    assert_invalid(&ring, &format!("{h}.{}.{s}", "A".repeat(4 << 20)));
    assert_invalid(&ring, &".".repeat(1 << 20));
    assert_invalid(&ring, &"a".repeat(1 << 20));
}

#[test]
fn jwks_lists_every_key_and_rebuilds_them() {
    let (dir, mut ring) = ring();
    ring.rotate(dir.path(), T0 + 10).unwrap();
    let jwks: serde_json::Value = serde_json::from_str(&ring.jwks_json()).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let ring_keys = [ring.active(), &ring.previous()[0]];
    for (jwk, key) in keys.iter().zip(ring_keys) {
        assert_eq!(jwk.as_object().unwrap().len(), 7);
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(jwk["kid"], key.kid());
        let x = unb64(jwk["x"].as_str().unwrap());
        let y = unb64(jwk["y"].as_str().unwrap());
        assert_eq!((x.len(), y.len()), (32, 32));
        let sec1 = [&[0x04][..], &x, &y].concat();
        let rebuilt = p256::PublicKey::from_sec1_bytes(&sec1).unwrap();
        assert_eq!(&rebuilt, key.public_key());
        assert_eq!(jwk_thumbprint(&rebuilt), key.kid());
    }
    // Interoperability: a generic JOSE library reads the set and verifies our token with it.
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&ring.jwks_json()).unwrap();
    let token = ring.sign(&claims()).unwrap();
    let jwk = set.find(ring.active().kid()).unwrap();
    let key = DecodingKey::from_jwk(jwk).unwrap();
    jsonwebtoken::decode::<Claims>(token.as_str(), &key, &validation()).unwrap();
}

fn key_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join(KEYS_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn key_files_are_owner_only() {
    let (dir, ring) = ring();
    assert_eq!(mode(&dir.path().join(KEYS_DIR)), 0o700);
    let files = key_files(dir.path());
    assert_eq!(
        files,
        vec![key_path(&dir.path().join(KEYS_DIR), ring.active().kid())]
    );
    assert_eq!(mode(&files[0]), 0o600);
    // The file is PKCS#8 DER of the ring's key.
    let secret = p256::SecretKey::from_pkcs8_der(&fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(&secret.public_key(), ring.active().public_key());
    assert_eq!(ring.active().created(), T0);
}

#[test]
fn group_or_world_accessible_key_file_is_refused() {
    let (dir, ring) = ring();
    let file = key_path(&dir.path().join(KEYS_DIR), ring.active().kid());
    for bad in [0o644, 0o640, 0o604, 0o620, 0o602] {
        fs::set_permissions(&file, fs::Permissions::from_mode(bad)).unwrap();
        match KeyRing::load_or_create(dir.path(), T0) {
            Err(Error::Config(msg)) => {
                assert!(msg.contains(&file.display().to_string()), "{msg}");
            }
            other => panic!("mode {bad:o} accepted: {other:?}"),
        }
    }
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    KeyRing::load_or_create(dir.path(), T0).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o400)).unwrap();
    KeyRing::load_or_create(dir.path(), T0).unwrap();
}

#[test]
fn group_or_world_accessible_key_directory_is_refused() {
    let (dir, _ring) = ring();
    let keys = dir.path().join(KEYS_DIR);
    fs::set_permissions(&keys, fs::Permissions::from_mode(0o755)).unwrap();
    match KeyRing::load_or_create(dir.path(), T0) {
        Err(Error::Config(msg)) => assert!(msg.contains(&keys.display().to_string())),
        other => panic!("0755 key dir accepted: {other:?}"),
    }
}

#[test]
fn non_key_content_is_refused() {
    // RFC 8410 §10.3: a valid PKCS#8 key, but Ed25519, not P-256.
    let ed25519 = base64::engine::general_purpose::STANDARD
        .decode("MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC")
        .unwrap();
    let contents: [&[u8]; 4] = [b"", b"not a key", &ed25519, &[0u8; 2048]];
    for content in contents {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join(KEYS_DIR);
        DirBuilder::new().mode(0o700).create(&keys).unwrap();
        let file = keys.join("abc.p8");
        write_key_file(&file, content, T0).unwrap();
        match KeyRing::load_or_create(dir.path(), T0) {
            Err(Error::Config(msg)) => {
                assert!(msg.contains("abc.p8"), "{msg}");
                assert!(!msg.contains("configuration error"), "nested: {msg}");
            }
            other => panic!("accepted {content:?}: {other:?}"),
        }
    }
}

#[test]
fn key_file_under_the_wrong_name_is_refused() {
    let (dir, ring) = ring();
    let keys = dir.path().join(KEYS_DIR);
    let renamed = keys.join("someone-else.p8");
    fs::rename(key_path(&keys, ring.active().kid()), &renamed).unwrap();
    match KeyRing::load_or_create(dir.path(), T0) {
        Err(Error::Config(msg)) => assert!(msg.contains("someone-else.p8"), "{msg}"),
        other => panic!("renamed key accepted: {other:?}"),
    }
}

#[test]
fn symlinked_key_file_is_refused() {
    let (dir, ring) = ring();
    let keys = dir.path().join(KEYS_DIR);
    let real = key_path(&keys, ring.active().kid());
    let elsewhere = dir.path().join("elsewhere");
    fs::rename(&real, &elsewhere).unwrap();
    symlink(&elsewhere, &real).unwrap();
    assert!(matches!(
        KeyRing::load_or_create(dir.path(), T0),
        Err(Error::Config(_))
    ));
}

#[test]
fn leftover_temp_file_is_removed() {
    let (dir, ring) = ring();
    let keys = dir.path().join(KEYS_DIR);
    let tmp = keys.join(format!(".crashed{TMP_SUFFIX}"));
    write_key_file(&tmp, b"half a key", T0).unwrap();
    let again = KeyRing::load_or_create(dir.path(), T0).unwrap();
    assert_eq!(again.active().kid(), ring.active().kid());
    assert!(!tmp.exists());
}

#[test]
fn load_or_create_twice_gives_the_same_key() {
    let (dir, ring) = ring();
    let token = ring.sign(&claims()).unwrap();
    let again = KeyRing::load_or_create(dir.path(), T0 + 100).unwrap();
    assert_eq!(again.active().kid(), ring.active().kid());
    assert_eq!(again.active().created(), T0);
    assert!(again.previous().is_empty());
    assert_eq!(key_files(dir.path()).len(), 1);
    again.verify(&token).unwrap();
    ring.verify(&again.sign(&claims()).unwrap()).unwrap();
}

#[test]
fn rotate_keeps_old_tokens_verifying_and_survives_restart() {
    let (dir, mut ring) = ring();
    let old_kid = ring.active().kid().to_string();
    let old_token = ring.sign(&claims()).unwrap();

    ring.rotate(dir.path(), T0 + 60).unwrap();
    let new_kid = ring.active().kid().to_string();
    assert_ne!(new_kid, old_kid);
    assert_eq!(ring.previous().len(), 1);
    assert_eq!(ring.previous()[0].kid(), old_kid);
    assert_eq!(ring.verify(&old_token).unwrap().1, old_kid);
    let new_token = ring.sign(&claims()).unwrap();
    assert_eq!(ring.verify(&new_token).unwrap().1, new_kid);

    let again = KeyRing::load_or_create(dir.path(), T0 + 120).unwrap();
    assert_eq!(again.active().kid(), new_kid);
    assert_eq!(again.active().created(), T0 + 60);
    assert_eq!(again.previous().len(), 1);
    assert_eq!(again.previous()[0].kid(), old_kid);
    again.verify(&old_token).unwrap();
    again.verify(&new_token).unwrap();
    for file in key_files(dir.path()) {
        assert_eq!(mode(&file), 0o600);
    }
}

#[test]
fn rotate_refuses_a_time_not_after_the_active_key() {
    let (dir, mut ring) = ring();
    for now in [T0, T0 - 1] {
        assert!(matches!(
            ring.rotate(dir.path(), now),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(ring.previous().is_empty());
    assert_eq!(key_files(dir.path()).len(), 1);
}

#[test]
fn retire_removes_the_key_and_its_file() {
    let (dir, mut ring) = ring();
    let old_kid = ring.active().kid().to_string();
    let old_token = ring.sign(&claims()).unwrap();
    ring.rotate(dir.path(), T0 + 60).unwrap();
    let active_kid = ring.active().kid().to_string();

    assert!(matches!(
        ring.retire(dir.path(), &active_kid),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        ring.retire(dir.path(), "unknown"),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(key_files(dir.path()).len(), 2);

    ring.retire(dir.path(), &old_kid).unwrap();
    assert!(ring.previous().is_empty());
    assert_invalid(&ring, &old_token);
    assert_eq!(
        key_files(dir.path()),
        vec![key_path(&dir.path().join(KEYS_DIR), &active_kid)]
    );
    let jwks: serde_json::Value = serde_json::from_str(&ring.jwks_json()).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);

    let again = KeyRing::load_or_create(dir.path(), T0 + 120).unwrap();
    assert_eq!(again.active().kid(), active_kid);
    assert!(again.previous().is_empty());
}
