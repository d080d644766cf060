//! Writes the seed corpus, `fuzz/seeds/<target>/`, from Tessera's own test vectors and from a real
//! session with the simulated card. Run it after changing a parser's test vectors or the simulator:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds
//! ```
//!
//! Sources: the hex vectors of `src/iso7816/apdu_test.rs`, `src/iso7816/tlv_test.rs` and
//! `src/piv/piv_test.rs`, the TOML texts of `src/policy/config_test.rs` and `tessera.toml.example`; the commands and answers of
//! `tessera_fuzz::drive_piv` against `tessera-sim`'s in-memory card (also the card's certificates);
//! tokens signed by `tessera_fuzz::fixed_ring`; security-key answers and authenticator data in the
//! shapes of `src/fido/**/*_test.rs` (see `fido_seeds`). File names are the source and an index, so a rerun
//! rewrites the same files.

use std::fs;
use std::path::{Path, PathBuf};

use tessera::iso7816::apdu::Response;
use tessera::token::{Claims, Confirmation};
use tessera::transport::CardTransport;
use tessera_fuzz::{drive_piv, encode_frames, fixed_ring, jws_header, sign_jws};
use tessera_sim::piv::{PivCard, SimOptions};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = fuzz.join("..");
    let seeds = Seeds(fuzz.join("seeds"));

    let apdu_vectors = hex_literals(&root.join("src/iso7816/apdu_test.rs"))?;
    let tlv_vectors = hex_literals(&root.join("src/iso7816/tlv_test.rs"))?;
    let piv_vectors = hex_literals(&root.join("src/piv/piv_test.rs"))?;
    for (target, vectors) in [
        ("apdu_command", &apdu_vectors),
        ("apdu_response", &apdu_vectors),
        ("apdu_response", &piv_vectors),
        ("tlv", &tlv_vectors),
        ("tlv", &piv_vectors),
    ] {
        seeds.write_all(target, "test", vectors)?;
    }
    seeds.write_all(
        "sim_apdu",
        "apdu_test",
        apdu_vectors.iter().map(|v| encode_frames([&v[..]])),
    )?;

    // One session of every PIV operation against the simulator, recorded both ways.
    let mut card = Recorder {
        card: PivCard::in_memory(&SimOptions::default())?,
        commands: Vec::new(),
        answers: Vec::new(),
    };
    drive_piv(&mut card)?;
    let commands: Vec<&[u8]> = card.commands.iter().map(Vec::as_slice).collect();
    let answers: Vec<&[u8]> = card.answers.iter().map(Vec::as_slice).collect();
    seeds.write(
        "piv_card_answers",
        "session",
        &encode_frames(answers.iter().copied()),
    )?;
    // The same answers under the bare exchange layer: 61xx, 6Cxx and 9000 in realistic places.
    seeds.write(
        "exchange_answers",
        "session",
        &encode_frames(answers.iter().copied()),
    )?;
    seeds.write(
        "sim_apdu",
        "session",
        &encode_frames(commands.iter().copied()),
    )?;
    let power_on_atr: [&[u8]; 2] = [&[0x01], &[0x04]];
    seeds.write(
        "vpcd_stream",
        "session",
        &encode_frames(power_on_atr.into_iter().chain(commands.iter().copied())),
    )?;
    seeds.write_all("apdu_command", "session", &card.commands)?;
    seeds.write_all("apdu_response", "session", &card.answers)?;
    let bodies = card
        .answers
        .iter()
        .filter_map(|a| Response::parse(a).ok())
        .map(|r| r.data);
    seeds.write_all("tlv", "session", bodies.filter(|d| !d.is_empty()))?;
    let certs = tessera::piv::Slot::ALL.iter().filter_map(|&slot| {
        let sim_slot = tessera_sim::piv::Slot::from_key_reference(slot.key_reference())?;
        card.card.state().certificate(sim_slot)
    });
    seeds.write_all("cert", "sim", certs)?;

    // Tokens: a valid one (mode 0), its claims (mode 1), header and claims (mode 2).
    let (ring, key) = fixed_ring()?;
    let claims = sample_claims();
    let token = ring.sign(&claims)?;
    let json = serde_json::to_vec(&claims)?;
    let header = jws_header(&key);
    let with_mode = |mode: u8, body: &[u8]| [&[mode][..], body].concat();
    seeds.write("jwt", "valid", &with_mode(0, token.as_bytes()))?;
    seeds.write("jwt", "claims", &with_mode(1, &json))?;
    seeds.write(
        "jwt",
        "header-claims",
        &with_mode(2, &[header.as_bytes(), &[0], &json].concat()),
    )?;
    let unsigned = sign_jws(&key, br#"{"alg":"none","typ":"JWT"}"#, &json);
    seeds.write("jwt", "alg-none", &with_mode(0, unsigned.as_bytes()))?;

    // Configuration texts.
    let mut configs = raw_strings(&root.join("src/policy/config_test.rs"))?;
    configs.push(fs::read(root.join("tessera.toml.example"))?);
    seeds.write_all("config", "test", &configs)?;

    fido_seeds(&seeds)?;
    transport_seeds(&seeds)?;
    Ok(())
}

/// Key answers for `ctaphid_reassembly` (HID reports, built with Tessera's own CTAPHID framing) and
/// applet answers for `nfc_framing` (response APDUs), in the shapes of `src/fido/ctaphid_test.rs`
/// and `src/fido/nfc_test.rs`: direct answers, multi-packet and chained ones, keepalives and status
/// updates, busy and invalid-channel errors, the 6D00 quirk, 61xx.
fn transport_seeds(seeds: &Seeds) -> Result<()> {
    use tessera::fido::ctaphid::framing::{cmd, packets, BROADCAST_CID};

    const CID: u32 = 0x0102_0304;
    let message = |cid: u32, command: u8, payload: &[u8]| -> Result<Vec<Vec<u8>>> {
        Ok(packets(cid, command, payload)?
            .iter()
            .map(|r| r.to_vec())
            .collect())
    };
    // The nonce is filled in by the target; CID, protocol 2, version 5.4.3, CBOR | WINK.
    let mut init_answer = vec![0u8; 8];
    init_answer.extend_from_slice(&CID.to_be_bytes());
    init_answer.extend_from_slice(&[2, 5, 4, 3, 0x05]);
    let init = message(BROADCAST_CID, cmd::INIT, &init_answer)?;
    let long: Vec<u8> = (0..600u32).map(|i| i as u8).collect();
    let get_info = message(CID, cmd::CBOR, &[0x00, 0xA1, 0x01, 0x81, 0x66])?;
    let sessions: Vec<(&str, Vec<Vec<Vec<u8>>>)> = vec![
        (
            "answers",
            vec![
                init.clone(),
                get_info.clone(),
                message(CID, cmd::PING, &long)?,
                message(CID, cmd::MSG, &[0x69, 0x85])?,
            ],
        ),
        (
            "keepalive-cancel",
            vec![
                init.clone(),
                message(CID, cmd::KEEPALIVE, &[0x01])?,
                message(CID, cmd::KEEPALIVE, &[0x02])?,
                message(CID, cmd::KEEPALIVE, &[0x02])?,
                message(CID, cmd::CBOR, &[0x2D])?,
            ],
        ),
        (
            "busy",
            vec![
                init.clone(),
                message(CID, cmd::ERROR, &[0x06])?,
                get_info.clone(),
            ],
        ),
        (
            "invalid-channel",
            vec![
                init.clone(),
                message(CID, cmd::ERROR, &[0x0B])?,
                init.clone(),
                get_info.clone(),
            ],
        ),
        (
            "other-channel",
            vec![
                init.clone(),
                message(0x0A0B_0C0D, cmd::CBOR, &long)?,
                get_info,
            ],
        ),
    ];
    for (name, messages) in sessions {
        let reports: Vec<Vec<u8>> = messages.into_iter().flatten().collect();
        seeds.write(
            "ctaphid_reassembly",
            name,
            &encode_frames(reports.iter().map(Vec::as_slice)),
        )?;
    }

    let h = |s: &str| -> Result<Vec<u8>> { Ok(hex::decode(s.replace(' ', ""))?) };
    let fido_2_0 = h("46 49 44 4F 5F 32 5F 30 90 00")?;
    let u2f_v2 = h("55 32 46 5F 56 32 90 00")?;
    let ok = h("90 00")?;
    let get_info = h("00 A1 01 81 66 90 00")?;
    let mut long_answer = vec![0x00; 256];
    long_answer.extend_from_slice(&h("61 10")?);
    let applets: Vec<(&str, Vec<Vec<u8>>)> = vec![
        // SELECT, GetInfo, the long request in three chained pieces, the U2F APDU.
        (
            "direct",
            vec![
                fido_2_0.clone(),
                get_info.clone(),
                ok.clone(),
                ok.clone(),
                get_info.clone(),
                h("69 85")?,
            ],
        ),
        (
            "status-updates",
            vec![
                fido_2_0.clone(),
                h("01 91 00")?,
                h("02 91 00")?,
                get_info.clone(),
            ],
        ),
        (
            "p1-quirk",
            vec![fido_2_0.clone(), h("6D 00")?, get_info.clone()],
        ),
        (
            "getresponse-quirk",
            vec![
                fido_2_0.clone(),
                h("01 91 00")?,
                h("6D 00")?,
                get_info.clone(),
            ],
        ),
        (
            "u2f-v2-probed",
            vec![u2f_v2.clone(), get_info.clone(), get_info.clone()],
        ),
        (
            "u2f-only",
            vec![
                u2f_v2,
                h("6D 00")?,
                h("6D 00")?,
                h("6D 00")?,
                h("6D 00")?,
                h("90 00")?,
            ],
        ),
        (
            "get-response",
            vec![fido_2_0, long_answer, [vec![0; 16], ok].concat()],
        ),
    ];
    for (name, answers) in applets {
        seeds.write(
            "nfc_framing",
            name,
            &encode_frames(answers.iter().map(Vec::as_slice)),
        )?;
    }
    Ok(())
}

/// Security-key answers for `ctap2_responses` (first byte: which decoder, as the target reads it)
/// and authenticator data for `authdata`, in the shapes of `src/fido/**/*_test.rs`: built with
/// Tessera's own encoder where it has one, written out in hex where the tests do.
fn fido_seeds(seeds: &Seeds) -> Result<()> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use tessera::fido::authdata::{
        AttestedCredentialData, AuthenticatorData, CredentialPublicKey, Flags,
    };

    let key = p256::SecretKey::from_slice(&[0x44; 32])?.public_key();
    let mut with_credential = AuthenticatorData {
        rp_id_hash: tessera::fido::authdata::rp_id_hash("pam://tessera"),
        flags: Flags(Flags::UP | Flags::UV),
        sign_count: 7,
        attested_credential: Some(AttestedCredentialData {
            aaguid: [0xAA; 16],
            credential_id: vec![0xC0; 16],
            public_key: CredentialPublicKey::Es256(key),
        }),
        extensions: None,
    };
    let registered = with_credential.to_bytes()?;
    with_credential.attested_credential = None;
    let asserted = with_credential.to_bytes()?;
    seeds.write("authdata", "registered", &registered)?;
    seeds.write("authdata", "asserted", &asserted)?;
    // rpIdHash ‖ flags UP|ED ‖ counter ‖ {"credProtect": 2}
    let mut with_extensions = asserted.clone();
    with_extensions[32] |= Flags::ED;
    with_extensions.extend(hex::decode("a16b6372656450726f7465637402")?);
    seeds.write("authdata", "extensions", &with_extensions)?;

    // The COSE key of the registered credential (after rpIdHash, flags, counter, aaguid, L, id).
    let cose_key = &registered[37 + 16 + 2 + 16..];
    // {"id": h'01', "type": "public-key"}
    let descriptor = hex::decode("a2626964410164747970656a7075626c69632d6b6579")?;
    let bstr = |b: &[u8]| -> Result<Vec<u8>> {
        let len = u8::try_from(b.len())?;
        Ok([&[0x58, len][..], b].concat())
    };
    // 05 ‖ public key ‖ L ‖ key handle ‖ certificate (a bare SEQUENCE) ‖ signature ‖ 9000.
    let u2f_register = [
        &[0x05][..],
        key.to_encoded_point(false).as_bytes(),
        &hex::decode("0101300302010130060201010201019000")?,
    ]
    .concat();
    let answers: Vec<(u8, &str, Vec<u8>)> = vec![
        (
            0,
            "getinfo-ctap20",
            hex::decode(concat!(
                "00a3",
                "0182665532465f5632684649444f5f325f30",
                "0350000102030405060708090a0b0c0d0e0f",
                "04a262726bf469636c69656e7450696ef5",
            ))?,
        ),
        (
            1,
            "makecredential-none",
            [
                hex::decode("00a301646e6f6e6502")?,
                bstr(&registered)?,
                hex::decode("03a0")?,
            ]
            .concat(),
        ),
        (
            2,
            "getassertion",
            [
                hex::decode("00a301")?,
                descriptor,
                vec![0x02],
                bstr(&asserted)?,
                hex::decode("03483006020101020101")?,
            ]
            .concat(),
        ),
        (3, "clientpin-retries", hex::decode("00a2030804f4")?),
        (
            3,
            "clientpin-keyagreement",
            [&hex::decode("00a101")?, cose_key].concat(),
        ),
        (3, "clientpin-status", vec![0x31]),
        (4, "selection", vec![0x00]),
        (5, "u2f-register", u2f_register),
        (
            6,
            "u2f-authenticate",
            hex::decode("010000000730060201010201019000")?,
        ),
        (6, "u2f-touch", hex::decode("6985")?),
        (7, "u2f-check-only", hex::decode("6a80")?),
    ];
    for (which, name, answer) in answers {
        seeds.write("ctap2_responses", name, &[&[which][..], &answer].concat())?;
    }
    Ok(())
}

/// The seed directory: one folder per target.
struct Seeds(PathBuf);

impl Seeds {
    fn write(&self, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.0.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(name), bytes)?;
        Ok(())
    }

    fn write_all<B: AsRef<[u8]>>(
        &self,
        target: &str,
        source: &str,
        items: impl IntoIterator<Item = B>,
    ) -> Result<()> {
        for (i, item) in items.into_iter().enumerate() {
            self.write(target, &format!("{source}-{i:03}"), item.as_ref())?;
        }
        Ok(())
    }
}

/// A card transport that passes commands to the simulated card and keeps both sides.
struct Recorder {
    card: PivCard,
    commands: Vec<Vec<u8>>,
    answers: Vec<Vec<u8>>,
}

impl CardTransport for Recorder {
    fn transmit(&mut self, command: &[u8]) -> tessera::Result<Vec<u8>> {
        let answer = self.card.process(command);
        self.commands.push(command.to_vec());
        self.answers.push(answer.clone());
        Ok(answer)
    }
}

/// The byte strings of every `hex("…")` call in a test file (spaces are ignored, as the tests' own
/// `hex` helper does); literals that are not whole hex, e.g. built with `format!`, are skipped.
fn hex_literals(path: &Path) -> Result<Vec<Vec<u8>>> {
    let text = fs::read_to_string(path)?;
    Ok(text
        .split("hex(\"")
        .skip(1)
        .filter_map(|rest| rest.split_once('"'))
        .filter_map(|(literal, _)| hex::decode(literal.replace(' ', "")).ok())
        .collect())
}

/// The contents of every `r#"…"#` raw string in a test file: the TOML texts of the config tests.
fn raw_strings(path: &Path) -> Result<Vec<Vec<u8>>> {
    let text = fs::read_to_string(path)?;
    Ok(text
        .split("r#\"")
        .skip(1)
        .filter_map(|rest| rest.split_once("\"#"))
        .map(|(literal, _)| literal.as_bytes().to_vec())
        .filter(|toml| toml.contains(&b'='))
        .collect())
}

fn sample_claims() -> Claims {
    Claims {
        iss: "tesserad".into(),
        sub: "alice".into(),
        aud: "tessera".into(),
        iat: 1_700_000_000,
        nbf: 1_700_000_000,
        exp: 1_700_000_900,
        jti: "AAAAAAAAAAAAAAAAAAAAAA".into(),
        amr: vec!["hwk".into(), "sc".into(), "pin".into()],
        cnf: Confirmation {
            jkt: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I".into(),
        },
        sid: "ds-1".into(),
        enr: "en-1".into(),
        lsid: None,
        seat: None,
    }
}
