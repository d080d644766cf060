//! The simulated card's durable state (keys, certificates, PIN, PUK, counters, serial, GUID) and the
//! JSON file that keeps it from one run to the next. Session state (PIN verified, ...) lives in
//! [`super::card`], never here.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use p256::ecdsa::SigningKey;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::objects;
use super::{SimError, SimOptions, Slot, ALG_ECC_P256};

/// Version of the state file layout; bump it when a field changes meaning.
const FORMAT: u32 = 1;

/// The 3DES management key every PIV card ships with (NIST SP 800-73-4 leaves it to the issuer; this
/// is the value the Yubico and OpenSC tools assume).
pub const DEFAULT_MGMT_KEY: [u8; 24] = [
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
];

/// Retry counter of the PUK on a new card.
const PUK_RETRIES: u8 = 3;

/// Everything a card remembers across power cycles. Secrets are hex or ASCII in `Zeroizing` strings so
/// that serialising and parsing never leave a plain copy behind in our own buffers.
#[derive(Serialize, Deserialize)]
pub struct CardState {
    format: u32,
    serial: u32,
    guid: String,
    pin: Zeroizing<String>,
    puk: Zeroizing<String>,
    pin_retries_max: u8,
    pin_retries_left: u8,
    puk_retries_max: u8,
    puk_retries_left: u8,
    mgmt_key: Zeroizing<String>,
    /// Slot key reference as two hex digits ("9a") → its key.
    keys: BTreeMap<String, SlotKey>,
    /// Data object tag as hex ("5fc102") → the object exactly as GET DATA returns it (53 or 7E TLV).
    objects: BTreeMap<String, String>,
}

/// A private key held in a slot.
#[derive(Serialize, Deserialize)]
struct SlotKey {
    /// PIV algorithm identifier (SP 800-78-4 Table 6-2); only 0x11, ECC P-256, so far.
    algorithm: u8,
    /// The P-256 scalar, hex.
    private_key: Zeroizing<String>,
}

impl CardState {
    /// A brand-new card: fresh serial and GUID, P-256 keys and self-signed certificates in 9A and 9E,
    /// CHUID and CCC, and the PIN, PUK and PIN retry count of `options`.
    pub fn new(options: &SimOptions) -> Result<Self, SimError> {
        check_pin(options.pin.as_bytes())?;
        check_puk(options.puk.as_bytes())?;
        if !(1..=15).contains(&options.pin_retries) {
            return Err(SimError::InvalidOption(
                "PIN retries must be 1..=15 (63Cx has 4 bits)",
            ));
        }
        let serial = OsRng.next_u32() & 0x7FFF_FFFF;
        let mut guid = [0u8; 16];
        OsRng.fill_bytes(&mut guid);
        let mut state = CardState {
            format: FORMAT,
            serial,
            guid: hex::encode(guid),
            pin: options.pin.clone(),
            puk: options.puk.clone(),
            pin_retries_max: options.pin_retries,
            pin_retries_left: options.pin_retries,
            puk_retries_max: PUK_RETRIES,
            puk_retries_left: PUK_RETRIES,
            mgmt_key: Zeroizing::new(hex::encode(DEFAULT_MGMT_KEY)),
            keys: BTreeMap::new(),
            objects: BTreeMap::new(),
        };
        state.set_object(objects::TAG_CHUID, &objects::chuid(&guid)?);
        let mut card_id = [0u8; 14];
        OsRng.fill_bytes(&mut card_id);
        state.set_object(objects::TAG_CCC, &objects::ccc(&card_id)?);
        for (slot, name) in [
            (Slot::Authentication, "Tessera simulated PIV Authentication"),
            (
                Slot::CardAuthentication,
                "Tessera simulated Card Authentication",
            ),
        ] {
            let key = SigningKey::random(&mut OsRng);
            let cert = objects::self_signed_certificate(&key, name, serial)?;
            state.set_object(slot.object_tag(), &objects::certificate_object(&cert)?);
            state.set_key(slot, &key);
        }
        Ok(state)
    }

    /// Reads a state file written by [`CardState::save`].
    pub fn load(path: &Path) -> Result<Self, SimError> {
        let mode = fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "{} holds PINs and keys but is readable by others (mode {:o})",
                path.display(),
                mode & 0o777
            );
        }
        let bytes = Zeroizing::new(fs::read(path)?);
        let state: CardState = serde_json::from_slice(&bytes)
            .map_err(|e| SimError::State(format!("{}: {e}", path.display())))?;
        if state.format != FORMAT {
            return Err(SimError::State(format!(
                "{}: unknown format {}",
                path.display(),
                state.format
            )));
        }
        Ok(state)
    }

    /// Writes the state atomically: a 0600 temporary file in the same directory, fsync, rename over
    /// `path`, fsync of the directory. A crash leaves either the old or the new card, never half.
    pub fn save(&self, path: &Path) -> Result<(), SimError> {
        let json = Zeroizing::new(
            serde_json::to_vec_pretty(self).map_err(|e| SimError::State(e.to_string()))?,
        );
        crate::state_file::replace(path, &json, true)?;
        Ok(())
    }

    /// The card serial number (Yubico GET SERIAL).
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The CHUID's GUID (SP 800-73-4 Part 1 Table 9, tag 34).
    pub fn guid(&self) -> Result<[u8; 16], SimError> {
        let bytes = hex::decode(&self.guid).map_err(|e| SimError::State(e.to_string()))?;
        bytes
            .try_into()
            .map_err(|_| SimError::State("GUID is not 16 bytes".into()))
    }

    /// The DER certificate in `slot`, if the slot's certificate object holds one.
    pub fn certificate(&self, slot: Slot) -> Option<Vec<u8>> {
        let object = self.object(slot.object_tag())?;
        objects::certificate_from_object(&object)
    }

    /// The public key of `slot`, if it holds a key.
    pub fn public_key(&self, slot: Slot) -> Option<p256::PublicKey> {
        self.signing_key(slot)
            .map(|k| p256::PublicKey::from(k.verifying_key()))
    }

    /// Remaining PIN tries.
    pub fn pin_retries_left(&self) -> u8 {
        self.pin_retries_left
    }

    /// Remaining PUK tries.
    pub fn puk_retries_left(&self) -> u8 {
        self.puk_retries_left
    }

    // ---- crate-internal accessors used by the card model ----

    pub(super) fn object(&self, tag: u32) -> Option<Vec<u8>> {
        self.objects
            .get(&tag_key(tag))
            .and_then(|h| hex::decode(h).ok())
    }

    pub(super) fn set_object(&mut self, tag: u32, value: &[u8]) {
        self.objects.insert(tag_key(tag), hex::encode(value));
    }

    pub(super) fn remove_object(&mut self, tag: u32) {
        self.objects.remove(&tag_key(tag));
    }

    pub(super) fn signing_key(&self, slot: Slot) -> Option<SigningKey> {
        let key = self.keys.get(&slot_key(slot))?;
        if key.algorithm != ALG_ECC_P256 {
            return None;
        }
        let scalar = Zeroizing::new(hex::decode(key.private_key.as_str()).ok()?);
        SigningKey::from_slice(&scalar).ok()
    }

    pub(super) fn key_algorithm(&self, slot: Slot) -> Option<u8> {
        self.keys.get(&slot_key(slot)).map(|k| k.algorithm)
    }

    pub(super) fn set_key(&mut self, slot: Slot, key: &SigningKey) {
        let scalar = Zeroizing::new(key.to_bytes());
        // Borrow as a slice: passing the array by value would leave an unzeroized copy.
        let scalar: &[u8] = &scalar;
        self.keys.insert(
            slot_key(slot),
            SlotKey {
                algorithm: ALG_ECC_P256,
                private_key: Zeroizing::new(hex::encode(scalar)),
            },
        );
    }

    pub(super) fn pin(&self) -> &[u8] {
        self.pin.as_bytes()
    }

    pub(super) fn puk(&self) -> &[u8] {
        self.puk.as_bytes()
    }

    pub(super) fn set_pin(&mut self, pin: &[u8]) -> Result<(), SimError> {
        check_pin(pin)?;
        self.pin = Zeroizing::new(ascii(pin)?);
        Ok(())
    }

    pub(super) fn set_puk(&mut self, puk: &[u8]) -> Result<(), SimError> {
        check_puk(puk)?;
        self.puk = Zeroizing::new(ascii(puk)?);
        Ok(())
    }

    pub(super) fn set_pin_retries_left(&mut self, n: u8) {
        self.pin_retries_left = n.min(self.pin_retries_max);
    }

    pub(super) fn reset_pin_retries(&mut self) {
        self.pin_retries_left = self.pin_retries_max;
    }

    pub(super) fn pin_retries_full(&self) -> bool {
        self.pin_retries_left == self.pin_retries_max
    }

    pub(super) fn set_puk_retries_left(&mut self, n: u8) {
        self.puk_retries_left = n.min(self.puk_retries_max);
    }

    pub(super) fn reset_puk_retries(&mut self) {
        self.puk_retries_left = self.puk_retries_max;
    }

    pub(super) fn puk_retries_full(&self) -> bool {
        self.puk_retries_left == self.puk_retries_max
    }

    pub(super) fn mgmt_key(&self) -> Option<Zeroizing<[u8; 24]>> {
        let bytes = Zeroizing::new(hex::decode(self.mgmt_key.as_str()).ok()?);
        let mut key = Zeroizing::new([0u8; 24]);
        if bytes.len() != key.len() {
            return None;
        }
        key.copy_from_slice(&bytes);
        Some(key)
    }
}

impl std::fmt::Debug for CardState {
    /// Never prints PIN, PUK or keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardState")
            .field("serial", &self.serial)
            .field("guid", &self.guid)
            .field("pin_retries_left", &self.pin_retries_left)
            .field("puk_retries_left", &self.puk_retries_left)
            .field("slots", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A PIV PIN: 6 to 8 ASCII digits (SP 800-73-4 Part 2 §2.4.3).
pub(super) fn check_pin(pin: &[u8]) -> Result<(), SimError> {
    if (6..=8).contains(&pin.len()) && pin.iter().all(u8::is_ascii_digit) {
        Ok(())
    } else {
        Err(SimError::InvalidOption("the PIN must be 6 to 8 digits"))
    }
}

/// A PUK: 6 to 8 bytes (SP 800-73-4 Part 2 §2.4.3 allows any byte values; we keep them printable
/// ASCII so the state file stays readable).
pub(super) fn check_puk(puk: &[u8]) -> Result<(), SimError> {
    if (6..=8).contains(&puk.len()) && puk.iter().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(SimError::InvalidOption(
            "the PUK must be 6 to 8 printable ASCII characters",
        ))
    }
}

fn ascii(bytes: &[u8]) -> Result<String, SimError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| SimError::InvalidOption("not ASCII"))
}

fn tag_key(tag: u32) -> String {
    format!("{tag:x}")
}

fn slot_key(slot: Slot) -> String {
    format!("{:02x}", slot.key_reference())
}
