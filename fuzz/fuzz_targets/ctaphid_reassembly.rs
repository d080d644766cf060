//! A hostile security key under CTAPHID (`tessera::fido::ctaphid`): every input report comes from
//! the fuzz input (one frame per report, cut or zero-padded to 64 bytes, see
//! `tessera_fuzz::frames`). A frame that answers CTAPHID_INIT on the broadcast channel gets the
//! nonce of the INIT just written, so the fuzzer gets past channel allocation and reaches the
//! reassembly of answers, keepalives, errors, cancels and stale reports.
//!
//! Tessera must never panic, never write a report that is not a well-formed CTAPHID packet, and
//! stop when the reports run out (the key is gone) or at its deadline.
#![no_main]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tessera::cancel::CancelToken;
use tessera::fido::ctaphid::CtapHid;
use tessera::fido::link::{CtapLink, Keepalive, LinkContext, MAX_CTAPHID_MESSAGE};
use tessera::transport::{HidTransport, HID_REPORT_LEN};
use tessera::{Error, Result};
use tessera_fuzz::frames;

type Report = [u8; HID_REPORT_LEN];

/// Owns its reports: a `CtapHid` takes a `'static` transport.
struct HostileKey {
    reports: VecDeque<Vec<u8>>,
    /// The nonce of the last CTAPHID_INIT written.
    nonce: [u8; 8],
    written: usize,
}

impl HidTransport for HostileKey {
    fn write_report(&mut self, report: &Report) -> Result<()> {
        self.written += 1;
        // Each request is sent again only a bounded number of times (busy back-off, one re-INIT),
        // each time in at most 129 packets.
        assert!(self.written < 4096, "Tessera keeps writing");
        if report[4] == 0x86 {
            assert_eq!(
                &report[..4],
                &[0xFF; 4],
                "INIT not on the broadcast channel"
            );
            self.nonce.copy_from_slice(&report[7..15]);
        }
        if report[4] & 0x80 != 0 {
            let len = usize::from(u16::from_be_bytes([report[5], report[6]]));
            assert!(len <= MAX_CTAPHID_MESSAGE, "a message over the maximum");
        }
        Ok(())
    }

    fn read_report(&mut self, _timeout: Duration) -> Result<Option<Report>> {
        let frame = self.reports.pop_front().ok_or(Error::DeviceRemoved)?;
        let mut report = [0u8; HID_REPORT_LEN];
        let n = frame.len().min(HID_REPORT_LEN);
        report[..n].copy_from_slice(&frame[..n]);
        if report[..5] == [0xFF, 0xFF, 0xFF, 0xFF, 0x86] {
            report[7..15].copy_from_slice(&self.nonce);
        }
        Ok(Some(report))
    }
}

fuzz_target!(|data: &[u8]| {
    let key = HostileKey {
        reports: frames(data).map(<[u8]>::to_vec).collect(),
        nonce: [0; 8],
        written: 0,
    };
    let mut link = CtapHid::new(Box::new(key));
    let _ = link.capabilities();
    let long: Vec<u8> = (0..600u32).map(|i| i as u8).collect();
    let cancel = CancelToken::new();
    let mut keepalives = 0;
    // The third keepalive cancels, so the cancel path sees hostile answers too.
    let mut on_keepalive = |_: Keepalive| {
        keepalives += 1;
        if keepalives == 3 {
            cancel.cancel();
        }
    };
    let mut ctx = LinkContext {
        cancel: &cancel,
        deadline: Instant::now() + Duration::from_millis(50),
        keepalive: &mut on_keepalive,
    };
    if let Ok(answer) = link.cbor(&[0x04], &mut ctx) {
        assert!(!answer.is_empty() && answer.len() <= MAX_CTAPHID_MESSAGE);
    }
    let _ = link.ping(&long, &mut ctx);
    let _ = link.msg(
        &[0x00, 0x02, 0x07, 0x00, 0x00, 0x00, 0x01, 0xAA, 0x00, 0x00],
        &mut ctx,
    );
});
