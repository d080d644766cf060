//! The device feed over the real service and the simulated card: device-neutral events in, devices
//! present in the service out; a source that loses its system service takes only its own devices
//! with it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera::clock::SystemClock;
use tessera::policy::config::Config;
use tessera::service::{Service, ServiceParts};
use tessera::transport::events::{
    AddedDevice, DeviceConnection, DeviceEvent, DeviceKind, Transport,
};
use tessera::transport::worker::DirectConnection;
use tessera_sim::piv::{PivCard, SimOptions};
use tokio::sync::mpsc;

fn sim_card(dir: &std::path::Path, location: &str, transport: Transport) -> DeviceEvent {
    sim_card_at(dir, location, transport, false)
}

fn sim_card_at(
    dir: &std::path::Path,
    location: &str,
    transport: Transport,
    contactless: bool,
) -> DeviceEvent {
    let card = PivCard::open(
        &dir.join(format!("{location}.json")),
        &SimOptions::default(),
    )
    .unwrap();
    DeviceEvent::Added(AddedDevice {
        location: location.into(),
        kind: DeviceKind::SmartCard,
        transport,
        contactless,
        event_count: 1,
        source_instance: Some("test".into()),
        connection: DeviceConnection::Card(Box::new(DirectConnection(card))),
    })
}

/// Waits until the service's devices, as (location, transport, kind), are `want`.
async fn devices_become(svc: &Service, want: &[(&str, &str, &str)]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut got: Vec<(String, String, String)> = svc
            .devices()
            .into_iter()
            .map(|d| (d.reader, d.transport, d.kind))
            .collect();
        got.sort();
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(l, t, k)| (l.to_string(), t.to_string(), k.to_string()))
            .collect();
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "devices {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_become_devices_and_a_lost_source_takes_only_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::open(ServiceParts {
        clock: Arc::new(SystemClock),
        config: Config::parse("").unwrap(),
        state_dir: dir.path().join("state"),
    })
    .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let feed = tokio::spawn(tesserad::device_feed::feed(
        svc.clone(),
        vec![Transport::Pcsc, Transport::Hid],
        rx,
    ));

    tx.send(sim_card(dir.path(), "Reader A", Transport::Pcsc))
        .unwrap();
    tx.send(sim_card(dir.path(), "Reader B", Transport::Hid))
        .unwrap();
    tx.send(DeviceEvent::EnumerationComplete {
        transport: Transport::Pcsc,
    })
    .unwrap();
    devices_become(
        &svc,
        &[("Reader A", "pcsc", "piv"), ("Reader B", "hid", "piv")],
    )
    .await;

    // Removed and added again at one location: handled in order.
    tx.send(DeviceEvent::Removed {
        transport: Transport::Pcsc,
        location: "Reader A".into(),
    })
    .unwrap();
    tx.send(sim_card(dir.path(), "Reader A", Transport::Pcsc))
        .unwrap();
    devices_become(
        &svc,
        &[("Reader A", "pcsc", "piv"), ("Reader B", "hid", "piv")],
    )
    .await;

    // A changed identified device stays as it is.
    tx.send(DeviceEvent::Changed {
        transport: Transport::Pcsc,
        location: "Reader A".into(),
    })
    .unwrap();
    tx.send(DeviceEvent::SourceLost {
        transport: Transport::Hid,
        reason: "gone".into(),
    })
    .unwrap();
    devices_become(&svc, &[("Reader A", "pcsc", "piv")]).await;
    tx.send(DeviceEvent::SourceLost {
        transport: Transport::Pcsc,
        reason: "pcscd stopped".into(),
    })
    .unwrap();
    devices_become(&svc, &[]).await;

    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), feed)
        .await
        .expect("the feed did not end with its channel")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contactless_card_is_published_as_nfc_and_leaves_with_pcscd() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::open(ServiceParts {
        clock: Arc::new(SystemClock),
        config: Config::parse("").unwrap(),
        state_dir: dir.path().join("state"),
    })
    .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let feed = tokio::spawn(tesserad::device_feed::feed(
        svc.clone(),
        vec![Transport::Pcsc],
        rx,
    ));
    tx.send(sim_card_at(dir.path(), "Contact", Transport::Pcsc, false))
        .unwrap();
    tx.send(sim_card_at(dir.path(), "Field", Transport::Pcsc, true))
        .unwrap();
    tx.send(DeviceEvent::EnumerationComplete {
        transport: Transport::Pcsc,
    })
    .unwrap();
    devices_become(&svc, &[("Contact", "pcsc", "piv"), ("Field", "nfc", "piv")]).await;
    // Both came from PC/SC: both leave with it.
    tx.send(DeviceEvent::SourceLost {
        transport: Transport::Pcsc,
        reason: "pcscd stopped".into(),
    })
    .unwrap();
    devices_become(&svc, &[]).await;
    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), feed)
        .await
        .expect("the feed did not end with its channel")
        .unwrap();
}
