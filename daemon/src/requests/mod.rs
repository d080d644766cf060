//! Interactive requests on the bus: each one an object `/org/tessera/Tessera1/requests/<id>` that
//! only the connection which started it may use, whose signals go to that connection alone, and
//! which lives until its outcome is sent or its owner leaves the bus.
//!
//! What a request does (prompts, retries, waiting for a device) is the core's
//! ([`tessera::service::Request`]); this module only carries it to the bus: the registry of live
//! requests by owner, the pump that turns updates into signals, and the watch on owners leaving.

mod object;
pub mod options;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::StreamExt as _;
use tessera::service::{Request, RequestHandle, Update};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use zbus::fdo::DBusProxy;
use zbus::names::{BusName, OwnedUniqueName};
use zbus::object_server::{ResponseDispatchNotifier, SignalEmitter};
use zbus::zvariant::OwnedObjectPath;
use zbus::{Connection, DBusError as _};

use crate::announce::Announce;
use crate::errors::BusError;
pub use object::RequestObject;

/// Parent of the request objects (the client crate's name). It carries an ObjectManager of its own,
/// so the bus's announcements of request objects come from this path, never from the root's (which
/// announces devices), and the system-bus policy can keep them from other users (see
/// `dbus/org.tessera.Tessera1.conf`).
pub use tessera_client::names::REQUESTS_PATH;

/// The live requests, by id. Cheap to clone; clones share one registry.
#[derive(Clone, Default)]
pub struct Requests {
    registry: Arc<Mutex<Registry>>,
}

#[derive(Default)]
struct Registry {
    live: HashMap<u64, Live>,
    /// Unique names seen leaving the bus, most recent last: a Start call still being handled when
    /// its caller left is refused by this, without asking the bus. A unique name is never reused.
    departed: HashSet<OwnedUniqueName>,
    departed_order: VecDeque<OwnedUniqueName>,
}

/// How many departed names are remembered. A Start call is handled long before this many other
/// connections leave; should one not be, its request ends on its timeout.
const MAX_DEPARTED: usize = 4096;

struct Live {
    owner: OwnedUniqueName,
    handle: RequestHandle,
}

/// The object path of request `id`.
pub fn request_path(id: u64) -> zbus::Result<OwnedObjectPath> {
    tessera_client::names::request_path(id).map_err(zbus::Error::from)
}

impl Requests {
    /// Puts `request`, started by `owner`, on the bus and returns the reply naming its object. Its
    /// signals start once that reply has been sent (zbus's [`ResponseDispatchNotifier`]), so no
    /// signal of a request ever precedes the object path its owner is waiting for.
    pub async fn publish(
        &self,
        conn: &Connection,
        owner: OwnedUniqueName,
        request: Request,
        announce: Announce,
    ) -> Result<ResponseDispatchNotifier<OwnedObjectPath>, BusError> {
        let Request { handle, updates } = request;
        let id = handle.id();
        let path = match request_path(id) {
            Ok(p) => p,
            Err(e) => {
                handle.cancel();
                return Err(e.into());
            }
        };
        {
            // Checked and registered under one lock, which the watch on departures takes too: the
            // owner's departure is either remembered already or finds the request registered.
            let mut registry = self.lock();
            if registry.departed.contains(&owner) {
                drop(registry);
                handle.cancel();
                return Err(BusError::Cancelled(
                    "the caller left the bus before its request started".into(),
                ));
            }
            registry.live.insert(
                id,
                Live {
                    owner: owner.clone(),
                    handle: handle.clone(),
                },
            );
        }
        let object = RequestObject::new(handle.clone(), owner.clone());
        if let Err(e) = conn.object_server().at(path.as_ref(), object).await {
            handle.cancel();
            self.lock().live.remove(&id);
            return Err(e.into());
        }
        let (reply, sent) = ResponseDispatchNotifier::new(path.clone());
        let pump = Pump {
            requests: self.clone(),
            conn: conn.clone(),
            id,
            path,
            owner,
            handle,
            announce,
        };
        tokio::spawn(async move {
            sent.await;
            pump.run(updates).await;
        });
        Ok(reply)
    }

    /// Watches the bus for callers leaving: a request whose owner left is cancelled and its object
    /// removed at once. One match rule for the whole daemon, added before this returns, so a request
    /// published afterwards cannot miss its owner's departure.
    pub async fn follow_owners(&self, conn: &Connection) -> zbus::Result<JoinHandle<()>> {
        let dbus = DBusProxy::new(conn).await?;
        let mut changes = dbus.receive_name_owner_changed().await?;
        let requests = self.clone();
        let conn = conn.clone();
        Ok(tokio::spawn(async move {
            while let Some(change) = changes.next().await {
                let Ok(args) = change.args() else { continue };
                if let (BusName::Unique(name), None) = (args.name(), args.new_owner().as_ref()) {
                    requests
                        .owner_left(&conn, OwnedUniqueName::from(name.to_owned()))
                        .await;
                }
            }
        }))
    }

    /// Cancels every request of `owner` and removes their objects.
    async fn owner_left(&self, conn: &Connection, owner: OwnedUniqueName) {
        let gone: Vec<(u64, RequestHandle)> = {
            let mut registry = self.lock();
            let ids: Vec<u64> = registry
                .live
                .iter()
                .filter(|(_, l)| l.owner == owner)
                .map(|(id, _)| *id)
                .collect();
            let gone = ids
                .into_iter()
                .filter_map(|id| registry.live.remove(&id).map(|l| (id, l.handle)))
                .collect();
            if registry.departed_order.len() >= MAX_DEPARTED {
                if let Some(oldest) = registry.departed_order.pop_front() {
                    registry.departed.remove(&oldest);
                }
            }
            registry.departed.insert(owner.clone());
            registry.departed_order.push_back(owner.clone());
            gone
        };
        for (id, handle) in gone {
            tracing::debug!("request {id}: its caller {owner} left the bus; cancelled");
            handle.cancel();
            remove_object(conn, id).await;
        }
    }

    /// The number of live requests (for tests and the log).
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Whether no request is live.
    pub fn is_empty(&self) -> bool {
        self.lock().live.is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // The map holds plain entries; a panic elsewhere cannot leave one half-written.
        tessera::locks::lock(&self.registry)
    }
}

/// Carries one request's updates to its owner as signals, then removes its object.
struct Pump {
    requests: Requests,
    conn: Connection,
    id: u64,
    path: OwnedObjectPath,
    owner: OwnedUniqueName,
    handle: RequestHandle,
    announce: Announce,
}

impl Pump {
    async fn run(self, mut updates: UnboundedReceiver<Update>) {
        let emitter = SignalEmitter::from_parts(self.conn.clone(), self.path.as_ref())
            .set_destination(BusName::Unique(self.owner.as_ref()));
        let mut ended = false;
        while let Some(update) = updates.recv().await {
            let sent = match update {
                Update::Progress(p) => object::emit_progress(&emitter, &p).await,
                Update::Completed(result) => {
                    ended = true;
                    let sent = RequestObject::completed(&emitter, result.as_str()).await;
                    self.announce.completed(&self.conn, result.as_str());
                    sent
                }
                Update::Failed(e) => {
                    ended = true;
                    let e = BusError::from(e);
                    let message = e.description().unwrap_or_default().to_owned();
                    RequestObject::failed(&emitter, e.name().as_str(), &message).await
                }
            };
            if let Err(e) = sent {
                tracing::debug!("request {}: signal not sent: {e}", self.id);
            }
            if ended {
                break;
            }
        }
        if !ended {
            // Fail closed: the core dropped the request without an outcome.
            tracing::error!("request {} ended without an outcome", self.id);
            self.handle.cancel();
            let e = BusError::Failed("the request ended without an outcome".into());
            let _ = RequestObject::failed(
                &emitter,
                e.name().as_str(),
                "the request ended without an outcome",
            )
            .await;
        }
        self.requests.lock().live.remove(&self.id);
        remove_object(&self.conn, self.id).await;
    }
}

/// Removes request `id`'s object if it is still there.
async fn remove_object(conn: &Connection, id: u64) {
    let Ok(path) = request_path(id) else { return };
    match conn
        .object_server()
        .remove::<RequestObject, _>(path.as_ref())
        .await
    {
        Ok(_) | Err(zbus::Error::InterfaceNotFound) => {}
        Err(e) => tracing::warn!("request {id}: object not removed: {e}"),
    }
}
