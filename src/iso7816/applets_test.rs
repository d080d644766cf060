#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::transport::scripted::{hex, RemovedCard, ScriptedCard};
use crate::Error;

const SELECT_FIDO: &str = "00A40400 08 A0000006472F0001 00";
const SELECT_PIV: &str = "00A40400 09 A00000030800001000 00";

/// The card's answers in hex, and the applets found.
type ProbeCase = (&'static [(&'static str, &'static str)], &'static [Applet]);

#[test]
fn aids_and_kinds() {
    assert_eq!(FIDO_AID, hex("A0000006472F0001").as_slice());
    assert_eq!(PIV_AID, hex("A000000308 00001000").as_slice());
    assert_eq!(Applet::Piv.kind(), "piv");
    assert_eq!(Applet::Fido.kind(), "fido");
    assert_eq!(
        select_command(&FIDO_AID).to_bytes().unwrap().to_vec(),
        hex(SELECT_FIDO)
    );
}

/// Each applet is asked once, FIDO then PIV; only `9000` counts, after GET RESPONSE.
#[test]
fn probe_reports_the_applets_that_answer() {
    let table: [ProbeCase; 6] = [
        (&[(SELECT_FIDO, "6A82"), (SELECT_PIV, "6A82")], &[]),
        (
            &[
                (SELECT_FIDO, "6A82"),
                (SELECT_PIV, "6102"),
                ("00C00000 02", "6100 9000"),
            ],
            &[Applet::Piv],
        ),
        (
            &[(SELECT_FIDO, "5532465F5632 9000"), (SELECT_PIV, "6D00")],
            &[Applet::Fido],
        ),
        (
            &[(SELECT_FIDO, "4649444F5F325F30 9000"), (SELECT_PIV, "9000")],
            &[Applet::Fido, Applet::Piv],
        ),
        // A warning is not a selected applet.
        (&[(SELECT_FIDO, "6E00"), (SELECT_PIV, "6283")], &[]),
        (&[(SELECT_FIDO, "6999"), (SELECT_PIV, "6A81")], &[]),
    ];
    for (script, want) in table {
        let mut card = ScriptedCard::new(script);
        assert_eq!(probe(&mut card).unwrap(), want, "{script:?}");
        card.assert_done();
    }
}

#[test]
fn probe_passes_transport_errors_on() {
    assert!(matches!(probe(&mut RemovedCard), Err(Error::DeviceRemoved)));
}
