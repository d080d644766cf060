//! ISO/IEC 7816-4 for every applet over PC/SC: command and response APDUs, whole-command exchanges
//! (chaining, GET RESPONSE, extended lengths), applet probing, BER-TLV.

pub mod apdu;
pub mod applets;
pub mod exchange;
pub mod tlv;
