//! STUB of simcore's contract (BRIEF.md "The simulated key"), so simio's transports compile before
//! branch `simcore` lands; replaced by simcore's file at the merge.

pub mod ctaphid;
pub mod hid_socket;
pub mod nfc;
pub mod presence;
pub mod touch;

#[cfg(test)]
mod ctaphid_test;
#[cfg(test)]
mod hid_socket_test;
#[cfg(test)]
mod nfc_test;

use std::path::Path;

/// Options of a new key.
#[derive(Debug, Clone)]
pub struct FidoOptions {
    pub pin: Option<String>,
    pub retries: u8,
    pub u2f_only: bool,
    pub aaguid: [u8; 16],
    pub algorithms: Vec<i64>,
    pub fault: Option<FidoFault>,
}

impl Default for FidoOptions {
    fn default() -> Self {
        FidoOptions {
            pin: Some("123456".into()),
            retries: 8,
            u2f_only: false,
            aaguid: [0; 16],
            algorithms: vec![-7],
            fault: None,
        }
    }
}

/// Test faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FidoFault {
    StallOnSign(u64),
    RemoveOnSign,
    CounterRegression,
    MalformedCbor,
    TruncatedMessage,
    OversizedMessage,
}

/// Outcome of waiting for a touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    Touched,
    Cancelled,
    TimedOut,
}

/// User presence as the transport provides it.
pub trait Presence {
    fn wait_for_touch(&mut self) -> Touch;
    fn touched_now(&mut self) -> bool;
}

/// The stub key: answers every CBOR command CTAP1_ERR_INVALID_COMMAND and every APDU 6D00.
pub struct FidoKey {
    options: FidoOptions,
}

impl FidoKey {
    pub fn open(_state: &Path, options: FidoOptions) -> anyhow::Result<FidoKey> {
        Ok(FidoKey { options })
    }
    pub fn in_memory(options: FidoOptions) -> FidoKey {
        FidoKey { options }
    }
    pub fn cbor(&mut self, request: &[u8], presence: &mut dyn Presence) -> Vec<u8> {
        // getInfo-less stub; selection waits for a touch so the transports can be tested.
        match request.first() {
            Some(0x0B) => match presence.wait_for_touch() {
                Touch::Touched => vec![0x00],
                Touch::Cancelled => vec![0x2D],
                Touch::TimedOut => vec![0x2F],
            },
            _ => vec![0x01],
        }
    }
    pub fn u2f(&mut self, _apdu: &[u8], _presence: &mut dyn Presence) -> Vec<u8> {
        vec![0x6D, 0x00]
    }
    pub fn power_cycle(&mut self) {}
    pub fn speaks_cbor(&self) -> bool {
        !self.options.u2f_only
    }
    pub fn fault(&self) -> Option<&FidoFault> {
        self.options.fault.as_ref()
    }
}
