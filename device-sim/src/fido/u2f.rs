//! U2F raw messages (FIDO U2F Raw Message Formats v1.2).

use super::{FidoKey, Presence};

pub(super) fn dispatch(_key: &mut FidoKey, _apdu: &[u8], _presence: &mut dyn Presence) -> Vec<u8> {
    vec![0x6D, 0x00]
}
