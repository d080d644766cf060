//! End-to-end tests of who may use a request and how long it lives: only the connection that
//! started it may call it or read it, its signals reach that connection alone, it dies with its
//! caller's connection, and a caller holds at most four at once. Real `tesserad`, pcscd + vpcd and
//! `tessera-sim` on a private bus; another user's attempts go through `busctl` run as that user.
//! (The same under the system bus's default-deny policy: `daemon/tests/system_bus.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod e2e_requests_client;

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use zbus::fdo::DBusProxy;
use zbus::names::BusName;
use zbus::zvariant::{OwnedObjectPath, Value};

use common::stack::{Stack, PIN};
use common::{run, test_user};
use e2e_requests_client::{error_name, exported, pin_retries_left, Client, Signal};

const ACCESS_DENIED: &str = "org.tessera.Tessera1.Error.AccessDenied";

async fn enrolled() -> (Stack, std::path::PathBuf, Client) {
    let (stack, card) = Stack::with_card(&[], "");
    stack.enroll(PIN, &[]);
    let client = Client::connect(stack.bus_address()).await;
    (stack, card, client)
}

/// Starts an authentication and waits for its first prompt.
async fn at_pin_needed(client: &mut Client) -> OwnedObjectPath {
    let path = client.start_auth("", HashMap::new()).await.unwrap();
    let first = client.next_after_work(&path).await;
    assert_eq!(first.name(), "pin-needed", "{first:?}");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_connection_of_the_same_user_can_neither_use_nor_watch_a_request() {
    let (_stack, card, mut owner) = enrolled().await;
    let mut other = Client::connect(_stack.bus_address()).await;
    let path = at_pin_needed(&mut owner).await;
    let theirs = other.request(&path).await;

    let (name, msg) = error_name(theirs.submit_pin(PIN).await);
    assert_eq!(name, ACCESS_DENIED, "{msg}");
    let (name, msg) = error_name(theirs.submit_last_try_pin(PIN).await);
    assert_eq!(name, ACCESS_DENIED, "{msg}");
    let (name, msg) = error_name(theirs.cancel().await);
    assert_eq!(name, ACCESS_DENIED, "{msg}");
    let (name, msg) = error_name(theirs.state().await);
    assert_eq!(name, "org.freedesktop.DBus.Error.AccessDenied", "{msg}");
    let props = zbus::fdo::PropertiesProxy::builder(&other.conn)
        .destination("org.tessera.Tessera1")
        .unwrap()
        .path(path.clone())
        .unwrap()
        .build()
        .await
        .unwrap();
    let all = props
        .get_all(zbus::names::InterfaceName::try_from("org.tessera.Tessera1.Request").unwrap())
        .await
        .unwrap();
    assert!(
        !all.contains_key("State"),
        "GetAll shows the state: {all:?}"
    );
    assert_eq!(pin_retries_left(&card), 3);

    // The owner finishes; none of its signals reached the other connection, which was listening
    // for Request signals all along.
    let mine = owner.request(&path).await;
    assert_eq!(mine.state().await.unwrap(), "pin-needed");
    mine.submit_pin(PIN).await.unwrap();
    let done = owner.next_after_work(&path).await;
    assert!(matches!(done, Signal::Completed(_)), "{done:?}");
    let seen = other.drain().await;
    assert!(seen.is_empty(), "another connection received {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_can_neither_call_nor_read_a_request() {
    let bob = test_user("tessera-bob");
    let (stack, card, mut owner) = enrolled().await;
    let path = at_pin_needed(&mut owner).await;
    let busctl = |args: &[&str]| {
        let mut cmd = Command::new("busctl");
        cmd.arg(format!("--address={}", stack.bus_address()))
            .args(args)
            .uid(bob.0)
            .gid(bob.1);
        run(&mut cmd, b"", Duration::from_secs(20))
    };
    let (dest, iface) = ("org.tessera.Tessera1", "org.tessera.Tessera1.Request");
    let call = |method: &'static str, args: &[&'static str]| {
        let mut v = vec!["call", dest, path.as_str(), iface, method];
        v.extend_from_slice(args);
        v
    };
    for args in [
        call("SubmitPin", &["s", PIN]),
        call("SubmitLastTryPin", &["s", PIN]),
        call("Cancel", &[]),
        vec!["get-property", dest, path.as_str(), iface, "State"],
    ] {
        let out = busctl(&args);
        assert!(!out.status.success(), "{args:?} succeeded for bob: {out:?}");
        let err = common::stderr(&out);
        // busctl shows a method's error message, and for a property only the error's name.
        let expected = if args[0] == "get-property" {
            "Access denied"
        } else {
            "this request belongs to another connection"
        };
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    assert_eq!(pin_retries_left(&card), 3);
    let mine = owner.request(&path).await;
    assert_eq!(
        mine.state().await.unwrap(),
        "pin-needed",
        "bob's Cancel took effect"
    );
    mine.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dies_with_its_callers_connection() {
    let (stack, card, mut owner) = enrolled().await;
    let watcher = Client::connect(stack.bus_address()).await;
    let path = at_pin_needed(&mut owner).await;
    let owner_name = owner.conn.unique_name().unwrap().to_owned();

    let dbus = DBusProxy::new(&watcher.conn).await.unwrap();
    let mut gone = dbus
        .receive_name_owner_changed_with_args(&[(0, owner_name.as_str())])
        .await
        .unwrap();
    assert!(exported(&watcher.conn, &path).await);
    owner.conn.close().await.unwrap();
    let change = tokio::time::timeout(Duration::from_secs(5), gone.next())
        .await
        .expect("NameOwnerChanged of the owner")
        .unwrap();
    let seen = Instant::now();
    assert!(change.args().unwrap().new_owner().is_none());
    while exported(&watcher.conn, &path).await {
        assert!(
            seen.elapsed() < Duration::from_millis(100),
            "request object still there {:?} after its owner left",
            seen.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(dbus
        .name_has_owner(BusName::try_from(owner_name.as_str()).unwrap())
        .await
        .is_ok_and(|owned| !owned));
    assert_eq!(pin_retries_left(&card), 3);
    // The device is free for the next caller.
    stack.authenticate(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_holds_at_most_four_live_requests() {
    let (mut stack, _card, mut client) = enrolled().await;
    // No card: each request waits for one.
    stack.stop_sim();
    stack.wait_device(false);
    let mut paths = Vec::new();
    for _ in 0..4 {
        let path = client.start_auth("", HashMap::new()).await.unwrap();
        assert_eq!(client.next(&path).await.name(), "waiting-for-device");
        paths.push(path);
    }
    let (name, msg) = error_name(client.start_auth("", HashMap::new()).await);
    assert_eq!(name, "org.tessera.Tessera1.Error.Busy", "{msg}");
    // From another connection of the same uid too: the limit is the caller's, not the connection's.
    let other = Client::connect(stack.bus_address()).await;
    let (name, msg) = error_name(other.start_auth("", HashMap::new()).await);
    assert_eq!(name, "org.tessera.Tessera1.Error.Busy", "{msg}");

    // One ends: there is room for one more.
    let first = paths.remove(0);
    client.request(&first).await.cancel().await.unwrap();
    let ended = client.next(&first).await;
    assert!(
        matches!(ended, Signal::Failed(ref e, _) if e.ends_with(".Cancelled")),
        "{ended:?}"
    );
    let fifth = client.start_auth("", HashMap::new()).await.unwrap();
    paths.push(fifth);
    for p in &paths {
        client.request(p).await.cancel().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_options_are_checked_before_any_work() {
    let (_stack, _card, client) = enrolled().await;
    let invalid = "org.tessera.Tessera1.Error.InvalidArgument";
    for options in [
        HashMap::from([("timeout", Value::from(0u32))]),
        HashMap::from([("timeout", Value::from(3601u32))]),
        HashMap::from([("timeout", Value::from("10"))]),
        HashMap::from([("wait", Value::from("yes"))]),
        HashMap::from([("kinds", Value::from("piv"))]),
        HashMap::from([("kinds", Value::from(vec!["piv"; 9]))]),
        HashMap::from([("pin", Value::from(7u32))]),
        HashMap::from([("slot", Value::from("9a"))]),
    ] {
        let (name, msg) = error_name(client.start_auth("", options.clone()).await);
        assert_eq!(name, invalid, "{options:?}: {msg}");
    }
    let long = "9".repeat(300);
    let (name, msg) = error_name(
        client
            .start_auth("", HashMap::from([("pin", Value::from(long))]))
            .await,
    );
    assert_eq!(name, invalid, "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_signal_of_a_request_comes_before_the_reply_naming_it() {
    let (_stack, _card, client) = enrolled().await;
    // Every message this connection receives, in the order it received them.
    let mut all = zbus::MessageStream::from(&client.conn);
    for _ in 0..5 {
        let path = client.start_auth("", HashMap::new()).await.unwrap();
        let mut reply_seen = false;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), all.next())
                .await
                .expect("the first Progress")
                .unwrap()
                .unwrap();
            let header = msg.header();
            match msg.message_type() {
                zbus::message::Type::MethodReturn => {
                    let body: Result<OwnedObjectPath, _> = msg.body().deserialize();
                    if body.is_ok_and(|p| p == path) {
                        reply_seen = true;
                    }
                }
                zbus::message::Type::Signal if header.path().is_some_and(|p| *p == *path) => {
                    assert!(
                        reply_seen,
                        "a signal of {path} came before the reply naming it"
                    );
                    assert_eq!(header.member().unwrap().as_str(), "Progress");
                    break;
                }
                _ => {}
            }
        }
        client.request(&path).await.cancel().await.unwrap();
    }
}
