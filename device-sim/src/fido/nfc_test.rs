//! Tests of `nfc.rs`: the FIDO applet's APDU rules (CTAP 2.1 §11.3, ISO/IEC 7816-4 §5.1).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::nfc::{contactless_atr, FidoCard, FIDO_AID};
use super::presence::KeyHandle;
use super::touch::{TouchMode, TouchSource};
use super::{FidoKey, FidoOptions};
use crate::vpcd::VirtualCard;

fn card_with(options: FidoOptions, mode: TouchMode) -> (FidoCard, TouchSource) {
    let touch = TouchSource::new(mode);
    let key = FidoKey::in_memory(options);
    let (handle, _) =
        KeyHandle::spawn(key, touch.clone(), Arc::new(AtomicBool::new(false))).unwrap();
    (FidoCard::new(handle), touch)
}

fn card() -> FidoCard {
    card_with(FidoOptions::default(), TouchMode::Auto).0
}

fn select_apdu() -> Vec<u8> {
    [&[0x00, 0xA4, 0x04, 0x00, 0x08][..], &FIDO_AID, &[0x00]].concat()
}

fn sw(response: &[u8]) -> [u8; 2] {
    [response[response.len() - 2], response[response.len() - 1]]
}

#[test]
fn atr_has_the_pcsc_contactless_form() {
    let atr = contactless_atr(b"ABC");
    assert_eq!(&atr[..4], &[0x3B, 0x83, 0x80, 0x01]);
    assert_eq!(&atr[4..7], b"ABC");
    assert_eq!(atr[1..].iter().fold(0, |x, b| x ^ b), 0, "TCK");
    let real = card().atr();
    assert_eq!(real[0], 0x3B);
    assert_eq!(real[1] & 0xF0, 0x80);
    assert_eq!(&real[2..4], &[0x80, 0x01]);
    assert_eq!(usize::from(real[1] & 0x0F) + 5, real.len());
}

#[test]
fn nothing_before_select_and_only_the_exact_aid() {
    let mut c = card();
    assert_eq!(
        c.process(&[0x80, 0x10, 0x00, 0x00, 0x01, 0x04, 0x00]),
        [0x69, 0x85]
    );
    assert_eq!(c.process(&[0x00, 0x03, 0x00, 0x00, 0x00]), [0x69, 0x85]);
    // A right-truncated AID does not select (CTAP 2.1 §11.3.3 names the full AID).
    let truncated = [&[0x00, 0xA4, 0x04, 0x00, 0x07][..], &FIDO_AID[..7], &[0x00]].concat();
    assert_eq!(c.process(&truncated), [0x6A, 0x82]);
    assert_eq!(c.process(&select_apdu()), b"FIDO_2_0\x90\x00");
    // Another AID deselects.
    assert_eq!(
        c.process(&[0x00, 0xA4, 0x04, 0x00, 0x02, 0xA0, 0x00, 0x00]),
        [0x6A, 0x82]
    );
    assert_eq!(
        c.process(&[0x80, 0x10, 0x00, 0x00, 0x01, 0x04, 0x00]),
        [0x69, 0x85]
    );
    // SELECT without Le: the version waits behind 61 08 (a case 3 command gets no data).
    assert_eq!(c.process(&select_apdu()[..13]), [0x61, 0x08]);
    assert_eq!(
        c.process(&[0x00, 0xC0, 0x00, 0x00, 0x08]),
        b"FIDO_2_0\x90\x00"
    );
    // Reset deselects.
    c.reset();
    assert_eq!(
        c.process(&[0x80, 0x10, 0x00, 0x00, 0x01, 0x04, 0x00]),
        [0x69, 0x85]
    );
}

#[test]
fn get_info_short_extended_and_through_get_response() {
    let mut c = card();
    c.process(&select_apdu());
    let direct = c.process(&[0x80, 0x10, 0x00, 0x00, 0x01, 0x04, 0x00]);
    assert_eq!(sw(&direct), [0x90, 0x00]);
    assert_eq!(direct[0], 0x00, "CTAP2_OK");
    let info = direct[..direct.len() - 2].to_vec();
    // P1 80: answered at once when the key is quick.
    assert_eq!(
        c.process(&[0x80, 0x10, 0x80, 0x00, 0x01, 0x04, 0x00]),
        direct
    );
    // Extended Lc and Le.
    assert_eq!(
        c.process(&[0x80, 0x10, 0x00, 0x00, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00]),
        direct
    );
    // Le 16: 16 bytes at a time through GET RESPONSE.
    let mut got = c.process(&[0x80, 0x10, 0x00, 0x00, 0x01, 0x04, 0x10]);
    let mut all = Vec::new();
    loop {
        let (data, status) = got.split_at(got.len() - 2);
        all.extend_from_slice(data);
        if status[0] != 0x61 {
            assert_eq!(status, [0x90, 0x00]);
            break;
        }
        got = c.process(&[0x00, 0xC0, 0x00, 0x00, 0x10]);
    }
    assert_eq!(all, info);
    assert_eq!(
        c.process(&[0x00, 0xC0, 0x00, 0x00, 0x10]),
        [0x69, 0x85],
        "nothing left"
    );
}

#[test]
fn command_chaining() {
    let mut c = card();
    c.process(&select_apdu());
    // getInfo split in two links: 04 | (nothing more): a chained link, then the last.
    assert_eq!(
        c.process(&[0x90, 0x10, 0x00, 0x00, 0x01, 0x04]),
        [0x90, 0x00]
    );
    let last = c.process(&[0x80, 0x10, 0x00, 0x00, 0x00]);
    assert_eq!(last[0], 0x00);
    assert_eq!(sw(&last), [0x90, 0x00]);
    // A different command in the middle of a chain.
    assert_eq!(
        c.process(&[0x90, 0x10, 0x00, 0x00, 0x01, 0x04]),
        [0x90, 0x00]
    );
    assert_eq!(c.process(&[0x80, 0x11, 0x00, 0x00, 0x00]), [0x68, 0x83]);
}

#[test]
fn malformed_apdus_and_unknown_instructions() {
    let mut c = card();
    c.process(&select_apdu());
    assert_eq!(c.process(&[0x80, 0x10]), [0x67, 0x00]);
    assert_eq!(
        c.process(&[0x80, 0x10, 0x00, 0x00, 0x05, 0x04]),
        [0x67, 0x00]
    );
    assert_eq!(
        c.process(&[0x80, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00]),
        [0x67, 0x00],
        "extended Lc 0"
    );
    assert_eq!(
        c.process(&[0x80, 0x10, 0x00, 0x00, 0x00]),
        [0x67, 0x00],
        "NFCCTAP_MSG without data"
    );
    assert_eq!(
        c.process(&[0x80, 0x10, 0x42, 0x00, 0x01, 0x04, 0x00]),
        [0x6A, 0x86]
    );
    assert_eq!(c.process(&[0x80, 0x42, 0x00, 0x00, 0x00]), [0x6D, 0x00]);
    assert_eq!(c.process(&[0x40, 0x10, 0x00, 0x00, 0x00]), [0x6E, 0x00]);
    assert_eq!(
        c.process(&[0x80, 0x11, 0x00, 0x00, 0x00]),
        [0x69, 0x85],
        "nothing running"
    );
}

#[test]
fn waiting_for_a_touch_reports_status_and_cancels() {
    let (mut c, touch) = card_with(FidoOptions::default(), TouchMode::Manual);
    c.process(&select_apdu());
    // authenticatorSelection (CTAP 2.1 §6.9) waits for a touch: 9100 with status 02 (UP needed).
    assert_eq!(
        c.process(&[0x80, 0x10, 0x80, 0x00, 0x01, 0x0B, 0x00]),
        [0x02, 0x91, 0x00]
    );
    assert_eq!(
        c.process(&[0x80, 0x11, 0x00, 0x00, 0x00]),
        [0x02, 0x91, 0x00]
    );
    // P1 11: cancel; the key answers CTAP2_ERR_KEEPALIVE_CANCEL.
    let mut r = c.process(&[0x80, 0x11, 0x11, 0x00, 0x00]);
    for _ in 0..20 {
        if sw(&r) == [0x90, 0x00] {
            break;
        }
        r = c.process(&[0x80, 0x11, 0x00, 0x00, 0x00]);
    }
    assert_eq!(r, [0x2D, 0x90, 0x00]);
    // And a touch lets it through.
    assert_eq!(
        c.process(&[0x80, 0x10, 0x80, 0x00, 0x01, 0x0B, 0x00]),
        [0x02, 0x91, 0x00]
    );
    assert!(touch.touch(Duration::from_secs(5)));
    assert_eq!(
        c.process(&[0x80, 0x11, 0x00, 0x00, 0x00]),
        [0x00, 0x90, 0x00]
    );
}

#[test]
fn u2f_only_key_selects_as_u2f_v2_and_speaks_u2f() {
    let options = FidoOptions {
        u2f_only: true,
        ..FidoOptions::default()
    };
    let (mut c, _) = card_with(options, TouchMode::Auto);
    assert_eq!(c.process(&select_apdu()), b"U2F_V2\x90\x00");
    assert_eq!(
        c.process(&[0x80, 0x10, 0x00, 0x00, 0x01, 0x04, 0x00]),
        [0x6D, 0x00]
    );
    // U2F VERSION (U2F raw message formats §6), short and extended.
    assert_eq!(
        c.process(&[0x00, 0x03, 0x00, 0x00, 0x00]),
        b"U2F_V2\x90\x00"
    );
    assert_eq!(
        c.process(&[0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00]),
        b"U2F_V2\x90\x00"
    );
}
