//! Tests of `nfc.rs`.
