//! The card model: one command APDU in, one response APDU out (NIST SP 800-73-4 Part 2 §3, ISO/IEC
//! 7816-4 §5 and §7). Command chaining and GET RESPONSE are handled here, below the PIV commands,
//! exactly where a real card handles them.

use std::path::{Path, PathBuf};

use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use rand_core::OsRng;
use tessera::iso7816::apdu::{Command, StatusWord};
use tessera::iso7816::tlv;
use zeroize::Zeroizing;

use super::mgmt::{self, Pending};
use super::objects::{self, NIST_RID, PIV_AID, TAG_DISCOVERY};
use super::state::{self, CardState};
use super::{CardProfile, Fault, SimError, SimOptions, Slot, ALG_3DES, ALG_ECC_P256};

/// Answer to reset of a contact card: T0 = 8B (TD1 and 11 historical bytes follow), TD1 = 01 (T=1),
/// historical bytes "Tessera-PIV" (category indicator 0x80 is not used: the bytes are proprietary).
/// Not `3B 8n 80 01`: that is the form PC/SC readers give contactless cards (PC/SC Part 3
/// §3.1.3.2.3), which Tessera reports as NFC. OpenSC matches no ATR of its tables and finds the
/// card by SELECTing the PIV application, as it does for any PIV card it does not know by name.
const ATR: [u8; 15] = [
    0x3B, 0x8B, 0x01, b'T', b'e', b's', b's', b'e', b'r', b'a', b'-', b'P', b'I', b'V',
    0xAF, // TCK: XOR of T0 .. last historical byte (ISO/IEC 7816-3 §8.2.5)
];

/// Firmware version reported to Yubico's GET VERSION: 5.x makes yubico-piv-tool read the serial
/// with the PIV instruction F8 instead of switching to the OTP application.
const VERSION: [u8; 3] = [5, 4, 3];

/// Key reference of the PIV Card Application PIN and of the PUK (SP 800-73-4 Part 1 Table 4a).
const REF_PIN: u8 = 0x80;
const REF_PUK: u8 = 0x81;
/// Key reference of the PIV Card Application Administration Key.
const REF_MGMT: u8 = 0x9B;

/// Largest command data accepted through chaining: a certificate container of a few kilobytes.
const MAX_COMMAND_DATA: usize = 16 * 1024;
/// Largest data object PUT DATA stores (the size YubiKeys accept).
const MAX_OBJECT: usize = 3052;
/// Short response limit (ISO/IEC 7816-4 §5.1: Ne up to 256).
const SHORT_LE: usize = 256;
/// Largest response data in one APDU: a vpcd message (16-bit length) also carries SW1 SW2.
const MAX_RESPONSE_DATA: usize = u16::MAX as usize - 2;

/// Length of the PIV AID without its two version bytes (SP 800-73-4 Part 1 §2.2).
const TRUNCATED_AID_LEN: usize = 9;

/// 6581, memory failure: the state file could not be written.
const SW_MEMORY_FAILURE: StatusWord = StatusWord::Other(0x6581);

/// What a command handler answers: data with 9000, or an error status word.
type Reply = Result<Vec<u8>, StatusWord>;

/// A simulated PIV card.
pub struct PivCard {
    state: CardState,
    path: Option<PathBuf>,
    fault: Option<Fault>,
    profile: CardProfile,
    session: Session,
    chain: Option<Chain>,
    /// Response bytes not yet fetched with GET RESPONSE.
    pending: Vec<u8>,
    pulled: bool,
    /// Private keys as parsed from the state, so a signature costs one scalar multiplication rather
    /// than two (parsing a key derives its public key). Emptied when a key is generated.
    signers: std::collections::HashMap<Slot, SigningKey>,
}

/// Security status: lost on reset, power off and SELECT of another application
/// (SP 800-73-4 Part 2 §3.1.1, §3.2.1).
#[derive(Default)]
struct Session {
    pin_verified: bool,
    /// The previous command was a successful VERIFY of the PIN (the 9C "PIN always" rule).
    pin_just_verified: bool,
    mgmt_authenticated: bool,
    mgmt_pending: Pending,
}

/// Command data collected from a chain (ISO/IEC 7816-4 §5.1.1.1) until its last command.
struct Chain {
    header: (u8, u8, u8),
    data: Zeroizing<Vec<u8>>,
}

impl PivCard {
    /// The card kept in `path`: loaded if the file exists, else a new card made from `options` and
    /// written there. The fault of `options` applies in both cases.
    pub fn open(path: &Path, options: &SimOptions) -> Result<PivCard, SimError> {
        let state = if path.exists() {
            CardState::load(path)?
        } else {
            let state = CardState::new(options)?;
            state.save(path)?;
            state
        };
        let mut card = PivCard::with_state(state, options.fault);
        card.path = Some(path.to_path_buf());
        card.profile = options.profile;
        Ok(card)
    }

    /// A new card that lives in memory only (in-process tests).
    pub fn in_memory(options: &SimOptions) -> Result<PivCard, SimError> {
        let mut card = PivCard::with_state(CardState::new(options)?, options.fault);
        card.profile = options.profile;
        Ok(card)
    }

    /// A card with the given state, not backed by a file, keeping to [`CardProfile::Specification`].
    pub fn with_state(state: CardState, fault: Option<Fault>) -> PivCard {
        PivCard {
            state,
            path: None,
            fault,
            profile: CardProfile::Specification,
            session: Session::default(),
            chain: None,
            pending: Vec::new(),
            pulled: false,
            signers: std::collections::HashMap::new(),
        }
    }

    /// The card's durable state (serial, certificates, public keys, counters).
    pub fn state(&self) -> &CardState {
        &self.state
    }

    /// The answer to reset.
    pub fn atr(&self) -> &'static [u8] {
        &ATR
    }

    /// True once a [`Fault::RemoveOnSign`] fired: the card is gone and answers nothing more.
    pub fn is_pulled(&self) -> bool {
        self.pulled
    }

    /// Power off, power on or warm reset: the security status (PIN verified, management key
    /// authenticated) and any half-done exchange are lost. ISO/IEC 7816-4 §5.4, security architecture:
    /// the security status is what was achieved since the answer to reset, so a reset starts it
    /// afresh; SP 800-73-4 Part 2 §3.2.1: a verified PIN stays verified until reset or deselection.
    pub fn reset(&mut self) {
        self.session = Session::default();
        self.chain = None;
        self.pending.clear();
    }

    /// Processes one command APDU and returns the response APDU (data and SW1 SW2). Never panics:
    /// malformed input gets a status word. After a [`Fault::RemoveOnSign`] fired the answer is empty.
    pub fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        if self.pulled {
            return Vec::new();
        }
        if self.fault == Some(Fault::NoApplication) {
            return sw_only(StatusWord::FileNotFound);
        }
        let cmd = match Command::parse(apdu) {
            Ok(cmd) => cmd,
            Err(_) => return sw_only(StatusWord::WrongLength),
        };
        // Only the interindustry class without secure messaging or logical channels; bit 0x10 is
        // chaining (ISO/IEC 7816-4 §5.1.1).
        if cmd.cla & !0x10 != 0 {
            self.pending.clear();
            return sw_only(StatusWord::ClaNotSupported);
        }
        if cmd.ins == 0xC0 {
            return self.get_response(&cmd);
        }
        self.pending.clear();
        let le = cmd.le;
        let cmd_header = (cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data.len());
        let reply = self.chain_and_dispatch(cmd);
        if self.pulled {
            return Vec::new();
        }
        let response = match reply {
            Ok(data) => self.deliver(data, le),
            Err(sw) => sw_only(sw),
        };
        // Header and status only: the data may be a PIN or a key.
        tracing::debug!(
            "{:02X} {:02X} {:02X} {:02X} Lc={} -> {:02X?}",
            cmd_header.0,
            cmd_header.1,
            cmd_header.2,
            cmd_header.3,
            cmd_header.4,
            response.get(response.len().saturating_sub(2)..)
        );
        response
    }

    fn chain_and_dispatch(&mut self, mut cmd: Command) -> Reply {
        let header = (cmd.ins, cmd.p1, cmd.p2);
        if cmd.is_chained() {
            let chain = match self.chain.take() {
                Some(chain) if chain.header == header => chain,
                // A chain of another command replaces an unfinished one.
                _ => Chain {
                    header,
                    data: Zeroizing::new(Vec::new()),
                },
            };
            return self.extend_chain(chain, &cmd.data);
        }
        if let Some(mut chain) = self.chain.take() {
            if chain.header == header {
                if chain.data.len() + cmd.data.len() > MAX_COMMAND_DATA {
                    return Err(StatusWord::WrongLength);
                }
                chain.data.extend_from_slice(&cmd.data);
                cmd.data = chain.data;
            }
            // Otherwise the unfinished chain is abandoned and this command stands alone.
        }
        // The "PIN always" permission lasts exactly one command.
        let pin_just_verified = std::mem::take(&mut self.session.pin_just_verified);
        self.dispatch(&cmd, pin_just_verified)
    }

    fn extend_chain(&mut self, mut chain: Chain, data: &[u8]) -> Reply {
        if chain.data.len() + data.len() > MAX_COMMAND_DATA {
            return Err(StatusWord::WrongLength);
        }
        chain.data.extend_from_slice(data);
        self.chain = Some(chain);
        Ok(Vec::new())
    }

    fn dispatch(&mut self, cmd: &Command, pin_just_verified: bool) -> Reply {
        match cmd.ins {
            0xA4 => self.select(cmd),
            0xCB => self.get_data(cmd),
            0xDB => self.put_data(cmd),
            0x20 => self.verify(cmd),
            0x24 => self.change_reference_data(cmd),
            0x2C => self.reset_retry_counter(cmd),
            0x87 => self.general_authenticate(cmd, pin_just_verified),
            0x47 => self.generate(cmd),
            // Yubico extensions that yubico-piv-tool needs before it talks PIV.
            0xFD => Ok(VERSION.to_vec()),
            0xF8 => Ok(self.state.serial().to_be_bytes().to_vec()),
            _ => Err(StatusWord::InsNotSupported),
        }
    }

    /// Sends at most Ne bytes and keeps the rest for GET RESPONSE (ISO/IEC 7816-4 §5.3.4: SW 61xx,
    /// xx = remaining bytes, 00 for 256 or more). An extended Le takes everything at once, up to what
    /// one vpcd message can carry.
    ///
    /// A command without Le expects no response data (ISO/IEC 7816-4 §5.1: Le field absent, Ne = 0;
    /// case 1 and case 3 commands), so data it produces is not sent along: the card answers `61xx`
    /// and the client fetches it with GET RESPONSE, as T=0 cards do. Clients that leave Le out and
    /// still expect data see the 61xx, where a lenient card would have hidden their mistake.
    fn deliver(&mut self, mut data: Vec<u8>, le: Option<usize>) -> Vec<u8> {
        let le = match (le, self.profile) {
            (Some(le), _) => Some(le),
            (None, CardProfile::YubiKey) => Some(SHORT_LE),
            (None, CardProfile::Specification) => None,
        };
        let Some(le) = le else {
            if data.is_empty() {
                return sw_only(StatusWord::Success);
            }
            let available = u8::try_from(data.len()).unwrap_or(0);
            self.pending = data;
            return sw_only(StatusWord::BytesRemaining(available));
        };
        let limit = le.clamp(1, MAX_RESPONSE_DATA);
        if data.len() > limit {
            self.pending = data.split_off(limit);
            let remaining = u8::try_from(self.pending.len()).unwrap_or(0);
            data.extend_from_slice(&StatusWord::BytesRemaining(remaining).to_u16().to_be_bytes());
            data
        } else {
            data.extend_from_slice(&StatusWord::Success.to_u16().to_be_bytes());
            data
        }
    }

    /// GET RESPONSE (ISO/IEC 7816-4 §7.6.1).
    fn get_response(&mut self, cmd: &Command) -> Vec<u8> {
        if cmd.p1 != 0 || cmd.p2 != 0 {
            return sw_only(StatusWord::IncorrectP1P2);
        }
        if self.pending.is_empty() {
            return sw_only(StatusWord::ConditionsNotSatisfied);
        }
        let data = std::mem::take(&mut self.pending);
        self.deliver(data, cmd.le)
    }

    /// SELECT by DF name (SP 800-73-4 Part 2 §3.1.1: P1 = 04, P2 = 00). The full AID or its
    /// right-truncated form without the version selects the PIV application (Part 1 §2.2), or under
    /// [`CardProfile::YubiKey`] any truncation down to the RID; any other AID deselects it, which
    /// drops the security status.
    fn select(&mut self, cmd: &Command) -> Reply {
        if (cmd.p1, cmd.p2) != (0x04, 0x00) {
            return Err(StatusWord::IncorrectP1P2);
        }
        let names_piv = match self.profile {
            CardProfile::Specification => {
                cmd.data.as_slice() == PIV_AID
                    || cmd.data.as_slice() == &PIV_AID[..TRUNCATED_AID_LEN]
            }
            CardProfile::YubiKey => {
                cmd.data.len() >= NIST_RID.len() && PIV_AID.starts_with(&cmd.data)
            }
        };
        if names_piv {
            objects::application_property_template().map_err(|_| SW_MEMORY_FAILURE)
        } else {
            self.session = Session::default();
            Err(StatusWord::FileNotFound)
        }
    }

    /// GET DATA (SP 800-73-4 Part 2 §3.1.2): `5C` with the object's tag in the data field.
    fn get_data(&mut self, cmd: &Command) -> Reply {
        if (cmd.p1, cmd.p2) != (0x3F, 0xFF) {
            return Err(StatusWord::IncorrectP1P2);
        }
        let tag = object_tag(&cmd.data)?;
        if tag == TAG_DISCOVERY {
            return objects::discovery().map_err(|_| SW_MEMORY_FAILURE);
        }
        // Part 1 Table 3: biometrics and printed information are readable after PIN only.
        if matches!(tag, 0x5FC103 | 0x5FC108 | 0x5FC109 | 0x5FC121) && !self.session.pin_verified {
            return Err(StatusWord::SecurityStatusNotSatisfied);
        }
        self.state.object(tag).ok_or(StatusWord::FileNotFound)
    }

    /// PUT DATA (SP 800-73-4 Part 2 §3.3.2): `5C` tag then `53` contents; needs the management key.
    /// An empty `53` deletes the object.
    fn put_data(&mut self, cmd: &Command) -> Reply {
        if (cmd.p1, cmd.p2) != (0x3F, 0xFF) {
            return Err(StatusWord::IncorrectP1P2);
        }
        if !self.session.mgmt_authenticated {
            return Err(StatusWord::SecurityStatusNotSatisfied);
        }
        let items = tlv::parse_all(&cmd.data).map_err(|_| StatusWord::IncorrectData)?;
        let (tag, value) = match items.as_slice() {
            [t, v] if t.tag == 0x5C && v.tag == 0x53 => (tag_value(t.value)?, v.value),
            _ => return Err(StatusWord::IncorrectData),
        };
        // PIV containers 5FC1xx and Yubico's proprietary 5FFFxx; the Discovery object is fixed.
        if !matches!(tag >> 8, 0x5FC1 | 0x5FFF) {
            return Err(StatusWord::IncorrectData);
        }
        if value.len() > MAX_OBJECT {
            return Err(StatusWord::NotEnoughMemory);
        }
        if value.is_empty() {
            self.state.remove_object(tag);
        } else {
            let object = tlv::encode(0x53, value).map_err(|_| StatusWord::IncorrectData)?;
            self.state.set_object(tag, &object);
        }
        self.persist()?;
        Ok(Vec::new())
    }

    /// VERIFY (SP 800-73-4 Part 2 §3.2.1) of the PIV PIN.
    fn verify(&mut self, cmd: &Command) -> Reply {
        if cmd.p2 != REF_PIN {
            return Err(if cmd.p2 == REF_PUK || cmd.p2 == 0x00 {
                StatusWord::ReferencedDataNotFound
            } else {
                StatusWord::IncorrectP1P2
            });
        }
        match (cmd.p1, cmd.data.is_empty()) {
            // P1 = FF, no data: reset the PIN's security status.
            (0xFF, true) => {
                self.session.pin_verified = false;
                return Ok(Vec::new());
            }
            (0x00, _) => {}
            _ => return Err(StatusWord::IncorrectP1P2),
        }
        let left = self.state.pin_retries_left();
        if cmd.data.is_empty() {
            // Status query: spends no try.
            return if left == 0 {
                Err(StatusWord::AuthMethodBlocked)
            } else if self.session.pin_verified {
                Ok(Vec::new())
            } else {
                Err(StatusWord::VerifyFailed { retries: left })
            };
        }
        if left == 0 {
            return Err(StatusWord::AuthMethodBlocked);
        }
        let pin = unpad(&cmd.data).ok_or(StatusWord::IncorrectData)?;
        if mgmt::constant_time_eq(pin, self.state.pin()) {
            if !self.state.pin_retries_full() {
                self.state.reset_pin_retries();
                self.persist()?;
            }
            self.session.pin_verified = true;
            self.session.pin_just_verified = true;
            Ok(Vec::new())
        } else {
            self.session.pin_verified = false;
            self.state.set_pin_retries_left(left - 1);
            self.persist()?;
            Err(StatusWord::VerifyFailed { retries: left - 1 })
        }
    }

    /// CHANGE REFERENCE DATA (Part 2 §3.2.2): old value (8 bytes, padded) then new value, for the PIN
    /// (80) or the PUK (81).
    fn change_reference_data(&mut self, cmd: &Command) -> Reply {
        if cmd.p1 != 0x00 {
            return Err(StatusWord::IncorrectP1P2);
        }
        let (old, new) = split_pair(&cmd.data)?;
        match cmd.p2 {
            REF_PIN => {
                self.check_pin(old)?;
                self.set_new_pin(new)?;
            }
            REF_PUK => {
                self.check_puk(old)?;
                let new = unpad(new).ok_or(StatusWord::IncorrectData)?;
                self.state
                    .set_puk(new)
                    .map_err(|_| StatusWord::IncorrectData)?;
                self.state.reset_puk_retries();
            }
            _ => return Err(StatusWord::ReferencedDataNotFound),
        }
        self.persist()?;
        Ok(Vec::new())
    }

    /// RESET RETRY COUNTER (Part 2 §3.2.3): PUK then new PIN; unblocks the PIN.
    fn reset_retry_counter(&mut self, cmd: &Command) -> Reply {
        if cmd.p1 != 0x00 {
            return Err(StatusWord::IncorrectP1P2);
        }
        if cmd.p2 != REF_PIN {
            return Err(StatusWord::ReferencedDataNotFound);
        }
        let (puk, new) = split_pair(&cmd.data)?;
        self.check_puk(puk)?;
        self.set_new_pin(new)?;
        self.persist()?;
        Ok(Vec::new())
    }

    /// Sets a new PIN (padded as it arrives in the command) with a full retry counter.
    fn set_new_pin(&mut self, padded: &[u8]) -> Result<(), StatusWord> {
        let new = unpad(padded).ok_or(StatusWord::IncorrectData)?;
        state::check_pin(new).map_err(|_| StatusWord::IncorrectData)?;
        self.state
            .set_pin(new)
            .map_err(|_| StatusWord::IncorrectData)?;
        self.state.reset_pin_retries();
        Ok(())
    }

    /// Checks the PIN for CHANGE REFERENCE DATA, spending a try when wrong.
    fn check_pin(&mut self, padded: &[u8]) -> Result<(), StatusWord> {
        let left = self.state.pin_retries_left();
        if left == 0 {
            return Err(StatusWord::AuthMethodBlocked);
        }
        let ok = unpad(padded).is_some_and(|p| mgmt::constant_time_eq(p, self.state.pin()));
        if ok {
            return Ok(());
        }
        self.session.pin_verified = false;
        self.state.set_pin_retries_left(left - 1);
        self.persist()?;
        Err(StatusWord::VerifyFailed { retries: left - 1 })
    }

    /// Checks the PUK, spending one of its own tries when wrong; a right PUK refills its counter.
    fn check_puk(&mut self, padded: &[u8]) -> Result<(), StatusWord> {
        let left = self.state.puk_retries_left();
        if left == 0 {
            return Err(StatusWord::AuthMethodBlocked);
        }
        let ok = unpad(padded).is_some_and(|p| mgmt::constant_time_eq(p, self.state.puk()));
        if ok {
            if !self.state.puk_retries_full() {
                self.state.reset_puk_retries();
            }
            return Ok(());
        }
        self.state.set_puk_retries_left(left - 1);
        self.persist()?;
        Err(StatusWord::VerifyFailed { retries: left - 1 })
    }

    /// GENERAL AUTHENTICATE (Part 2 §3.2.4): a signature with a slot key, or the management key
    /// exchanges.
    fn general_authenticate(&mut self, cmd: &Command, pin_just_verified: bool) -> Reply {
        let template = tlv::expect_one(&cmd.data, 0x7C).map_err(|_| StatusWord::IncorrectData)?;
        let items = tlv::parse_all(template).map_err(|_| StatusWord::IncorrectData)?;
        if cmd.p2 == REF_MGMT {
            if cmd.p1 != ALG_3DES {
                return Err(StatusWord::IncorrectP1P2);
            }
            return self.mgmt_authenticate(&items);
        }
        let slot = Slot::from_key_reference(cmd.p2).ok_or(StatusWord::IncorrectP1P2)?;
        let algorithm = self
            .state
            .key_algorithm(slot)
            .ok_or(StatusWord::ReferencedDataNotFound)?;
        if cmd.p1 != algorithm {
            return Err(StatusWord::IncorrectP1P2);
        }
        // SP 800-73-4 Part 1 Table 4b: 9E free, 9C PIN immediately before, 9A/9D PIN in the session.
        let allowed = match slot {
            Slot::CardAuthentication => true,
            Slot::Signature => self.session.pin_verified && pin_just_verified,
            Slot::Authentication | Slot::KeyManagement => self.session.pin_verified,
        };
        if !allowed {
            return Err(StatusWord::SecurityStatusNotSatisfied);
        }
        // 7C { 82 00, 81 <hash> }: an empty response placeholder and the challenge to sign.
        let response_empty = items.iter().any(|t| t.tag == 0x82 && t.value.is_empty());
        let challenge = items.iter().find(|t| t.tag == 0x81).map(|t| t.value);
        let hash = match challenge {
            Some(h) if response_empty && !h.is_empty() && h.len() <= 32 => h,
            _ => return Err(StatusWord::IncorrectData),
        };
        let key = match self.signers.get(&slot) {
            Some(k) => k.clone(),
            None => {
                let k = self
                    .state
                    .signing_key(slot)
                    .ok_or(StatusWord::ReferencedDataNotFound)?;
                self.signers.insert(slot, k.clone());
                k
            }
        };
        // Faults model a card that fails during a user's login signature. The 9E (card
        // authentication) signature that identifies a card at insertion is left alone, so the
        // daemon sees the card arrive before the fault strikes.
        let fault = self.fault.filter(|_| slot != Slot::CardAuthentication);
        match fault {
            Some(Fault::RemoveOnSign) => {
                self.pulled = true;
                return Ok(Vec::new());
            }
            Some(Fault::StallOnSign(d)) => std::thread::sleep(d),
            Some(Fault::NoApplication) | None => {}
        }
        let der = sign(&key, hash)?;
        tlv::encode(
            0x7C,
            &tlv::encode(0x82, &der).map_err(|_| SW_MEMORY_FAILURE)?,
        )
        .map_err(|_| SW_MEMORY_FAILURE)
    }

    /// The 9B exchanges of SP 800-73-4 Part 2 Appendix A: witness request (80 empty), witness
    /// answer with optional counter-challenge (80 W, 81 C), challenge request (81 empty) and
    /// challenge answer (82 E(C)).
    fn mgmt_authenticate(&mut self, items: &[tlv::Tlv<'_>]) -> Reply {
        let key = self.state.mgmt_key().ok_or(SW_MEMORY_FAILURE)?;
        let get = |tag: u32| items.iter().find(|t| t.tag == tag).map(|t| t.value);
        let pending = std::mem::take(&mut self.session.mgmt_pending);
        self.session.mgmt_authenticated = false;
        match (get(0x80), get(0x81), get(0x82)) {
            (Some([]), None, None) => {
                let witness = mgmt::random_block();
                let encrypted = mgmt::encrypt(&key, &witness);
                self.session.mgmt_pending = Pending::Witness(witness);
                encode_7c(0x80, &encrypted)
            }
            (Some(answer), challenge, None) if !answer.is_empty() => {
                let Pending::Witness(witness) = pending else {
                    return Err(StatusWord::ConditionsNotSatisfied);
                };
                if !mgmt::constant_time_eq(answer, witness.as_slice()) {
                    return Err(StatusWord::SecurityStatusNotSatisfied);
                }
                let reply = match challenge {
                    None => Vec::new(),
                    Some(c) => {
                        let block: [u8; mgmt::BLOCK] =
                            c.try_into().map_err(|_| StatusWord::IncorrectData)?;
                        encode_7c(0x82, &mgmt::encrypt(&key, &block))?
                    }
                };
                self.session.mgmt_authenticated = true;
                Ok(reply)
            }
            (None, Some([]), None) => {
                let challenge = mgmt::random_block();
                let reply = encode_7c(0x81, challenge.as_slice())?;
                self.session.mgmt_pending = Pending::Challenge(challenge);
                Ok(reply)
            }
            (None, None, Some(answer)) if !answer.is_empty() => {
                let Pending::Challenge(challenge) = pending else {
                    return Err(StatusWord::ConditionsNotSatisfied);
                };
                let expected = mgmt::encrypt(&key, &challenge);
                if !mgmt::constant_time_eq(answer, &expected) {
                    return Err(StatusWord::SecurityStatusNotSatisfied);
                }
                self.session.mgmt_authenticated = true;
                Ok(Vec::new())
            }
            _ => Err(StatusWord::IncorrectData),
        }
    }

    /// GENERATE ASYMMETRIC KEY PAIR (Part 2 §3.3.2): `AC { 80 alg }` → `7F49 { 86 04||X||Y }`.
    /// Yubico's PIN and touch policy tags (AA, AB) are accepted and ignored.
    fn generate(&mut self, cmd: &Command) -> Reply {
        if cmd.p1 != 0x00 {
            return Err(StatusWord::IncorrectP1P2);
        }
        let slot = Slot::from_key_reference(cmd.p2).ok_or(StatusWord::IncorrectP1P2)?;
        if !self.session.mgmt_authenticated {
            return Err(StatusWord::SecurityStatusNotSatisfied);
        }
        let template = tlv::expect_one(&cmd.data, 0xAC).map_err(|_| StatusWord::IncorrectData)?;
        let algorithm = tlv::find(template, 0x80)
            .map_err(|_| StatusWord::IncorrectData)?
            .ok_or(StatusWord::IncorrectData)?;
        if algorithm != [ALG_ECC_P256] {
            return Err(StatusWord::IncorrectData);
        }
        let key = SigningKey::random(&mut OsRng);
        let point = key.verifying_key().to_encoded_point(false);
        self.state.set_key(slot, &key);
        self.signers.remove(&slot);
        self.persist()?;
        let inner = tlv::encode(0x86, point.as_bytes()).map_err(|_| SW_MEMORY_FAILURE)?;
        tlv::encode(0x7F49, &inner).map_err(|_| SW_MEMORY_FAILURE)
    }

    /// Writes the state file, if there is one. A card that cannot store a counter must not answer
    /// as if it had.
    fn persist(&self) -> Result<(), StatusWord> {
        match &self.path {
            Some(path) => self.state.save(path).map_err(|e| {
                tracing::error!("cannot write card state {}: {e}", path.display());
                SW_MEMORY_FAILURE
            }),
            None => Ok(()),
        }
    }
}

impl tessera::transport::CardTransport for PivCard {
    /// In-process transport: the card never fails, except when a fault pulls it out.
    fn transmit(&mut self, command: &[u8]) -> tessera::Result<Vec<u8>> {
        let response = self.process(command);
        if self.pulled {
            Err(tessera::Error::DeviceRemoved)
        } else {
            Ok(response)
        }
    }
}

impl std::fmt::Debug for PivCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PivCard")
            .field("state", &self.state)
            .field("path", &self.path)
            .field("fault", &self.fault)
            .finish_non_exhaustive()
    }
}

/// Signs `hash` as is (left-padded to the field size like the integer it is, SP 800-73-4 Part 2
/// §3.2.4 leaves hashing to the client) and returns the DER ECDSA signature.
fn sign(key: &SigningKey, hash: &[u8]) -> Result<Vec<u8>, StatusWord> {
    let mut padded = [0u8; 32];
    let start = padded.len().saturating_sub(hash.len());
    padded
        .get_mut(start..)
        .ok_or(StatusWord::IncorrectData)?
        .copy_from_slice(hash);
    let signature: Signature = key
        .sign_prehash(&padded)
        .map_err(|_| StatusWord::IncorrectData)?;
    Ok(signature.to_der().as_bytes().to_vec())
}

fn encode_7c(tag: u32, value: &[u8]) -> Reply {
    let inner = tlv::encode(tag, value).map_err(|_| SW_MEMORY_FAILURE)?;
    tlv::encode(0x7C, &inner).map_err(|_| SW_MEMORY_FAILURE)
}

/// The tag named by a GET DATA field `5C len tag` (Part 2 §3.1.2).
fn object_tag(data: &[u8]) -> Result<u32, StatusWord> {
    let value = tlv::expect_one(data, 0x5C).map_err(|_| StatusWord::IncorrectData)?;
    tag_value(value)
}

fn tag_value(bytes: &[u8]) -> Result<u32, StatusWord> {
    if bytes.is_empty() || bytes.len() > 3 {
        return Err(StatusWord::IncorrectData);
    }
    Ok(bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// A PIN or PUK field: exactly 8 bytes, the value padded with FF (Part 2 §2.4.3).
fn unpad(field: &[u8]) -> Option<&[u8]> {
    if field.len() != 8 {
        return None;
    }
    let end = field.iter().position(|b| *b == 0xFF).unwrap_or(field.len());
    let (value, padding) = field.split_at(end);
    (padding.iter().all(|b| *b == 0xFF) && !value.is_empty()).then_some(value)
}

/// Two concatenated 8-byte reference data fields.
fn split_pair(data: &[u8]) -> Result<(&[u8], &[u8]), StatusWord> {
    if data.len() != 16 {
        return Err(StatusWord::IncorrectData);
    }
    Ok(data.split_at(8))
}

fn sw_only(sw: StatusWord) -> Vec<u8> {
    sw.to_u16().to_be_bytes().to_vec()
}
