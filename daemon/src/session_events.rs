//! Login sessions and the world around them: when a session's device leaves, logind is asked at
//! once to lock or end that session (`[session] on_removal`); when logind ends a session, its
//! tokens die ("logout"). The decisions are the core's ([`Event::LoginSessionDeviceRemoved`],
//! [`Service::logout_login_session`]); this file carries them to and from logind.

use std::time::Instant;

use futures_util::StreamExt as _;
use tessera::policy::config::OnRemoval;
use tessera::service::{Event, Service};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use zbus::proxy::CacheProperties;
use zbus::Connection;

use crate::logind::{self, Login1ManagerProxy, SessionRemovedStream};

/// Starts both listeners: `events` must have been subscribed before any device could appear.
/// Failing to follow logind's signals (a bus that refuses the match rule) is logged, not fatal:
/// tokens then live until their expiry or EndSession, as before logind integration.
pub async fn start(
    conn: &Connection,
    service: &Service,
    events: broadcast::Receiver<Event>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(act_on_removals(conn.clone(), events))];
    match session_removed(conn).await {
        Ok(stream) => tasks.push(tokio::spawn(follow_logouts(service.clone(), stream))),
        Err(e) => tracing::warn!(
            "not following logind's SessionRemoved: {e}; tokens bound to a login session then \
             outlive it until they expire or are ended (EndSession)"
        ),
    }
    tasks
}

/// logind's SessionRemoved signals, whether or not logind is on the bus yet: the proxy follows
/// the owner of `org.freedesktop.login1` and drops signals from anyone else.
async fn session_removed(conn: &Connection) -> zbus::Result<SessionRemovedStream> {
    let proxy = Login1ManagerProxy::builder(conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await?;
    proxy.receive_session_removed().await
}

/// For each removal event, asks logind to lock or end the session, each in its own task so that
/// a slow logind answer for one session does not delay the next.
async fn act_on_removals(conn: Connection, mut events: broadcast::Receiver<Event>) {
    loop {
        match events.recv().await {
            Ok(Event::LoginSessionDeviceRemoved {
                login_session,
                user,
                action,
            }) => {
                let received = Instant::now();
                tokio::spawn(act(conn.clone(), login_session, user, action, received));
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => tracing::error!(
                "{n} service events were lost before the login-session listener saw them: a \
                 session whose device left may not have been locked"
            ),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Locks or ends one session, and logs what was done (never fatal).
async fn act(conn: Connection, id: String, user: String, action: OnRemoval, received: Instant) {
    let (verb, result) = match action {
        OnRemoval::Lock => ("lock", logind::lock_session(&conn, &id).await),
        OnRemoval::Terminate => ("terminate", logind::terminate_session(&conn, &id).await),
        // The core sends no event for "none"; nothing to do if one comes anyway.
        OnRemoval::None => return,
    };
    // From the event to logind's answer.
    let call_ms = received.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(()) => tracing::info!(
            login_session = %id,
            %user,
            action = verb,
            call_ms = format_args!("{call_ms:.1}"),
            "the login session's device left: logind was asked to {verb} it"
        ),
        Err(e) => tracing::warn!(
            login_session = %id,
            %user,
            action = verb,
            "the login session's device left, but asking logind to {verb} it failed: {e}"
        ),
    }
}

/// For each session logind ends, every token bound to it dies ("logout").
async fn follow_logouts(service: Service, mut removed: SessionRemovedStream) {
    while let Some(signal) = removed.next().await {
        let id = match signal.args() {
            Ok(args) => args.id,
            Err(e) => {
                tracing::warn!("ignoring a malformed SessionRemoved from logind: {e}");
                continue;
            }
        };
        if logind::session_id(&id).is_err() {
            // No token can be bound to it: BindSession accepts only such ids.
            tracing::debug!("logind removed session {id:?}, which no token can be bound to");
            continue;
        }
        match service.logout_login_session(&id).await {
            Ok(0) => tracing::debug!(login_session = %id, "logind ended a session without tokens"),
            Ok(n) => tracing::info!(
                login_session = %id,
                tokens = n,
                "logind ended the login session: its tokens are revoked (logout)"
            ),
            Err(e) => tracing::error!(
                login_session = %id,
                "logind ended the login session, but revoking its tokens failed: {e}"
            ),
        }
    }
    tracing::warn!("logind's SessionRemoved signals stopped coming (the bus connection closed)");
}
