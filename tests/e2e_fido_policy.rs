//! End-to-end tests of the `[fido]` policy over real parts: a key without a PIN under each
//! `user_verification`, `pin_required`, a per-user override, a key enrolled for someone else, a
//! credential made for another relying-party id, and a PIV card beside a FIDO key of the same user,
//! each under the policy of its own kind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod e2e_fido_flow;
mod e2e_requests_client;

use std::collections::HashMap;

use zbus::zvariant::{ObjectPath, Value};

use common::fido::KeyOptions;
use common::stack::{Stack, DEVICE_PATH, PIN};
use common::test_user;
use e2e_fido_flow::{authenticate, enroll, enrolled, error, on_device, plugged, Pins};
use e2e_requests_client::{error_name, Client};

fn amr(claims: &serde_json::Value) -> Vec<String> {
    claims["amr"]
        .as_array()
        .unwrap_or_else(|| panic!("no amr in {claims}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn uv(policy: &str) -> String {
    format!("[fido]\nuser_verification = \"{policy}\"\n")
}

/// Options that do not wait for another device: the request must decide with what is present.
fn no_wait() -> HashMap<&'static str, Value<'static>> {
    HashMap::from([("wait", Value::from(false))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_a_pin_is_touch_only_when_verification_is_preferred_or_discouraged() {
    for policy in ["preferred", "discouraged"] {
        let (stack, _key, _device, mut client, _) =
            enrolled(&KeyOptions::no_pin(), &uv(policy)).await;
        let run = authenticate(&mut client, "", HashMap::new(), Pins::None, None).await;
        let claims = stack.validate(run.token()).unwrap();
        let methods = amr(&claims);
        assert!(methods.iter().any(|m| m == "user"), "{policy}: {methods:?}");
        assert!(!methods.iter().any(|m| m == "pin"), "{policy}: {methods:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_a_pin_is_refused_when_verification_is_required() {
    let (mut stack, _key, _device, mut client, _) =
        enrolled(&KeyOptions::no_pin(), &uv("preferred")).await;
    stack.stop_daemon();
    stack.start_daemon(&stack.fido_config(&uv("required")));
    let device = stack.wait_key(&_key);
    let run = authenticate(&mut client, "", on_device(&device.path), Pins::None, None).await;
    // The message must say what to do. (The name is DeviceError today, where enrollment says
    // InvalidArgument for the same key under the same policy: a known inconsistency, in the
    // closing note of issue 8.)
    let (_, msg) = run.failure();
    assert!(msg.contains("set a PIN"), "{msg}");
    assert!(stack.ok(&["--json", "sessions"], "").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_with_a_pin_is_asked_no_pin_when_verification_is_discouraged() {
    // Enrollment may ask for the PIN (the key requires it for makeCredential); the assertion not.
    let (stack, _key, _device, mut client, _) =
        enrolled(&KeyOptions::default(), &uv("discouraged")).await;
    let run = authenticate(&mut client, "", HashMap::new(), Pins::None, None).await;
    assert!(!run.saw("pin-needed"), "{:?}", run.signals);
    let methods = amr(&stack.validate(run.token()).unwrap());
    assert!(!methods.iter().any(|m| m == "pin"), "{methods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_user_override_asks_for_the_pin_where_the_default_would_not() {
    let config = format!(
        "{}[users.root.fido]\nuser_verification = \"required\"\n",
        uv("discouraged")
    );
    let (stack, _key, _device, mut client, _) = enrolled(&KeyOptions::default(), &config).await;
    let run = authenticate(&mut client, "", HashMap::new(), Pins::right(), None).await;
    assert_eq!(run.all("pin-needed").len(), 1, "{:?}", run.signals);
    let methods = amr(&stack.validate(run.token()).unwrap());
    assert!(methods.iter().any(|m| m == "pin"), "{methods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_required_refuses_a_key_that_has_no_pin() {
    let (_stack, _key, device, mut client) =
        plugged(&KeyOptions::no_pin(), "[fido]\npin_required = true\n").await;
    let run = enroll(&mut client, "", &device.path, Pins::None, None).await;
    let (name, msg) = run.failure();
    assert_eq!(name, error("InvalidArgument"), "{msg}");
    assert!(msg.contains("set a PIN"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_enrolled_for_another_user_does_not_authenticate_root() {
    let alice = "tessera-alice";
    test_user(alice);
    let (mut stack, _alpha, alpha_dev, mut client) = plugged(&KeyOptions::default(), "").await;
    // root's own key, enrolled and then pulled; alpha is alice's.
    let bravo = stack.plug_key("bravo", &KeyOptions::default());
    let bravo_dev = stack.wait_key(&bravo);
    enroll(&mut client, "", &bravo_dev.path, Pins::right(), None)
        .await
        .result();
    enroll(&mut client, alice, &alpha_dev.path, Pins::right(), None)
        .await
        .result();
    bravo.pull();

    let mut options = no_wait();
    options.extend(on_device(&alpha_dev.path));
    let outcome = client.start_auth("", options).await;
    let (name, msg) = match outcome {
        Ok(path) => {
            let run = e2e_fido_flow::follow(&mut client, path, Pins::right(), None).await;
            let (n, m) = run.failure();
            (n.to_owned(), m.to_owned())
        }
        Err(e) => error_name::<()>(Err(e)),
    };
    assert!(
        name == error("NotEnrolled") || name == error("NoDevice"),
        "{name}: {msg}"
    );
    // alice's own authentication with it works.
    let run = authenticate(&mut client, alice, HashMap::new(), Pins::right(), None).await;
    let claims = stack.validate(run.token()).unwrap();
    assert_eq!(claims["sub"], alice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_made_for_another_relying_party_id_is_refused() {
    let (mut stack, key, _device, mut client, _) = enrolled(&KeyOptions::default(), "").await;
    stack.stop_daemon();
    stack.start_daemon(&stack.fido_config("[fido]\nrp_id = \"pam://elsewhere\"\n"));
    stack.wait_key(&key);
    let outcome = client.start_auth("", no_wait()).await;
    let (name, msg) = match outcome {
        Ok(path) => {
            let run = e2e_fido_flow::follow(&mut client, path, Pins::right(), None).await;
            let (n, m) = run.failure();
            (n.to_owned(), m.to_owned())
        }
        Err(e) => error_name::<()>(Err(e)),
    };
    assert!(
        name == error("NotEnrolled") || name == error("NoDevice"),
        "{name}: {msg}"
    );

    // Back to the id it was made for, it works again.
    stack.stop_daemon();
    stack.start_daemon(&stack.fido_config(""));
    stack.wait_key(&key);
    let run = authenticate(&mut client, "", HashMap::new(), Pins::right(), None).await;
    run.token();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piv_card_and_a_fido_key_of_one_user_each_authenticate_under_their_own_policy() {
    let mut stack = Stack::new();
    let card = stack.path("card.json");
    stack.start_sim(&card, &[]);
    // A key without a PIN, so that under "discouraged" it is touch alone.
    let key = stack.plug_key("alpha", &KeyOptions::no_pin());
    stack.start_daemon(&stack.fido_config(&uv("discouraged")));
    stack.wait_device(true);
    let key_dev = stack.wait_key(&key);
    assert_eq!(key_dev.kind, "fido");
    let card_dev = stack
        .devices()
        .into_iter()
        .find(|d| d.path == DEVICE_PATH)
        .unwrap();
    assert_eq!(card_dev.kind, "piv");
    assert_eq!(card_dev.transport, "pcsc");

    let mut client = Client::connect(stack.bus_address()).await;
    stack.enroll(PIN, &["--device", DEVICE_PATH]);
    enroll(&mut client, "", &key_dev.path, Pins::None, None)
        .await
        .result();

    // FIDO: discouraged, so a touch alone.
    let kinds = |k: &str| HashMap::from([("kinds", Value::from(vec![k.to_owned()]))]);
    let run = authenticate(&mut client, "", kinds("fido"), Pins::None, None).await;
    assert!(!run.saw("pin-needed"), "{:?}", run.signals);
    let fido_claims = stack.validate(run.token()).unwrap();
    // PIV: its 9A slot still wants its PIN, whatever [fido] says.
    let run = authenticate(
        &mut client,
        "",
        kinds("piv"),
        Pins::Each(vec![PIN.to_owned()]),
        None,
    )
    .await;
    let prompts = run.all("pin-needed");
    assert_eq!(prompts.len(), 1, "{:?}", run.signals);
    assert_eq!(prompts[0].str_detail("kind"), "piv");
    let piv_claims = stack.validate(run.token()).unwrap();
    assert_ne!(fido_claims["cnf"], piv_claims["cnf"], "two different keys");

    // Naming the device works as well as naming the kind.
    let card_path = ObjectPath::try_from(DEVICE_PATH).unwrap();
    let options = HashMap::from([("device", Value::from(card_path))]);
    let run = authenticate(
        &mut client,
        "",
        options,
        Pins::Each(vec![PIN.to_owned()]),
        None,
    )
    .await;
    run.token();
}
