//! Following a request from its start to its one terminal signal: the updates of one request
//! object, in the order the daemon sent them.
//!
//! ```no_run
//! # async fn f(conn: &zbus::Connection) -> tessera_client::error::Result<()> {
//! use std::collections::HashMap;
//! use tessera_client::request::{Listener, Update};
//! let listener = Listener::new(conn).await?; // before the call: no signal can be missed
//! let manager = tessera_client::ManagerProxy::new(conn).await?;
//! let path = manager.start_authentication("alice", HashMap::new()).await?;
//! let mut request = listener.follow(conn, path).await?;
//! while let Some(update) = request.next().await? {
//!     match update {
//!         Update::Progress(p) => println!("{}", p.state()),
//!         Update::Completed(token) => println!("{}", token.as_str()),
//!         Update::Failed(e) => return Err(e),
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;

use futures_util::StreamExt;
use zbus::message::Type;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{Connection, MatchRule, MessageStream};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::names::{BUS_NAME, REQUEST_INTERFACE};
use crate::progress::Progress;
use crate::proxy::RequestProxy;

/// What a request reports.
#[derive(Debug)]
pub enum Update {
    /// It entered a state.
    Progress(Progress),
    /// It succeeded: the token or the enrollment id. Terminal.
    Completed(Zeroizing<String>),
    /// It failed. Terminal.
    Failed(Error),
}

/// The signals of requests, subscribed to before a Start* call so that none is missed.
pub struct Listener {
    stream: MessageStream,
}

impl Listener {
    /// Subscribes to the Request interface's signals from the daemon.
    pub async fn new(conn: &Connection) -> Result<Listener> {
        let rule = MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(BUS_NAME)?
            .interface(REQUEST_INTERFACE)?
            .build();
        let stream = MessageStream::for_match_rule(rule, conn, None).await?;
        Ok(Listener { stream })
    }

    /// Follows the request at `path` (from the Start* reply).
    pub async fn follow(self, conn: &Connection, path: OwnedObjectPath) -> Result<Request> {
        let proxy = RequestProxy::builder(conn)
            .path(path.clone())?
            .build()
            .await?;
        Ok(Request {
            path,
            proxy,
            stream: self.stream,
            ended: false,
        })
    }
}

/// A request being followed.
pub struct Request {
    path: OwnedObjectPath,
    proxy: RequestProxy<'static>,
    stream: MessageStream,
    ended: bool,
}

impl Request {
    /// The request object.
    pub fn path(&self) -> &OwnedObjectPath {
        &self.path
    }

    /// The proxy, for SubmitPin, SubmitLastTryPin and Cancel.
    pub fn proxy(&self) -> &RequestProxy<'static> {
        &self.proxy
    }

    /// The next update; `None` after the terminal one (or if the connection closed first, which
    /// is an error).
    pub async fn next(&mut self) -> Result<Option<Update>> {
        if self.ended {
            return Ok(None);
        }
        while let Some(msg) = self.stream.next().await {
            let msg = msg?;
            let header = msg.header();
            if header.path().map(|p| p.as_str()) != Some(self.path.as_str()) {
                continue;
            }
            let Some(member) = header.member() else {
                continue;
            };
            let update = match member.as_str() {
                "Progress" => {
                    let (state, details): (String, HashMap<String, OwnedValue>) =
                        msg.body().deserialize()?;
                    Update::Progress(Progress::parse(&state, &details)?)
                }
                "Completed" => {
                    let (result,): (String,) = msg.body().deserialize()?;
                    self.ended = true;
                    Update::Completed(Zeroizing::new(result))
                }
                "Failed" => {
                    let (name, message): (String, String) = msg.body().deserialize()?;
                    self.ended = true;
                    Update::Failed(Error::from_names(&name, message))
                }
                _ => continue,
            };
            return Ok(Some(update));
        }
        Err(Error::Unexpected(
            "the bus connection closed before the request ended".into(),
        ))
    }
}
