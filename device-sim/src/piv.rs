//! A simulated PIV card application (NIST SP 800-73-4) at the APDU level: the card model
//! ([`PivCard`]), its durable state ([`CardState`]) and the options of a new card ([`SimOptions`]).

mod card;
mod mgmt;
mod objects;
mod state;

#[cfg(test)]
mod card_test;

use std::time::Duration;

use zeroize::Zeroizing;

pub use card::PivCard;
pub use objects::PIV_AID;
pub use state::{CardState, DEFAULT_MGMT_KEY};

/// PIV algorithm identifier of 3DES-ECB with a 24-byte key (SP 800-78-4 Table 6-2).
pub const ALG_3DES: u8 = 0x03;
/// PIV algorithm identifier of ECC P-256 (SP 800-78-4 Table 6-2).
pub const ALG_ECC_P256: u8 = 0x11;

/// How a new card is personalised and which test fault the simulator injects.
#[derive(Clone)]
pub struct SimOptions {
    /// PIN of a new card (6–8 digits). Ignored when the state file already exists.
    pub pin: Zeroizing<String>,
    /// PUK of a new card. Ignored when the state file already exists.
    pub puk: Zeroizing<String>,
    /// PIN retry counter of a new card (1–15). Ignored when the state file already exists.
    pub pin_retries: u8,
    /// A fault to inject, for the daemon's tests.
    pub fault: Option<Fault>,
    /// How strictly the card keeps to the specifications.
    pub profile: CardProfile,
}

impl Default for SimOptions {
    /// The well-known defaults: PIN 123456, PUK 12345678, 3 PIN retries, no fault.
    fn default() -> Self {
        SimOptions {
            pin: Zeroizing::new("123456".into()),
            puk: Zeroizing::new("12345678".into()),
            pin_retries: 3,
            fault: None,
            profile: CardProfile::Specification,
        }
    }
}

impl std::fmt::Debug for SimOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimOptions")
            .field("pin_retries", &self.pin_retries)
            .field("fault", &self.fault)
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// A fault injected when the card is asked for a signature (GENERAL AUTHENTICATE with a P-256 key)
/// by any slot but 9E (the card authentication key, which identifies the card at insertion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The card is pulled out instead of answering: the vpcd connection closes and the simulator exits.
    RemoveOnSign,
    /// The card thinks for this long before answering.
    StallOnSign(Duration),
    /// Not a signature fault: the card has no PIV application at all (every command answers 6A82,
    /// file not found), as a bank or SIM card in the reader would.
    NoApplication,
}

impl std::str::FromStr for Fault {
    type Err = SimError;

    /// `remove-on-sign`, `stall-on-sign=MILLIS` or `no-piv`.
    fn from_str(s: &str) -> Result<Self, SimError> {
        if s == "remove-on-sign" {
            return Ok(Fault::RemoveOnSign);
        }
        if s == "no-piv" {
            return Ok(Fault::NoApplication);
        }
        if let Some(ms) = s.strip_prefix("stall-on-sign=") {
            let ms: u64 = ms
                .parse()
                .map_err(|_| SimError::InvalidOption("stall-on-sign=MILLIS needs a number"))?;
            return Ok(Fault::StallOnSign(Duration::from_millis(ms)));
        }
        Err(SimError::InvalidOption(
            "unknown fault (remove-on-sign, stall-on-sign=MILLIS, no-piv)",
        ))
    }
}

/// How strictly the card keeps to the specifications where real cards differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardProfile {
    /// Exactly what the specifications say, as strict cards (Nitrokey's piv-authenticator) do, so
    /// a client taking a shortcut fails against the simulator too:
    /// - SELECT takes the full AID `A0 00 00 03 08 00 00 10 00 01 00` or its right-truncated form
    ///   without the version `A0 00 00 03 08 00 00 10 00` and nothing shorter (SP 800-73-4 Part 1
    ///   §2.2, Part 2 §3.1.1); the RID alone answers `6A82`;
    /// - a command without Le gets no response data (ISO/IEC 7816-4 §5.1, Ne = 0) but `61xx`, the
    ///   data waiting for GET RESPONSE.
    Specification,
    /// What YubiKeys accept besides: SELECT with any right truncation down to the NIST RID
    /// `A0 00 00 03 08`, and response data up to 256 bytes for a command without Le.
    /// yubico-piv-tool 2.2 relies on both (it selects with the RID and sends SELECT and GET DATA
    /// without Le), so the tests that use it as a witness need this profile.
    YubiKey,
}

impl std::str::FromStr for CardProfile {
    type Err = SimError;

    /// `spec` or `yubikey`.
    fn from_str(s: &str) -> Result<Self, SimError> {
        match s {
            "spec" => Ok(CardProfile::Specification),
            "yubikey" => Ok(CardProfile::YubiKey),
            _ => Err(SimError::InvalidOption(
                "unknown card profile (spec, yubikey)",
            )),
        }
    }
}

/// The key slots of SP 800-73-4 Part 1 Table 4b that the simulator implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// 9A, PIV Authentication: PIN once per session.
    Authentication,
    /// 9C, Digital Signature: PIN immediately before every use.
    Signature,
    /// 9D, Key Management: PIN once per session.
    KeyManagement,
    /// 9E, Card Authentication: no PIN.
    CardAuthentication,
}

impl Slot {
    /// All slots, in key-reference order.
    pub const ALL: [Slot; 4] = [
        Slot::Authentication,
        Slot::Signature,
        Slot::KeyManagement,
        Slot::CardAuthentication,
    ];

    /// The slot of a key reference (P2 of GENERAL AUTHENTICATE and GENERATE).
    pub fn from_key_reference(reference: u8) -> Option<Slot> {
        Slot::ALL
            .into_iter()
            .find(|s| s.key_reference() == reference)
    }

    /// The key reference (SP 800-73-4 Part 1 Table 4b).
    pub fn key_reference(self) -> u8 {
        match self {
            Slot::Authentication => 0x9A,
            Slot::Signature => 0x9C,
            Slot::KeyManagement => 0x9D,
            Slot::CardAuthentication => 0x9E,
        }
    }

    /// The tag of the slot's certificate container (SP 800-73-4 Part 1 Table 3).
    pub fn object_tag(self) -> u32 {
        match self {
            Slot::Authentication => 0x5FC105,
            Slot::Signature => 0x5FC10A,
            Slot::KeyManagement => 0x5FC10B,
            Slot::CardAuthentication => 0x5FC101,
        }
    }
}

/// Errors of the simulator outside the APDU path (which answers status words instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A command-line or personalisation value is not acceptable.
    #[error("invalid option: {0}")]
    InvalidOption(&'static str),
    /// The state file is unreadable or inconsistent: remove it to start with a new card.
    #[error("card state: {0}")]
    State(String),
    /// Building a certificate failed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// Encoding a data object failed.
    #[error("encoding: {0}")]
    Tlv(#[from] tessera::iso7816::tlv::TlvError),
    /// An operating-system error.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}
