//! A FIDO key in software for the authenticator's tests, written from the specification (CTAP 2.1
//! §6.1, §6.2, §6.4, §6.5, §6.9; U2F raw message formats §4-6) on its own, without the crate's
//! codec: a [`CtapLink`] that answers what a key would, with switches for the ways a real or
//! hostile key misbehaves. Not the simulator (`tessera-sim`), which is written independently.

// Compiled only for tests (`#[cfg(test)]` at its `mod` line): a test key that cannot do what the test
// scripted is a broken test, so panicking is its error handling; no device or bus input reaches it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use ciborium::Value;
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Signer;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use super::link::{CtapLink, Keepalive, LinkCapabilities, LinkContext};
use crate::Result;

/// maxMsgSize the soft key says and enforces.
const MAX_MSG_SIZE: usize = 1200;

/// How the soft key behaves; tests set fields before and read them after.
pub struct KeyState {
    pub versions: Vec<&'static str>,
    pub aaguid: [u8; 16],
    pub pin: Option<String>,
    pub retries: u8,
    pub wrong_in_a_row: u8,
    pub uv: bool,
    pub fingerprint: bool,
    pub max_list: Option<usize>,
    pub algorithms: Vec<i64>,
    pub u2f_only: bool,
    /// getInfo option makeCredUvNotRqd (CTAP 2.1 §6.4): without it, a key with a PIN or UV makes
    /// no credential unverified (§6.1.2 step 6: PUAT_REQUIRED).
    pub make_cred_uv_not_rqd: bool,
    /// Keepalives UPNEEDED (CTAP2) or 6985 answers (U2F) before the touch.
    pub touch_after: usize,
    pub counter: u32,
    pub credentials: Vec<SoftCredential>,
    /// Misbehaviours.
    pub wrong_rp_hash: bool,
    pub no_up: bool,
    pub no_uv: bool,
    pub bad_signature: bool,
    pub other_credential: bool,
    /// Never answers an operation that needs a touch, ignoring the cancel (sleeps 2 s).
    pub hang_on_touch: bool,
    /// Every command and subcommand seen ("getInfo", "clientPin 0x01", "msg 02/07", …).
    pub log: Vec<String>,
    pub agreement: Option<p256::SecretKey>,
    pub token: Option<[u8; 32]>,
    pub token_permissions: u8,
    pub token_protocol: i64,
    /// pinUvAuthProtocols offered.
    pub pin_protocols: Vec<i64>,
    /// Refuses option up = false (CTAP2_ERR_UNSUPPORTED_OPTION), as some CTAP 2.0 keys do.
    pub refuse_silent: bool,
    /// Ignores option up = false and waits for a touch, as some keys do.
    pub ignore_silent: bool,
    /// minPINLength, when the key says one.
    pub min_pin_length: Option<i64>,
    /// The longest CBOR request seen.
    pub largest_request: usize,
}

/// A credential the soft key made.
#[derive(Clone)]
pub struct SoftCredential {
    pub id: Vec<u8>,
    pub rp_id_hash: [u8; 32],
    pub key: SoftSigner,
}

#[derive(Clone)]
pub enum SoftSigner {
    Es256(p256::ecdsa::SigningKey),
    EdDsa(ed25519_dalek::SigningKey),
}

impl SoftSigner {
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            SoftSigner::Es256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_der().as_bytes().to_vec()
            }
            SoftSigner::EdDsa(k) => {
                use ed25519_dalek::Signer as _;
                k.sign(message).to_bytes().to_vec()
            }
        }
    }

    fn cose(&self) -> Value {
        match self {
            SoftSigner::Es256(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                cbor_map(vec![
                    (i(1), i(2)),
                    (i(3), i(-7)),
                    (i(-1), i(1)),
                    (i(-2), Value::Bytes(point.x().unwrap().to_vec())),
                    (i(-3), Value::Bytes(point.y().unwrap().to_vec())),
                ])
            }
            SoftSigner::EdDsa(k) => cbor_map(vec![
                (i(1), i(1)),
                (i(3), i(-8)),
                (i(-1), i(6)),
                (i(-2), Value::Bytes(k.verifying_key().to_bytes().to_vec())),
            ]),
        }
    }
}

impl Default for KeyState {
    fn default() -> Self {
        KeyState {
            versions: vec!["FIDO_2_0", "FIDO_2_1", "U2F_V2"],
            aaguid: [0xA7; 16],
            pin: Some("1234".into()),
            retries: 8,
            wrong_in_a_row: 0,
            uv: false,
            fingerprint: false,
            max_list: Some(8),
            algorithms: vec![-7, -8],
            u2f_only: false,
            make_cred_uv_not_rqd: true,
            touch_after: 2,
            counter: 41,
            credentials: Vec::new(),
            wrong_rp_hash: false,
            no_up: false,
            no_uv: false,
            bad_signature: false,
            other_credential: false,
            hang_on_touch: false,
            log: Vec::new(),
            agreement: None,
            token: None,
            token_permissions: 0,
            token_protocol: 0,
            pin_protocols: vec![2, 1],
            refuse_silent: false,
            ignore_silent: false,
            min_pin_length: None,
            largest_request: 0,
        }
    }
}

/// The soft key as a link; clones share the state.
#[derive(Clone)]
pub struct SoftKey(pub Arc<Mutex<KeyState>>);

impl SoftKey {
    pub fn new(state: KeyState) -> SoftKey {
        SoftKey(Arc::new(Mutex::new(state)))
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, KeyState> {
        self.0.lock().unwrap()
    }

    /// Waits for the "touch": keepalives UPNEEDED (`u2f`: nothing, the caller polls), or hangs.
    fn touch(&self, ctx: &mut LinkContext<'_>) {
        let (n, hang) = {
            let s = self.state();
            (s.touch_after, s.hang_on_touch)
        };
        if hang {
            (ctx.keepalive)(Keepalive::UpNeeded);
            // A key that ignores CTAPHID_CANCEL: only its own time-out ends the wait.
            thread::sleep(Duration::from_secs(2));
            return;
        }
        for _ in 0..n {
            (ctx.keepalive)(Keepalive::UpNeeded);
            thread::sleep(Duration::from_millis(5));
        }
    }
}

pub fn i(n: i64) -> Value {
    Value::Integer(n.into())
}

pub fn t(s: &str) -> Value {
    Value::Text(s.into())
}

pub fn cbor_map(entries: Vec<(Value, Value)>) -> Value {
    Value::Map(entries)
}

fn ok(v: Value) -> Vec<u8> {
    let mut out = vec![0x00];
    ciborium::into_writer(&v, &mut out).unwrap();
    out
}

fn status(code: u8) -> Vec<u8> {
    vec![code]
}

fn get(map: &Value, key: i64) -> Option<&Value> {
    match map {
        Value::Map(m) => m.iter().find(|(k, _)| *k == i(key)).map(|(_, v)| v),
        _ => None,
    }
}

fn get_text<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    match map {
        Value::Map(m) => m.iter().find(|(k, _)| *k == t(key)).map(|(_, v)| v),
        _ => None,
    }
}

fn bytes(v: Option<&Value>) -> Vec<u8> {
    match v {
        Some(Value::Bytes(b)) => b.clone(),
        other => panic!("expected bytes, got {other:?}"),
    }
}

fn int(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Integer(n)) => i128::from(*n) as i64,
        other => panic!("expected an integer, got {other:?}"),
    }
}

fn option(map: Option<&Value>, name: &str) -> Option<bool> {
    match map.and_then(|m| get_text(m, name)) {
        Some(Value::Bool(b)) => Some(*b),
        None => None,
        other => panic!("option {name}: {other:?}"),
    }
}

/// PIN/UV auth protocols one (§6.5.6) and two (§6.5.7), authenticator side.
struct Protocol {
    one: bool,
    hmac_key: [u8; 32],
    aes_key: [u8; 32],
}

impl Protocol {
    fn new(number: i64, agreement: &p256::SecretKey, platform: &Value) -> Protocol {
        let x = bytes(get(platform, -2));
        let y = bytes(get(platform, -3));
        let mut sec1 = vec![0x04];
        sec1.extend_from_slice(&x);
        sec1.extend_from_slice(&y);
        let peer = p256::PublicKey::from_sec1_bytes(&sec1).unwrap();
        let z = p256::ecdh::diffie_hellman(agreement.to_nonzero_scalar(), peer.as_affine());
        if number == 1 {
            let shared: [u8; 32] = Sha256::digest(z.raw_secret_bytes()).into();
            return Protocol {
                one: true,
                hmac_key: shared,
                aes_key: shared,
            };
        }
        assert_eq!(number, 2);
        let hk = hkdf::Hkdf::<Sha256>::new(Some(&[0u8; 32]), z.raw_secret_bytes());
        let mut p = Protocol {
            one: false,
            hmac_key: [0; 32],
            aes_key: [0; 32],
        };
        hk.expand(b"CTAP2 HMAC key", &mut p.hmac_key).unwrap();
        hk.expand(b"CTAP2 AES key", &mut p.aes_key).unwrap();
        p
    }

    fn decrypt(&self, data: &[u8]) -> Vec<u8> {
        let (iv, ct) = if self.one {
            (&[0u8; 16][..], data)
        } else {
            data.split_at(16)
        };
        let mut buf = ct.to_vec();
        cbc::Decryptor::<aes::Aes256>::new(&self.aes_key.into(), iv.into())
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .unwrap();
        buf
    }

    fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        let mut iv = [0u8; 16];
        if !self.one {
            OsRng.fill_bytes(&mut iv);
        }
        let mut buf = plain.to_vec();
        let n = buf.len();
        cbc::Encryptor::<aes::Aes256>::new(&self.aes_key.into(), &iv.into())
            .encrypt_padded_mut::<NoPadding>(&mut buf, n)
            .unwrap();
        let mut out = if self.one { Vec::new() } else { iv.to_vec() };
        out.extend_from_slice(&buf);
        out
    }
}

/// authenticate(token, message): HMAC-SHA-256, the first 16 bytes under protocol one.
fn authenticate(one: bool, key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(message);
    let tag = mac.finalize().into_bytes().to_vec();
    if one {
        tag[..16].to_vec()
    } else {
        tag
    }
}

impl KeyState {
    fn info(&self) -> Vec<u8> {
        let mut options = vec![(t("rk"), Value::Bool(true)), (t("up"), Value::Bool(true))];
        match &self.pin {
            Some(_) => options.push((t("clientPin"), Value::Bool(true))),
            None => options.push((t("clientPin"), Value::Bool(false))),
        }
        if self.uv {
            options.push((t("uv"), Value::Bool(true)));
        }
        if self.fingerprint {
            options.push((t("bioEnroll"), Value::Bool(true)));
        }
        let face = self.uv && !self.fingerprint;
        if self.versions.contains(&"FIDO_2_1") {
            options.push((t("pinUvAuthToken"), Value::Bool(true)));
        }
        if self.make_cred_uv_not_rqd {
            options.push((t("makeCredUvNotRqd"), Value::Bool(true)));
        }
        let mut fields = vec![
            (
                i(1),
                Value::Array(self.versions.iter().map(|v| t(v)).collect()),
            ),
            (i(3), Value::Bytes(self.aaguid.to_vec())),
            (i(4), Value::Map(options)),
            (i(5), i(MAX_MSG_SIZE as i64)),
            (
                i(6),
                Value::Array(self.pin_protocols.iter().map(|p| i(*p)).collect()),
            ),
        ];
        if let Some(n) = self.max_list {
            fields.push((i(7), i(n as i64)));
            fields.push((i(8), i(128)));
        }
        if let Some(n) = self.min_pin_length {
            fields.push((i(0x0D), i(n)));
        }
        if face {
            // uvModality: USER_VERIFY_FACEPRINT_INTERNAL (FIDO Registry §3.1).
            fields.push((i(0x12), i(0x10)));
        }
        fields.push((
            i(0x0A),
            Value::Array(
                self.algorithms
                    .iter()
                    .map(|a| cbor_map(vec![(t("alg"), i(*a)), (t("type"), t("public-key"))]))
                    .collect(),
            ),
        ));
        ok(cbor_map(fields))
    }

    fn auth_data(
        &mut self,
        rp_id_hash: [u8; 32],
        up: bool,
        uv: bool,
        attested: Option<&SoftCredential>,
    ) -> Vec<u8> {
        self.counter += 1;
        let mut hash = rp_id_hash;
        if self.wrong_rp_hash {
            hash[0] ^= 0xFF;
        }
        let mut flags = 0u8;
        if up && !self.no_up {
            flags |= 0x01;
        }
        if uv && !self.no_uv {
            flags |= 0x04;
        }
        if attested.is_some() {
            flags |= 0x40;
        }
        let mut d = hash.to_vec();
        d.push(flags);
        d.extend_from_slice(&self.counter.to_be_bytes());
        if let Some(c) = attested {
            d.extend_from_slice(&self.aaguid);
            d.extend_from_slice(&(c.id.len() as u16).to_be_bytes());
            d.extend_from_slice(&c.id);
            ciborium::into_writer(&c.key.cose(), &mut d).unwrap();
        }
        d
    }

    /// Checks pinUvAuthParam over `client_data_hash` with the token, and its permission.
    fn token_ok(&self, param: Option<&Value>, cdh: &[u8], permission: u8) -> bool {
        let (Some(token), Some(param)) = (self.token, param) else {
            return false;
        };
        bytes(Some(param)) == authenticate(self.token_protocol == 1, &token, cdh)
            && self.token_permissions & permission != 0
    }

    fn client_pin(&mut self, p: &Value) -> Vec<u8> {
        let sub = int(get(p, 2)) as u8;
        self.log.push(format!("clientPin 0x{sub:02X}"));
        match sub {
            0x01 => ok(cbor_map(vec![(i(3), i(i64::from(self.retries)))])),
            0x02 => {
                let key = p256::SecretKey::random(&mut OsRng);
                let point = key.public_key().to_encoded_point(false);
                self.agreement = Some(key);
                ok(cbor_map(vec![(
                    i(1),
                    cbor_map(vec![
                        (i(1), i(2)),
                        (i(3), i(-25)),
                        (i(-1), i(1)),
                        (i(-2), Value::Bytes(point.x().unwrap().to_vec())),
                        (i(-3), Value::Bytes(point.y().unwrap().to_vec())),
                    ]),
                )]))
            }
            // getPinToken, getPinUvAuthTokenUsingPinWithPermissions (§6.5.5.7.1-2).
            0x05 | 0x09 => {
                let number = int(get(p, 1));
                assert!(
                    self.pin_protocols.contains(&number),
                    "protocol {number} not offered"
                );
                let Some(pin) = self.pin.clone() else {
                    return status(0x35);
                };
                if self.retries == 0 {
                    return status(0x32);
                }
                if self.wrong_in_a_row >= 3 {
                    return status(0x34);
                }
                let agreement = self.agreement.take().expect("getKeyAgreement first");
                let proto = Protocol::new(number, &agreement, get(p, 3).unwrap());
                self.retries -= 1;
                let hash = proto.decrypt(&bytes(get(p, 6)));
                if hash[..] != Sha256::digest(pin.as_bytes())[..16] {
                    self.wrong_in_a_row += 1;
                    if self.retries == 0 {
                        return status(0x32);
                    }
                    if self.wrong_in_a_row >= 3 {
                        return status(0x34);
                    }
                    return status(0x31);
                }
                self.retries = 8;
                self.wrong_in_a_row = 0;
                self.token_protocol = number;
                self.issue_token(&proto, p, sub == 0x09)
            }
            // getPinUvAuthTokenUsingUvWithPermissions (§6.5.5.7.3).
            0x06 => {
                let agreement = self.agreement.take().expect("getKeyAgreement first");
                let number = int(get(p, 1));
                let proto = Protocol::new(number, &agreement, get(p, 3).unwrap());
                self.token_protocol = number;
                self.issue_token(&proto, p, true)
            }
            _ => status(0x3E),
        }
    }

    fn issue_token(&mut self, proto: &Protocol, p: &Value, with_permissions: bool) -> Vec<u8> {
        let mut token = [0u8; 32];
        OsRng.fill_bytes(&mut token);
        self.token = Some(token);
        self.token_permissions = if with_permissions {
            let rp = get(p, 0x0A);
            assert!(rp.is_some(), "a permissions token names its rpId");
            int(get(p, 9)) as u8
        } else {
            0x03
        };
        ok(cbor_map(vec![(i(2), Value::Bytes(proto.encrypt(&token)))]))
    }
}

impl SoftKey {
    fn make_credential(&self, p: &Value, ctx: &mut LinkContext<'_>) -> Vec<u8> {
        let cdh = bytes(get(p, 1));
        let rp_id = match get_text(get(p, 2).unwrap(), "id") {
            Some(Value::Text(s)) => s.clone(),
            other => panic!("rp.id {other:?}"),
        };
        let rp_hash: [u8; 32] = Sha256::digest(rp_id.as_bytes()).into();
        let options = get(p, 7);
        assert_ne!(
            option(options, "rk"),
            Some(true),
            "Tessera makes non-resident credentials"
        );
        let inline_uv = option(options, "uv") == Some(true);
        let uv = if let Some(param) = get(p, 8) {
            if !self.state().token_ok(Some(param), &cdh, 0x01) {
                return status(0x33);
            }
            true
        } else {
            inline_uv
        };
        {
            let s = self.state();
            if !uv && !s.make_cred_uv_not_rqd && (s.pin.is_some() || s.uv) {
                return status(0x36);
            }
        }
        let algs: Vec<i64> = match get(p, 4) {
            Some(Value::Array(a)) => a.iter().map(|e| int(get_text_i(e, "alg"))).collect(),
            other => panic!("pubKeyCredParams {other:?}"),
        };
        if let Some(Value::Array(exclude)) = get(p, 5) {
            let s = self.state();
            for e in exclude {
                let id = bytes(get_text_i(e, "id"));
                if s.credentials
                    .iter()
                    .any(|c| c.id == id && c.rp_id_hash == rp_hash)
                {
                    drop(s);
                    self.touch(ctx);
                    return status(0x19);
                }
            }
        }
        let supported = self.state().algorithms.clone();
        let Some(alg) = algs.iter().find(|a| supported.contains(a)) else {
            return status(0x26);
        };
        self.touch(ctx);
        let mut id = vec![0u8; 48];
        OsRng.fill_bytes(&mut id);
        let key = if *alg == -8 {
            SoftSigner::EdDsa(ed25519_dalek::SigningKey::generate(&mut OsRng))
        } else {
            SoftSigner::Es256(p256::ecdsa::SigningKey::random(&mut OsRng))
        };
        let cred = SoftCredential {
            id,
            rp_id_hash: rp_hash,
            key,
        };
        let mut s = self.state();
        s.credentials.push(cred.clone());
        let auth_data = s.auth_data(rp_hash, true, uv, Some(&cred));
        ok(cbor_map(vec![
            (i(1), t("none")),
            (i(2), Value::Bytes(auth_data)),
            (i(3), cbor_map(vec![])),
        ]))
    }

    fn get_assertion(&self, p: &Value, ctx: &mut LinkContext<'_>) -> Vec<u8> {
        let rp_id = match get(p, 1) {
            Some(Value::Text(s)) => s.clone(),
            other => panic!("rpId {other:?}"),
        };
        let rp_hash: [u8; 32] = Sha256::digest(rp_id.as_bytes()).into();
        let cdh = bytes(get(p, 2));
        let options = get(p, 5);
        let up = option(options, "up") != Some(false);
        if !up && self.state().refuse_silent {
            return status(0x2B);
        }
        if !up && self.state().ignore_silent {
            // Waits for a touch nobody gives until the platform cancels (CTAPHID_CANCEL).
            for _ in 0..200 {
                (ctx.keepalive)(Keepalive::UpNeeded);
                if ctx.cancel.is_cancelled() {
                    return status(0x2D);
                }
                thread::sleep(Duration::from_millis(10));
            }
            return status(0x2F);
        }
        let inline_uv = option(options, "uv") == Some(true);
        let uv = if let Some(param) = get(p, 6) {
            if !self.state().token_ok(Some(param), &cdh, 0x02) {
                return status(0x33);
            }
            true
        } else {
            inline_uv
        };
        let allow: Vec<Vec<u8>> = match get(p, 3) {
            Some(Value::Array(a)) => a.iter().map(|e| bytes(get_text_i(e, "id"))).collect(),
            _ => Vec::new(),
        };
        {
            let s = self.state();
            if let Some(max) = s.max_list {
                if allow.len() > max {
                    return status(0x15);
                }
            }
        }
        let found = {
            let s = self.state();
            allow.iter().find_map(|id| {
                s.credentials
                    .iter()
                    .find(|c| c.id == *id && c.rp_id_hash == rp_hash)
                    .cloned()
            })
        };
        let Some(cred) = found else {
            if up {
                self.touch(ctx);
            }
            return status(0x2E);
        };
        if up {
            self.touch(ctx);
        }
        let mut s = self.state();
        let auth_data = s.auth_data(rp_hash, up, uv, None);
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&cdh);
        let mut signature = cred.key.sign(&signed);
        if s.bad_signature {
            let mut other = signed.clone();
            other[0] ^= 1;
            signature = cred.key.sign(&other);
        }
        let mut id = cred.id.clone();
        if s.other_credential {
            id[0] ^= 0xFF;
        }
        drop(s);
        ok(cbor_map(vec![
            (
                i(1),
                cbor_map(vec![
                    (t("id"), Value::Bytes(id)),
                    (t("type"), t("public-key")),
                ]),
            ),
            (i(2), Value::Bytes(auth_data)),
            (i(3), Value::Bytes(signature)),
        ]))
    }

    /// U2F raw messages (extended APDUs).
    fn u2f(&self, apdu: &[u8]) -> Vec<u8> {
        let (ins, p1) = (apdu[1], apdu[2]);
        let data: &[u8] = if apdu.len() > 7 {
            let lc = usize::from(u16::from_be_bytes([apdu[5], apdu[6]]));
            &apdu[7..7 + lc]
        } else {
            &[]
        };
        self.state().log.push(format!("msg {ins:02X}/{p1:02X}"));
        let sw = |mut d: Vec<u8>, sw: u16| {
            d.extend_from_slice(&sw.to_be_bytes());
            d
        };
        match ins {
            0x03 => sw(b"U2F_V2".to_vec(), 0x9000),
            0x01 => {
                if self.take_touch() {
                    return sw(vec![], 0x6985);
                }
                let (challenge, application) = data.split_at(32);
                let key = p256::ecdsa::SigningKey::random(&mut OsRng);
                let mut id = vec![0u8; 64];
                OsRng.fill_bytes(&mut id);
                let point = key.verifying_key().to_encoded_point(false);
                let mut signed = vec![0x00];
                signed.extend_from_slice(application);
                signed.extend_from_slice(challenge);
                signed.extend_from_slice(&id);
                signed.extend_from_slice(point.as_bytes());
                let signer = SoftSigner::Es256(key);
                let attestation = signer.sign(&signed);
                let mut out = vec![0x05];
                out.extend_from_slice(point.as_bytes());
                out.push(id.len() as u8);
                out.extend_from_slice(&id);
                // A stand-in certificate: one DER SEQUENCE (not parsed beyond its length).
                out.extend_from_slice(&[0x30, 0x03, 0x02, 0x01, 0x01]);
                out.extend_from_slice(&attestation);
                self.state().credentials.push(SoftCredential {
                    id,
                    rp_id_hash: application.try_into().unwrap(),
                    key: signer,
                });
                sw(out, 0x9000)
            }
            0x02 => {
                let (challenge, rest) = data.split_at(32);
                let (application, rest) = rest.split_at(32);
                let kh = &rest[1..1 + usize::from(rest[0])];
                let cred = self
                    .state()
                    .credentials
                    .iter()
                    .find(|c| c.id == kh && c.rp_id_hash[..] == *application)
                    .cloned();
                let Some(cred) = cred else {
                    return sw(vec![], 0x6A80);
                };
                if p1 == 0x07 {
                    return sw(vec![], 0x6985);
                }
                if self.take_touch() {
                    return sw(vec![], 0x6985);
                }
                let mut s = self.state();
                s.counter += 1;
                let presence = if s.no_up { 0x00 } else { 0x01 };
                let mut signed = application.to_vec();
                signed.push(presence);
                signed.extend_from_slice(&s.counter.to_be_bytes());
                signed.extend_from_slice(challenge);
                if s.bad_signature {
                    signed[0] ^= 1;
                }
                let mut out = vec![presence];
                out.extend_from_slice(&s.counter.to_be_bytes());
                out.extend_from_slice(&cred.key.sign(&signed));
                sw(out, 0x9000)
            }
            _ => sw(vec![], 0x6D00),
        }
    }

    /// U2F: whether the user has still not touched (one fewer poll to go).
    fn take_touch(&self) -> bool {
        let mut s = self.state();
        if s.touch_after > 0 {
            s.touch_after -= 1;
            true
        } else {
            false
        }
    }
}

fn get_text_i<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    get_text(map, key)
}

impl CtapLink for SoftKey {
    fn capabilities(&self) -> LinkCapabilities {
        let u2f_only = self.state().u2f_only;
        LinkCapabilities {
            cbor: !u2f_only,
            msg: true,
            wink: false,
            max_msg_size: super::link::MAX_CTAPHID_MESSAGE,
        }
    }

    fn cbor(&mut self, request: &[u8], ctx: &mut LinkContext<'_>) -> Result<Vec<u8>> {
        let (cmd, body) = request.split_first().expect("a command byte");
        let params: Value = if body.is_empty() {
            Value::Null
        } else {
            ciborium::from_reader(body).expect("request CBOR")
        };
        let hang = self.state().hang_on_touch;
        {
            let mut s = self.state();
            s.largest_request = s.largest_request.max(request.len());
        }
        if request.len() > MAX_MSG_SIZE {
            return Ok(status(0x39));
        }
        let answer = match cmd {
            0x04 => {
                self.state().log.push("getInfo".into());
                self.state().info()
            }
            0x01 => {
                self.state().log.push("makeCredential".into());
                self.make_credential(&params, ctx)
            }
            0x02 => {
                self.state().log.push("getAssertion".into());
                self.get_assertion(&params, ctx)
            }
            0x06 => {
                // Built-in UV waits for the user as a touch does (keepalive UPNEEDED).
                if get(&params, 2) == Some(&i(0x06)) {
                    self.touch(ctx);
                }
                self.state().client_pin(&params)
            }
            0x0B => {
                self.state().log.push("selection".into());
                self.touch(ctx);
                status(0x00)
            }
            _ => status(0x01),
        };
        if hang && ctx.cancel.is_cancelled() {
            // What a key that ignored the cancel says at last: too late for anyone to read.
            return Ok(status(0x2D));
        }
        let _ = Instant::now();
        Ok(answer)
    }

    fn msg(&mut self, apdu: &[u8], _ctx: &mut LinkContext<'_>) -> Result<Vec<u8>> {
        Ok(self.u2f(apdu))
    }

    fn ping(&mut self, data: &[u8], _ctx: &mut LinkContext<'_>) -> Result<Vec<u8>> {
        Ok(data.to_vec())
    }
}

/// The soft key as a contactless card: the FIDO applet (CTAP 2.1 §11.3) with short APDUs,
/// command chaining and GET RESPONSE, answering NFCCTAP_MSG directly (no status updates).
pub struct SoftCard {
    pub key: SoftKey,
    selected: bool,
    chained: Vec<u8>,
    pending: Vec<u8>,
}

impl SoftCard {
    pub fn new(key: SoftKey) -> SoftCard {
        SoftCard {
            key,
            selected: false,
            chained: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// `answer` and `9000`, in pieces of 256 with `61xx` for the rest.
    fn respond(&mut self, mut answer: Vec<u8>) -> Vec<u8> {
        if answer.len() <= 256 {
            answer.extend_from_slice(&[0x90, 0x00]);
            return answer;
        }
        self.pending = answer.split_off(256);
        let left = self.pending.len().min(256) as u8;
        answer.extend_from_slice(&[0x61, left]);
        answer
    }
}

impl crate::transport::CardTransport for SoftCard {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>> {
        let (cla, ins) = (apdu[0], apdu[1]);
        let data: &[u8] = if apdu.len() > 5 {
            &apdu[5..5 + usize::from(apdu[4])]
        } else {
            &[]
        };
        if ins == 0xA4 {
            self.selected = data == crate::iso7816::applets::FIDO_AID;
            self.key.state().log.push("SELECT".into());
            return Ok(if self.selected {
                let mut v = b"FIDO_2_0".to_vec();
                v.extend_from_slice(&[0x90, 0x00]);
                v
            } else {
                vec![0x6A, 0x82]
            });
        }
        if ins == 0xC0 {
            let rest = std::mem::take(&mut self.pending);
            return Ok(self.respond(rest));
        }
        assert!(self.selected, "a command before SELECT");
        if ins != 0x10 {
            return Ok(vec![0x6D, 0x00]);
        }
        self.chained.extend_from_slice(data);
        if cla & 0x10 != 0 {
            return Ok(vec![0x90, 0x00]);
        }
        let request = std::mem::take(&mut self.chained);
        let cancel = crate::cancel::CancelToken::new();
        let mut ignore = |_: Keepalive| {};
        let mut ctx = LinkContext {
            cancel: &cancel,
            deadline: Instant::now() + Duration::from_secs(5),
            keepalive: &mut ignore,
        };
        let answer = self.key.cbor(&request, &mut ctx)?;
        Ok(self.respond(answer))
    }
}
