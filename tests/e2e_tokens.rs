//! End to end: what a token holder may and may not do with a token, over real processes
//! (`tessera-sim piv` behind pcscd and vpcd, `tesserad` on a private bus, the `tessera` CLI run as
//! other local users, `gdbus` for arguments the CLI cannot send, and the daemon's database read
//! directly as a witness that is not the daemon).
//!
//! - RefreshToken is for the token's owner or root, and rate-limited per token lineage.
//! - CheckToken enforces the relying service's audience, maximum age and methods.
//! - At the live-token limit, the oldest token dies exactly when the new one is issued.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use serde_json::Value;

use common::stack::{parse_err, Stack, MANAGER_PATH, PIN};
use common::{stderr, stdout, test_user};

const WRONG_PIN: &str = "654321";

/// `tessera refresh -` as `user` with `token` on stdin: the new token, or the error (name, message).
fn refresh_as(env: &Stack, user: (u32, u32), token: &str) -> Result<String, (String, String)> {
    let out = env.cli_as(user, &["refresh", "-"], token);
    if out.status.success() {
        Ok(stdout(&out).trim().to_owned())
    } else {
        Err(parse_err(&out))
    }
}

/// `tessera check - <args>` with `token` on stdin: the claims, or the error (name, message).
fn check(env: &Stack, token: &str, args: &[&str]) -> Result<Value, (String, String)> {
    let mut all = vec!["check", "--json", "-"];
    all.extend_from_slice(args);
    let out = env.cli(&all, &format!("{token}\n"));
    if out.status.success() {
        Ok(serde_json::from_str(stdout(&out).trim()).expect("claims JSON"))
    } else {
        Err(parse_err(&out))
    }
}

/// CheckToken over gdbus with `requirements` in GVariant text: the full error name gdbus reports.
fn check_raw_error(env: &Stack, token: &str, requirements: &str) -> String {
    let out = env.gdbus_call(
        MANAGER_PATH,
        "org.tessera.Tessera1.Manager.CheckToken",
        &[token, requirements],
    );
    assert!(!out.status.success(), "{requirements}: {out:?}");
    stderr(&out)
}

#[test]
fn only_the_owner_or_root_may_refresh_and_refresh_is_rate_limited() {
    let alice = test_user("tessera-alice");
    let bob = test_user("tessera-bob");
    let (env, _card) = Stack::with_card(&[], "");
    env.enroll(PIN, &["--user", "tessera-alice"]);
    let out = env.cli_as(alice, &["authenticate", "--pin-stdin"], PIN);
    assert!(out.status.success(), "alice: {out:?}");
    let token = stdout(&out).trim().to_owned();

    // Bob holds Alice's token: he may validate it, but not extend it.
    let (name, msg) = refresh_as(&env, bob, &token).unwrap_err();
    assert_eq!(name, "AccessDenied", "{msg}");
    let claims = env
        .validate(&token)
        .expect("still valid after bob's attempt");
    assert_eq!(claims["sub"], "tessera-alice");

    // Alice may; the new token is hers, the old one is gone.
    let second = refresh_as(&env, alice, &token).expect("alice refreshes her own token");
    assert_eq!(env.validate(&token).unwrap_err().0, "TokenRevoked");
    assert_eq!(env.validate(&second).unwrap()["sub"], "tessera-alice");

    // At most one refresh per 10 s (the default) per lineage: the new token cannot be refreshed
    // again right away, and the refused refresh leaves it as it was.
    let (name, msg) = refresh_as(&env, alice, &second).unwrap_err();
    assert_eq!(name, "RateLimited", "{msg}");
    assert!(msg.contains("retry after"), "{msg}");
    env.validate(&second)
        .expect("still valid after a refused refresh");
    // Root is the owner's equal, also for the rate limit.
    let (name, msg) = parse_err(&env.cli(&["refresh", "-"], &format!("{second}\n")));
    assert_eq!(name, "RateLimited", "root: {msg}");
    env.validate(&second).expect("still valid");

    // Another lineage of the same user (a new authentication) is not held back by it, and root
    // may refresh it.
    let out = env.cli_as(alice, &["authenticate", "--pin-stdin"], PIN);
    assert!(out.status.success(), "alice again: {out:?}");
    let other = stdout(&out).trim().to_owned();
    let refreshed = env.ok(&["refresh", "-"], &format!("{other}\n"));
    assert_eq!(env.validate(&refreshed).unwrap()["sub"], "tessera-alice");
}

#[test]
fn the_refresh_limit_lifts_after_the_interval_and_max_age_asks_for_step_up() {
    // The interval is counted in whole seconds: with "1s", two refreshes a few milliseconds apart
    // on either side of a second boundary are 1 s apart, and the second one passed (a flake under
    // load). With "2s", back-to-back refreshes are at most 1 s apart, always refused.
    let (env, _card) = Stack::with_card(&[], "[token]\nmin_refresh_interval = \"2s\"\n");
    env.enroll(PIN, &["--user", "root"]);
    let first = env.authenticate(&["--user", "root"]);
    let second = env.ok(&["refresh", "-"], &format!("{first}\n"));
    assert_eq!(env.err(&["refresh", "-"], &second).0, "RateLimited");
    assert!(check(&env, &second, &["--max-age", "3600"]).is_ok());
    // Whole seconds: after 2.1 s the clock has passed at least two second boundaries.
    std::thread::sleep(Duration::from_millis(2100));
    let third = env.ok(&["refresh", "-"], &format!("{second}\n"));
    // A refresh keeps auth_time: the session is older than 0 s, whatever the token's age.
    let (name, msg) = check(&env, &third, &["--max-age", "0"]).unwrap_err();
    assert_eq!(name, "StepUpRequired", "{msg}");
    env.validate(&third)
        .expect("a failed requirement does not end the token");
}

#[test]
fn check_token_enforces_audience_age_and_methods() {
    let (env, _card) = Stack::with_card(&[], "[token]\naudience = \"mail\"\n");
    env.enroll(PIN, &["--user", "root"]);
    let token = env.authenticate(&["--user", "root"]);

    let claims = check(
        &env,
        &token,
        &[
            "--audience",
            "mail",
            "--max-age",
            "600",
            "--amr",
            "pin",
            "--amr",
            "hwk",
        ],
    )
    .expect("every requirement met");
    assert_eq!(claims["aud"], "mail");
    assert!(check(&env, &token, &[]).is_ok(), "no requirements");

    let (name, msg) = check(&env, &token, &["--audience", "calendar"]).unwrap_err();
    assert_eq!(name, "TokenInvalid", "{msg}");
    assert!(msg.contains("calendar"), "names the audience: {msg}");
    let (name, msg) = check(&env, &token, &["--amr", "pin", "--amr", "otp"]).unwrap_err();
    assert_eq!(name, "StepUpRequired", "{msg}");
    assert!(msg.contains("otp"), "names the missing method: {msg}");

    // Requirements the CLI cannot express: unknown keys and wrong variant types.
    for requirements in [
        "{'audiences': <'mail'>}",
        "{'audience': <uint32 5>}",
        "{'max_age': <'600'>}",
        "{'max_age': <int32 600>}",
        "{'amr': <'pin'>}",
    ] {
        let err = check_raw_error(&env, &token, requirements);
        assert!(
            err.contains("org.tessera.Tessera1.Error.InvalidArgument"),
            "{requirements}: {err}"
        );
    }
    let ok = env.gdbus_call(
        MANAGER_PATH,
        "org.tessera.Tessera1.Manager.CheckToken",
        &[
            &token,
            "{'audience': <'mail'>, 'max_age': <uint32 600>, 'amr': <['sc']>}",
        ],
    );
    assert!(ok.status.success(), "{ok:?}");
    // ValidateToken (contract v1) is unchanged and still answers.
    assert_eq!(env.validate(&token).unwrap()["aud"], "mail");
}

#[test]
fn check_token_consumes_a_single_use_token_only_when_it_passes() {
    let (env, _card) = Stack::with_card(&[], "[token]\nsingle_use = true\n");
    env.enroll(PIN, &["--user", "root"]);
    let token = env.authenticate(&["--user", "root"]);
    // Presented to the wrong service: refused, and not burnt.
    let (name, _) = check(&env, &token, &["--audience", "other"]).unwrap_err();
    assert_eq!(name, "TokenInvalid");
    check(&env, &token, &["--audience", "tessera"]).expect("first use");
    let (name, msg) = check(&env, &token, &["--audience", "tessera"]).unwrap_err();
    assert_eq!(name, "TokenRevoked", "{msg}");
    assert_eq!(env.validate(&token).unwrap_err().0, "TokenRevoked");
}

#[test]
fn at_the_limit_the_oldest_token_goes_exactly_when_the_new_one_comes() {
    let (env, _card) = Stack::with_card(&[], "[token]\nmax_live_per_user = 2\n");
    env.enroll(PIN, &["--user", "root"]);
    let oldest = env.authenticate(&["--user", "root"]);
    // Tokens are ordered by their issue time in whole seconds: let "oldest" be the oldest.
    std::thread::sleep(Duration::from_millis(1100));
    let newer = env.authenticate(&["--user", "root"]);
    let oldest_jti = env.validate(&oldest).unwrap()["jti"]
        .as_str()
        .unwrap()
        .to_owned();

    // An authentication that fails on the card issues nothing and supersedes nothing, durably.
    let (name, msg) = env.err(
        &["authenticate", "--user", "root", "--pin-stdin"],
        WRONG_PIN,
    );
    assert_eq!(name, "PinInvalid", "{msg}");
    env.validate(&oldest)
        .expect("oldest still valid after a failed authentication");
    env.validate(&newer).expect("newer still valid");
    assert_eq!(
        env.token_state(&oldest_jti),
        (0, None),
        "store row of oldest"
    );

    // A successful one supersedes the oldest, in memory and in the store.
    let newest = env.authenticate(&["--user", "root"]);
    let (name, msg) = env.validate(&oldest).unwrap_err();
    assert_eq!(name, "TokenRevoked", "{msg}");
    assert!(msg.contains("superseded"), "{msg}");
    assert_eq!(
        env.token_state(&oldest_jti),
        (1, Some("superseded".to_owned()))
    );
    env.validate(&newer).expect("newer still valid");
    env.validate(&newest).expect("newest valid");
    let sessions = env.ok(&["sessions"], "");
    assert_eq!(sessions.lines().count(), 2, "{sessions}");
}
