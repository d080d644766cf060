//! What the service announces (devices coming and going, tokens dying early) to its listeners, the
//! D-Bus layer above all; the one place events are sent from.

use tokio::sync::broadcast;

use super::{DeviceInfo, Service};

/// Something listeners (the D-Bus layer) must publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A device is present and usable.
    DeviceAdded(DeviceInfo),
    /// The device with this id left.
    DeviceRemoved { id: String },
    /// A token died before its expiry.
    TokenRevoked {
        jti: String,
        user: String,
        reason: String,
    },
    /// The device behind a live token bound to this logind session left: the session must be
    /// locked or ended, as the user's `[session] on_removal` says (never sent for "none"). Sent
    /// once per session and removal, whether or not the token itself dies with the device.
    LoginSessionDeviceRemoved {
        login_session: String,
        user: String,
        action: crate::policy::config::OnRemoval,
    },
}

/// How many events may wait for a slow listener before it misses some.
const EVENT_BACKLOG: usize = 4096;

/// The channel every listener subscribes to.
pub(super) fn channel() -> broadcast::Sender<Event> {
    broadcast::channel(EVENT_BACKLOG).0
}

impl Service {
    /// Announces `event`.
    pub(super) fn publish(&self, event: Event) {
        // No listener is fine (tests without a bus); a lagging one is told by the channel.
        let _ = self.inner.events.send(event);
    }

    /// Announces that the token `jti` of `user` died early, and why ("logout", "superseded" ...).
    pub(super) fn announce_revoked(&self, jti: String, user: &str, reason: &str) {
        self.publish(Event::TokenRevoked {
            jti,
            user: user.to_owned(),
            reason: reason.to_owned(),
        });
    }
}
