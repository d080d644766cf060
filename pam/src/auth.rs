//! pam_sm_authenticate: verify once (`reuse`), or a device login through an interactive request
//! whose progress becomes the conversation. Every path returns a [`Failure`] except the one that
//! ends in [`Verified`]; `outcome::code` turns that into the PAM code.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::c_int;
use std::time::Duration;

use tessera_client::names::BUS_NAME;
use tessera_client::request::{Listener, Request, Update};
use tessera_client::{DeviceProxy, ManagerProxy, Progress, SecretPrompt};
use zbus::fdo::DBusProxy;
use zbus::names::{BusName, OwnedUniqueName};
use zbus::zvariant::{OwnedObjectPath, Value};
use zbus::Connection;
use zeroize::Zeroizing;

use crate::ffi::{self, AuthState, Handle, Level, Style};
use crate::options::{NoUser, Options};
use crate::outcome::{Failure, Verified};
use crate::{bus, remote, runtime};

/// Beyond `timeout=`: the daemon's own timeout ends the request first; this bounds the rest
/// (connecting, checking the token) so that a bus that stops answering cannot hang the caller.
const MARGIN: Duration = Duration::from_secs(5);
/// A reuse asks the daemon one question and no person anything: it never waits longer than this.
const REUSE_BOUND: Duration = Duration::from_secs(10);

/// The whole authentication.
pub fn authenticate(h: &Handle, flags: c_int, args: &[String]) -> Result<Verified, Failure> {
    // A failure now must not leave the success of an earlier call in this handle standing.
    h.clear_state();
    let opts = Options::parse(args).map_err(|e| Failure::ServiceErr(e.to_string()))?;
    let service = h
        .service()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Failure::ServiceErr("PAM_SERVICE is not set".into()))?;
    let user = h.user().filter(|u| !u.is_empty());
    let rhost = h.rhost();
    // PAM_SILENT: no informational messages; the PIN prompt is still a prompt.
    let silent = flags & ffi::PAM_SILENT != 0;
    if opts.debug {
        ffi::syslog(
            Level::Debug,
            &format!(
                "authenticate service={service} user={:?} reuse={}",
                user.as_deref().unwrap_or(""),
                opts.reuse
            ),
        );
    }
    let rt = runtime()?;
    let bound = if opts.reuse {
        REUSE_BOUND.min(opts.timeout + MARGIN)
    } else {
        opts.timeout + MARGIN
    };
    let outcome = rt.block_on(async {
        let login = async {
            if !opts.allow_remote {
                remote::refuse_rhost(rhost.as_deref())?;
            }
            let conn = bus::connect().await?;
            // A reuse leaves the logind session's Remote to ReuseSession, which looks the session
            // up anyway (one logind round trip for both).
            if !opts.allow_remote && !opts.reuse {
                remote::refuse_remote_session(&conn).await?;
            }
            let (manager, owner) = bus::daemon(&conn).await?;
            if opts.reuse {
                reuse(h, &manager, &opts, &service, user.as_deref()).await
            } else {
                let who = Who {
                    service: &service,
                    user: user.as_deref(),
                    silent,
                };
                device_login(h, &conn, &manager, owner, &opts, who).await
            }
        };
        match tokio::time::timeout(bound, login).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::AuthErr(format!(
                "no outcome within {} s",
                bound.as_secs()
            ))),
        }
    });
    // `reuse` falls through to the next module with PAM_AUTH_ERR whatever went wrong.
    match outcome {
        Err(f) if opts.reuse => Err(Failure::AuthErr(format!("reuse: {f}"))),
        other => other,
    }
}

/// Verify once: the daemon finds the caller's login session itself (by our pid), refuses it when
/// logind calls it Remote (unless `allow_remote`), and answers with the claims of a live token
/// bound to it, or an error. No device is touched.
async fn reuse(
    h: &Handle,
    manager: &ManagerProxy<'static>,
    opts: &Options,
    service: &str,
    user: Option<&str>,
) -> Result<Verified, Failure> {
    let user = user.ok_or_else(|| Failure::AuthErr("reuse needs PAM_USER".into()))?;
    let max_age = u32::try_from(opts.max_age.as_secs()).unwrap_or(u32::MAX);
    let mut options = HashMap::from([
        ("service", Value::from(service)),
        ("max_age", Value::from(max_age)),
    ]);
    if opts.allow_remote {
        // Without it the daemon refuses a session logind calls Remote.
        options.insert("allow_remote", Value::from(true));
    }
    let claims = manager
        .reuse_session(user, options)
        .await
        .map_err(|e| client(e.into(), opts.nouser))?;
    let verified = Verified::check(&claims, Some(user))?;
    h.set_state(AuthState {
        user: verified.user().to_owned(),
        token: None,
    })
    .map_err(|rc| Failure::AuthErr(format!("pam_set_data failed ({rc})")))?;
    Ok(verified)
}

/// Whose login, for which service, and whether the application asked for silence.
struct Who<'a> {
    service: &'a str,
    /// `None`: the greeter's empty PAM_USER.
    user: Option<&'a str>,
    silent: bool,
}

/// A device login: StartAuthentication, the conversation, then CheckToken with our audience.
async fn device_login(
    h: &Handle,
    conn: &Connection,
    manager: &ManagerProxy<'static>,
    owner: OwnedUniqueName,
    opts: &Options,
    who: Who<'_>,
) -> Result<Verified, Failure> {
    let Who {
        service,
        user,
        silent,
    } = who;
    let nouser = opts.nouser;
    let audience = opts.audience_for(service);
    // Subscribed before the call, so no Progress is missed; and the daemon leaving the bus.
    let listener = Listener::new(conn).await.map_err(|e| client(e, nouser))?;
    let dbus = DBusProxy::new(conn)
        .await
        .map_err(|e| client(e.into(), nouser))?;
    let mut gone = dbus
        .receive_name_owner_changed_with_args(&[(0, BUS_NAME)])
        .await
        .map_err(|e| client(e.into(), nouser))?;

    let timeout = u32::try_from(opts.timeout.as_secs()).unwrap_or(u32::MAX);
    let mut options = HashMap::from([
        ("timeout", Value::from(timeout)),
        ("audience", Value::from(audience.as_str())),
    ]);
    if let Some(kinds) = &opts.kinds {
        let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        options.insert("kinds", Value::from(kinds));
    }
    if user.is_none() {
        // Greeter login: the daemon finds the one account the device is enrolled for.
        options.insert("any_user", Value::from(true));
    }
    let path = manager
        .start_authentication(user.unwrap_or(""), options)
        .await
        .map_err(|e| client(e.into(), nouser))?;
    let mut request = listener
        .follow(conn, path)
        .await
        .map_err(|e| client(e, nouser))?;

    let mut conversation = Conversation {
        h,
        conn,
        owner,
        names: HashMap::new(),
        nouser,
        silent,
    };
    let deadline = tokio::time::sleep(opts.timeout + MARGIN);
    tokio::pin!(deadline);
    let token = loop {
        let step = tokio::select! {
            update = request.next() => match update {
                Ok(Some(update)) => conversation.step(&request, update).await,
                Ok(None) => Step::Done(Err(Failure::AuthErr("the request ended without a result".into()))),
                Err(e) => Step::Done(Err(client(e, nouser))),
            },
            _ = futures_util::StreamExt::next(&mut gone) => {
                Step::Done(Err(Failure::Unavailable("tesserad left the bus during the request".into())))
            }
            () = &mut deadline => Step::Cancel(Failure::AuthErr(format!(
                "no result within {} s", (opts.timeout + MARGIN).as_secs()
            ))),
        };
        match step {
            Step::Continue => continue,
            Step::Done(Ok(token)) => break token,
            Step::Done(Err(f)) => return Err(f),
            Step::Cancel(f) => {
                // Best effort: our connection closing cancels it too.
                let _ = request.proxy().cancel().await;
                return Err(f);
            }
        }
    };

    let requirements = HashMap::from([("audience", Value::from(audience.as_str()))]);
    let checked = match manager.check_token(&token, requirements).await {
        Ok(claims) => Verified::check(&claims, user),
        Err(e) => Err(client(e.into(), nouser)),
    };
    let verified = match checked {
        Ok(v) => v,
        Err(f) => {
            // A token this login will not use must not stay live: best effort.
            let _ = manager.revoke_token(&token).await;
            return Err(f);
        }
    };
    if user.is_none() {
        h.set_user(verified.user())
            .map_err(|rc| Failure::AuthErr(format!("setting PAM_USER failed ({rc})")))?;
    }
    h.set_state(AuthState {
        user: verified.user().to_owned(),
        token: Some(token),
    })
    .map_err(|rc| Failure::AuthErr(format!("pam_set_data failed ({rc})")))?;
    Ok(verified)
}

/// What one update asks of the loop.
enum Step {
    /// Wait for the next update.
    Continue,
    /// The request ended: the token, or why not.
    Done(Result<Zeroizing<String>, Failure>),
    /// Give up: cancel the request, then fail.
    Cancel(Failure),
}

/// The request's side of the conversation with the user.
struct Conversation<'a> {
    h: &'a Handle,
    conn: &'a Connection,
    owner: OwnedUniqueName,
    /// Device names already asked for.
    names: HashMap<OwnedObjectPath, String>,
    nouser: NoUser,
    /// PAM_SILENT: messages are not shown, prompts still are.
    silent: bool,
}

impl Conversation<'_> {
    async fn step(&mut self, request: &Request, update: Update) -> Step {
        match update {
            Update::Completed(token) => Step::Done(Ok(token)),
            Update::Failed(e) => Step::Done(Err(client(e, self.nouser))),
            Update::Progress(p) => match p {
                Progress::WaitingForDevice => self.info("Insert your card or key"),
                Progress::TouchNeeded { .. } => self.info("Touch your security key"),
                Progress::UvNeeded { .. } => self.info("Verify on your security key"),
                Progress::SelectingDevice { devices } => {
                    let mut names = Vec::new();
                    for d in &devices {
                        names.push(self.name(Some(d)).await);
                    }
                    self.info(&format!(
                        "Several devices can be used: {}. Touch the security key to use, or \
                         remove all but one.",
                        names.join(", ")
                    ))
                }
                Progress::PinNeeded(prompt) => self.pin(request, prompt).await,
                Progress::PukNeeded(_) | Progress::NewPinNeeded(_) => Step::Cancel(
                    Failure::AuthErr("the daemon asked for a PUK during a login".into()),
                ),
                _ => Step::Continue,
            },
        }
    }

    /// A PAM_TEXT_INFO; a conversation that fails cancels the request.
    fn info(&self, text: &str) -> Step {
        self.say(Style::TextInfo, text)
    }

    fn say(&self, style: Style, text: &str) -> Step {
        if self.silent {
            return Step::Continue;
        }
        match self.h.converse(style, text) {
            Ok(_) => Step::Continue,
            Err(rc) => Step::Cancel(Failure::ConvErr(format!("the conversation failed ({rc})"))),
        }
    }

    async fn pin(&mut self, request: &Request, prompt: SecretPrompt) -> Step {
        let name = self.name(prompt.device.as_ref()).await;
        if prompt.last_error.as_deref() == Some("PinInvalid") {
            if let Step::Cancel(f) = self.say(Style::ErrorMsg, "Wrong PIN.") {
                return Step::Cancel(f);
            }
        }
        if prompt.last_try {
            let warning = format!("This is the last try: a wrong PIN blocks {name}.");
            if let Step::Cancel(f) = self.say(Style::ErrorMsg, &warning) {
                return Step::Cancel(f);
            }
        }
        let text = match prompt.retries {
            Some(1) => format!("PIN for {name} (1 try left): "),
            Some(n) => format!("PIN for {name} ({n} tries left): "),
            None => format!("PIN for {name}: "),
        };
        let pin = match self.h.converse(Style::PromptEchoOff, &text) {
            Ok(Some(pin)) if !pin.is_empty() => pin,
            Ok(_) => return Step::Cancel(Failure::AuthErr("no PIN was given".into())),
            Err(rc) => {
                return Step::Cancel(Failure::ConvErr(format!("the conversation failed ({rc})")))
            }
        };
        let sent = if prompt.last_try {
            request.proxy().submit_last_try_pin(&pin).await
        } else {
            request.proxy().submit_pin(&pin).await
        };
        match sent {
            Ok(()) => Step::Continue,
            Err(e) => Step::Cancel(client(e.into(), self.nouser)),
        }
    }

    /// The device's Name property ("your device" if it cannot be read).
    async fn name(&mut self, device: Option<&OwnedObjectPath>) -> String {
        let Some(device) = device else {
            return "your device".into();
        };
        if let Some(n) = self.names.get(device) {
            return n.clone();
        }
        let name = async {
            DeviceProxy::builder(self.conn)
                .destination(BusName::from(self.owner.clone().into_inner()))?
                .path(device.clone())?
                .build()
                .await?
                .name()
                .await
        }
        .await
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "your device".into());
        self.names.insert(device.clone(), name.clone());
        name
    }
}

fn client(e: tessera_client::Error, nouser: NoUser) -> Failure {
    Failure::from_client(&e, nouser)
}
