#![allow(clippy::unwrap_used)]
use super::*;

/// A test double standing in for a card: echoes commands, or sleeps to play a stuck reader.
struct Echo {
    delay: Duration,
}

impl CardTransport for Echo {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        thread::sleep(self.delay);
        let mut r = command.to_vec();
        r.extend_from_slice(&[0x90, 0x00]);
        Ok(r)
    }
}

#[tokio::test]
async fn runs_operation_and_returns_its_result() {
    let w = DeviceWorker::<dyn CardConnection>::spawn(
        "t",
        Box::new(DirectConnection(Echo {
            delay: Duration::ZERO,
        })),
    )
    .unwrap();
    let r = w
        .run(Duration::from_secs(5), |card| card.transmit(&[1, 2]))
        .await
        .unwrap();
    assert_eq!(r, vec![1, 2, 0x90, 0x00]);
}

#[tokio::test]
async fn stuck_device_times_out_and_result_is_dropped() {
    let w = DeviceWorker::<dyn CardConnection>::spawn(
        "t",
        Box::new(DirectConnection(Echo {
            delay: Duration::from_millis(300),
        })),
    )
    .unwrap();
    let r = w
        .run(Duration::from_millis(50), |card| card.transmit(&[1]))
        .await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    // A job queued behind the stuck one whose caller gave up is skipped, not run late.
    let skipped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = skipped.clone();
    let r: Result<()> = w
        .run(Duration::from_millis(20), move |_| {
            flag.store(false, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        })
        .await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    // The worker survives and serves the next operation once the stuck one ends.
    let r = w
        .run(Duration::from_secs(5), |card| card.transmit(&[2]))
        .await
        .unwrap();
    assert_eq!(r, vec![2, 0x90, 0x00]);
    assert!(
        skipped.load(std::sync::atomic::Ordering::SeqCst),
        "an abandoned operation ran"
    );
}

#[tokio::test]
async fn a_caller_gets_at_most_two_places_and_gets_them_back() {
    let w = DeviceWorker::<dyn CardConnection>::spawn(
        "t",
        Box::new(DirectConnection(Echo {
            delay: Duration::from_millis(300),
        })),
    )
    .unwrap();
    let call = |uid| {
        let w = w.clone();
        tokio::spawn(async move {
            w.run_for(uid, Duration::from_secs(5), |card| card.transmit(&[1]))
                .await
        })
    };
    let (a, b) = (call(7), call(7));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let third = call(7).await.unwrap();
    assert!(matches!(third, Err(Error::Busy(_))), "{third:?}");
    // Another caller is not held up by the first one's share.
    let other = call(8);
    assert!(a.await.unwrap().is_ok() && b.await.unwrap().is_ok());
    assert!(other.await.unwrap().is_ok());
    assert!(call(7).await.unwrap().is_ok(), "the places came back");
}

#[tokio::test]
async fn a_callers_place_comes_back_with_the_result_not_after_the_epilogue() {
    let w = DeviceWorker::<dyn CardConnection>::spawn(
        "t",
        Box::new(DirectConnection(Echo {
            delay: Duration::ZERO,
        })),
    )
    .unwrap();
    // Two operations in flight, each followed by a slow epilogue (as the PIN-status reset
    // follows a signature): the next one, sent on a reply, finds a free place.
    let call = || {
        let w = w.clone();
        tokio::spawn(async move {
            w.run_then_for(
                7,
                Duration::from_secs(5),
                |card| card.transmit(&[1]),
                |_| thread::sleep(Duration::from_millis(100)),
            )
            .await
        })
    };
    let (a, b) = (call(), call());
    assert!(a.await.unwrap().is_ok());
    let next = call().await.unwrap();
    assert!(next.is_ok(), "{next:?}");
    assert!(b.await.unwrap().is_ok());
}

/// Counts the APDUs that reach the card.
struct Counting(Arc<Mutex<usize>>);

impl CardTransport for Counting {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        *count_of(&self.0) += 1;
        let mut r = command.to_vec();
        r.extend_from_slice(&[0x90, 0x00]);
        Ok(r)
    }
}

fn count_of(m: &Mutex<usize>) -> std::sync::MutexGuard<'_, usize> {
    m.lock().unwrap()
}

#[tokio::test]
async fn a_cancelled_operation_returns_at_once_and_sends_no_further_apdu() {
    let sent = Arc::new(Mutex::new(0));
    let w = DeviceWorker::<dyn CardConnection>::spawn(
        "t",
        Box::new(DirectConnection(Counting(sent.clone()))),
    )
    .unwrap();
    let cancel = CancelToken::new();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let epilogue_ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ran = epilogue_ran.clone();
    let op = {
        let w = w.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            w.run_cancellable_for(
                7,
                Duration::from_secs(5),
                &cancel,
                move |card| {
                    card.transmit(&[1])?;
                    let _ = started_tx.send(());
                    // The caller cancels while the operation works.
                    thread::sleep(Duration::from_millis(200));
                    card.transmit(&[2])
                },
                move |_| ran.store(true, std::sync::atomic::Ordering::SeqCst),
            )
            .await
        })
    };
    tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
        .await
        .unwrap();
    let at = std::time::Instant::now();
    cancel.cancel();
    let r = op.await.unwrap();
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert!(
        at.elapsed() < Duration::from_millis(100),
        "did not return at once"
    );
    // A queued operation of the cancelled request is skipped; the card saw one APDU only.
    let skipped: Result<Vec<u8>> = w
        .run_cancellable_for(
            7,
            Duration::from_secs(5),
            &cancel,
            |card| card.transmit(&[3]),
            |_| {},
        )
        .await;
    assert!(matches!(skipped, Err(Error::Cancelled)), "{skipped:?}");
    // The worker serves the next request once the interrupted operation is over.
    let next = w
        .run(Duration::from_secs(5), |card| card.transmit(&[4]))
        .await;
    assert!(next.is_ok(), "{next:?}");
    assert_eq!(
        *count_of(&sent),
        2,
        "APDUs: the first, then the next request's"
    );
    assert!(epilogue_ran.load(std::sync::atomic::Ordering::SeqCst));
}

/// A FIDO link that answers every CBOR command with its own bytes, or works until cancelled.
struct FakeLink;

impl CtapLink for FakeLink {
    fn capabilities(&self) -> crate::fido::link::LinkCapabilities {
        crate::fido::link::LinkCapabilities {
            cbor: true,
            msg: false,
            wink: false,
            max_msg_size: 7609,
        }
    }
    fn cbor(
        &mut self,
        request: &[u8],
        ctx: &mut crate::fido::link::LinkContext<'_>,
    ) -> Result<Vec<u8>> {
        if request == [0xFF] {
            // Waits for a touch that never comes, as a key does, until the cancel.
            while !ctx.cancel.is_cancelled() {
                thread::sleep(Duration::from_millis(5));
            }
            return Err(Error::Cancelled);
        }
        Ok(request.to_vec())
    }
    fn msg(
        &mut self,
        apdu: &[u8],
        _ctx: &mut crate::fido::link::LinkContext<'_>,
    ) -> Result<Vec<u8>> {
        Ok(apdu.to_vec())
    }
    fn ping(
        &mut self,
        data: &[u8],
        _ctx: &mut crate::fido::link::LinkContext<'_>,
    ) -> Result<Vec<u8>> {
        Ok(data.to_vec())
    }
}

fn send(
    w: &HidWorker,
    cancel: &CancelToken,
    request: Vec<u8>,
) -> impl std::future::Future<Output = Result<Vec<u8>>> + Send + 'static {
    let (w, cancel) = (w.clone(), cancel.clone());
    async move {
        let token = cancel.clone();
        w.run_with(7, Duration::from_secs(5), &cancel, move |link| {
            let mut ignore = |_| {};
            let mut ctx = crate::fido::link::LinkContext {
                cancel: &token,
                deadline: std::time::Instant::now() + Duration::from_secs(5),
                keepalive: &mut ignore,
            };
            link.cbor(&request, &mut ctx)
        })
        .await
    }
}

#[tokio::test]
async fn a_hid_worker_runs_link_operations() {
    let w = HidWorker::spawn("k", Box::new(FakeLink)).unwrap();
    let r = send(&w, &CancelToken::new(), vec![0x04]).await.unwrap();
    assert_eq!(r, [0x04]);
    let caps = w
        .run_with(7, Duration::from_secs(5), &CancelToken::new(), |link| {
            Ok(link.capabilities())
        })
        .await
        .unwrap();
    assert!(caps.cbor);
}

#[tokio::test]
async fn a_cancelled_link_operation_returns_at_once_and_the_next_one_is_served() {
    let w = HidWorker::spawn("k", Box::new(FakeLink)).unwrap();
    let cancel = CancelToken::new();
    let waiting = tokio::spawn(send(&w, &cancel, vec![0xFF]));
    // A second operation of the same request waits behind it and is skipped after the cancel.
    let queued = tokio::spawn(send(&w, &cancel, vec![0x01]));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let at = std::time::Instant::now();
    cancel.cancel();
    let r = waiting.await.unwrap();
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert!(at.elapsed() < Duration::from_millis(100));
    let r = queued.await.unwrap();
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    // Already cancelled: refused before it is queued.
    let r = send(&w, &cancel, vec![0x01]).await;
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    // The caller's places come back once the interrupted operation has returned (it still
    // runs on the device until it sees the cancel), and the worker serves the next request.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = send(&w, &CancelToken::new(), vec![0x02]).await.unwrap();
    assert_eq!(r, [0x02]);
}

#[tokio::test]
async fn run_with_counts_toward_the_callers_share() {
    let w = HidWorker::spawn("k", Box::new(FakeLink)).unwrap();
    let cancel = CancelToken::new();
    let a = tokio::spawn(send(&w, &cancel, vec![0xFF]));
    let b = tokio::spawn(send(&w, &cancel, vec![0x01]));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let third = send(&w, &CancelToken::new(), vec![0x01]).await;
    assert!(matches!(third, Err(Error::Busy(_))), "{third:?}");
    cancel.cancel();
    let _ = (a.await, b.await);
}

#[tokio::test]
async fn run_with_hands_a_card_worker_its_connection() {
    let w = DeviceWorker::<dyn CardConnection>::spawn(
        "t",
        Box::new(DirectConnection(Echo {
            delay: Duration::ZERO,
        })),
    )
    .unwrap();
    let r = w
        .run_with(7, Duration::from_secs(5), &CancelToken::new(), |conn| {
            let mut out = Vec::new();
            conn.exclusive(&mut |card| {
                out = card.transmit(&[9])?;
                Ok(())
            })?;
            Ok(out)
        })
        .await
        .unwrap();
    assert_eq!(r, [9, 0x90, 0x00]);
}

#[tokio::test]
async fn operation_error_is_passed_through() {
    let w = DeviceWorker::<dyn CardConnection>::spawn(
        "t",
        Box::new(DirectConnection(Echo {
            delay: Duration::ZERO,
        })),
    )
    .unwrap();
    let r: Result<()> = w
        .run(Duration::from_secs(5), |_| Err(Error::DeviceRemoved))
        .await;
    assert!(matches!(r, Err(Error::DeviceRemoved)));
}
