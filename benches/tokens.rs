//! Cost of the token hot paths: signing a session token, verifying one, and hashing one for the live
//! token index. Run with `cargo bench --bench tokens`.

// A bench binary may stop on a broken set-up; it is not library code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tessera::token::keys::KeyRing;
use tessera::token::{new_jti, token_hash, Claims, Confirmation};

fn claims() -> Claims {
    let now = 1_700_000_000;
    Claims {
        iss: "tesserad".into(),
        sub: "alice".into(),
        aud: "tessera".into(),
        iat: now,
        nbf: now,
        exp: now + 900,
        jti: new_jti(),
        amr: vec!["hwk".into(), "sc".into(), "pin".into()],
        cnf: Confirmation {
            jkt: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I".into(),
        },
        sid: new_jti(),
        enr: new_jti(),
        lsid: None,
        seat: None,
    }
}

fn tokens(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ring = KeyRing::load_or_create(dir.path(), 1_700_000_000).expect("key ring");
    let claims = claims();
    let token = ring.sign(&claims).expect("sign");

    c.bench_function("KeyRing::sign", |b| {
        b.iter(|| ring.sign(black_box(&claims)).expect("sign"))
    });
    c.bench_function("KeyRing::verify", |b| {
        b.iter(|| ring.verify(black_box(&token)).expect("verify"))
    });
    c.bench_function("token_hash", |b| b.iter(|| token_hash(black_box(&token))));
}

criterion_group!(benches, tokens);
criterion_main!(benches);
