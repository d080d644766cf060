//! End to end: StartAuthentication's issue-9 options over a private system-type bus (the stock
//! system-bus rules and the shipped policy), with the real daemon and a simulated PIV card:
//! "audience" sets the token's `aud` (what pam_tessera checks with CheckToken), "any_user" is the
//! greeter's login without a user name (administrators only, and only with user "").

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod e2e_requests_client;

use std::collections::HashMap;
use std::process::Command;

use e2e_requests_client::{error_name, with_pin, Client, Signal};
use zbus::zvariant::Value;

use common::stack::{parse_err, BUS_NAME, CLI_TIMEOUT, MANAGER_PATH, PIN};
use common::system_stack::system_stack;
use common::{run, stderr, stdout, test_user};

const ALICE: &str = "tessera-alice";
const BOB: &str = "tessera-bob";
const INVALID: &str = "org.tessera.Tessera1.Error.InvalidArgument";

/// Runs a request to its end; the token of a Completed.
async fn token_of(client: &mut Client, user: &str, options: HashMap<&str, Value<'_>>) -> String {
    let path = client.start_auth(user, options).await.unwrap();
    match client.next_after_work(&path).await {
        Signal::Completed(token) => token,
        other => panic!("request ended with {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_and_any_user() {
    test_user(ALICE);
    test_user(BOB);
    let mut stack = system_stack();
    let card = stack.path("card.json");
    stack.start_sim(&card, &[]);
    stack.start_daemon("");
    stack.wait_device(true);
    stack.enroll(PIN, &["--user", ALICE]);
    let mut root = Client::connect(stack.bus_address()).await;

    // "audience": the token is for that relying service, and CheckToken holds it to it.
    let mut opts = with_pin(PIN);
    opts.insert("audience", Value::from("pam:sudo"));
    let token = token_of(&mut root, ALICE, opts).await;
    let claims = stack.validate(&token).unwrap();
    assert_eq!(claims["aud"], "pam:sudo", "{claims}");
    stack.ok(
        &["check", "-", "--audience", "pam:sudo"],
        &format!("{token}\n"),
    );
    let (name, _) = parse_err(&stack.cli(
        &["check", "-", "--audience", "tessera"],
        &format!("{token}\n"),
    ));
    assert_eq!(name, "TokenInvalid");
    // Without it, `[token] audience`.
    let token = token_of(&mut root, ALICE, with_pin(PIN)).await;
    assert_eq!(stack.validate(&token).unwrap()["aud"], "tessera");

    // An audience that is empty, too long or not printable ASCII is refused before any work.
    let long = "a".repeat(129);
    for bad in ["", "pam:\nsudo", "pàm", long.as_str()] {
        let mut opts = with_pin(PIN);
        opts.insert("audience", Value::from(bad));
        let (name, _) = error_name(root.start_auth(ALICE, opts).await);
        assert_eq!(name, INVALID, "{bad:?}");
    }

    // "any_user": the greeter (root) names nobody; the card says who.
    let mut opts = with_pin(PIN);
    opts.insert("any_user", Value::from(true));
    let token = token_of(&mut root, "", opts).await;
    assert_eq!(stack.validate(&token).unwrap()["sub"], ALICE);
    // Naming a user as well is a contradiction.
    let mut opts = with_pin(PIN);
    opts.insert("any_user", Value::from(true));
    let (name, _) = error_name(root.start_auth(ALICE, opts).await);
    assert_eq!(name, INVALID);
    // Not a boolean.
    let mut opts = with_pin(PIN);
    opts.insert("any_user", Value::from("yes"));
    let (name, _) = error_name(root.start_auth("", opts).await);
    assert_eq!(name, INVALID);

    // An ordinary user may not ask who a card belongs to.
    let out = run(
        Command::new("runuser")
            .args(["-u", BOB, "--", "gdbus", "call", "--address"])
            .arg(stack.bus_address())
            .args([
                "--dest",
                BUS_NAME,
                "--object-path",
                MANAGER_PATH,
                "--method",
            ])
            .arg("org.tessera.Tessera1.Manager.StartAuthentication")
            .args(["", "{'any_user': <true>}"]),
        b"",
        CLI_TIMEOUT,
    );
    assert!(
        !out.status.success(),
        "bob started a greeter login: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("org.tessera.Tessera1.Error.AccessDenied"),
        "{}",
        stderr(&out)
    );
}
