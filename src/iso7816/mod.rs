//! ISO/IEC 7816-4 for every applet over PC/SC: command and response APDUs, BER-TLV.

pub mod apdu;
pub mod tlv;
