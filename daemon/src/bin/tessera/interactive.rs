//! `authenticate`, `enroll` and `unblock` as requests (`Manager.Start*`, then the request's
//! Progress signals): prompts for the PIN, PUK and new PIN when — and only when — the daemon asks,
//! "Insert your card or key…" and "Touch your key…" cues, and Ctrl-C cancelling the request.

use std::collections::{HashMap, VecDeque};

use tessera_client::request::{Listener, Request, Update};
use tessera_client::{
    DeviceProxy, Error, ErrorName, ManagerProxy, Progress, RequestProxy, SecretPrompt,
};
use zbus::zvariant::{ObjectPath, OwnedObjectPath, Value};
use zbus::Connection;
use zeroize::Zeroizing;

use crate::secret::Source;

/// Exit status after Ctrl-C (128 + SIGINT), as shells report it.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Which request to start.
pub enum Start<'a> {
    Authentication {
        user: &'a str,
        device: Option<&'a ObjectPath<'a>>,
    },
    Enrollment {
        user: &'a str,
        device: &'a ObjectPath<'a>,
        /// The credential (PIV slot, FIDO "new"); `None`: the device kind's default.
        credential: Option<&'a str>,
    },
    Unblock {
        device: &'a ObjectPath<'a>,
    },
}

/// How the request runs.
pub struct Run<'a> {
    /// Where secrets are read.
    pub secrets: &'a Source,
    /// Wait for a device to be inserted.
    pub wait: bool,
    /// The whole request's limit in seconds (None: the daemon's).
    pub timeout: Option<u32>,
    /// Answer no PIN prompt (fail with PinRequired).
    pub no_pin: bool,
    /// The account shown in the PIN prompt.
    pub user_shown: &'a str,
    /// A PIN given up front (`--pin-stdin`), sent in the Start call's options.
    pub pin: Option<&'a str>,
}

/// How a request ended for the CLI.
pub enum Outcome {
    /// The token or enrollment id.
    Completed(Zeroizing<String>),
    /// Ctrl-C: the request was cancelled.
    Interrupted,
}

/// Starts the request and follows it to its end.
pub async fn run(conn: &Connection, start: &Start<'_>, how: &Run<'_>) -> Result<Outcome, Error> {
    // Subscribed before the call, so the first Progress (sent right after the reply) is seen.
    let listener = Listener::new(conn).await?;
    let manager = ManagerProxy::new(conn).await?;
    let path = start_request(&manager, start, how).await?;
    let mut request = listener.follow(conn, path).await?;
    let mut flow = Flow { conn, how, start };
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    // Updates that arrived while a prompt was up, handled once it is answered.
    let mut queued: VecDeque<Update> = VecDeque::new();
    loop {
        let update = match queued.pop_front() {
            Some(u) => Some(u),
            None => tokio::select! {
                u = request.next() => u?,
                _ = &mut interrupt => return cancel(&mut request, how).await,
            },
        };
        match update {
            None => {
                return Err(Error::Unexpected(
                    "the request ended without a result".into(),
                ))
            }
            Some(Update::Completed(result)) => return Ok(Outcome::Completed(result)),
            Some(Update::Failed(e)) => return Err(e),
            Some(Update::Progress(p)) => {
                let proxy = request.proxy().clone();
                let answer = flow.answer(&proxy, p);
                tokio::pin!(answer);
                // The request may end while the person types (its PIN timeout, the card pulled):
                // then the prompt is dropped (echo back on) and the end reported.
                let step = loop {
                    tokio::select! {
                        s = &mut answer => break s,
                        u = request.next() => match u? {
                            Some(Update::Progress(p)) => queued.push_back(Update::Progress(p)),
                            Some(Update::Completed(r)) => return Ok(Outcome::Completed(r)),
                            Some(Update::Failed(e)) => {
                                how.secrets.say("");
                                return Err(e);
                            }
                            None => {}
                        },
                        _ = &mut interrupt => return cancel(&mut request, how).await,
                    }
                };
                if let Err(e) = step {
                    // Nothing more will be answered: end the request rather than leave it
                    // waiting for its timeout.
                    let _ = request.proxy().cancel().await;
                    return Err(e);
                }
            }
        }
    }
}

async fn start_request(
    manager: &ManagerProxy<'_>,
    start: &Start<'_>,
    how: &Run<'_>,
) -> Result<OwnedObjectPath, Error> {
    let mut opts: HashMap<&str, Value<'_>> = HashMap::new();
    if let Some(t) = how.timeout {
        opts.insert("timeout", Value::from(t));
    }
    Ok(match start {
        Start::Authentication { user, device } => {
            opts.insert("wait", Value::from(how.wait));
            if let Some(p) = how.pin {
                opts.insert("pin", Value::from(p));
            }
            if let Some(d) = device {
                opts.insert("device", Value::from((*d).clone()));
            }
            manager.start_authentication(user, opts).await?
        }
        Start::Enrollment {
            user,
            device,
            credential,
        } => {
            // "slot" is the name every daemon version knows.
            if let Some(c) = credential {
                opts.insert("slot", Value::from(*c));
            }
            if let Some(p) = how.pin {
                opts.insert("pin", Value::from(p));
            }
            manager.start_enrollment(user, device, opts).await?
        }
        Start::Unblock { device } => manager.start_unblock(device, opts).await?,
    })
}

/// Ctrl-C: Cancel on the bus, then wait (briefly) for the request's end so that it is gone when
/// the CLI exits.
async fn cancel(request: &mut Request, how: &Run<'_>) -> Result<Outcome, Error> {
    how.secrets.say("");
    let _ = request.proxy().cancel().await;
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Ok(Some(u)) = request.next().await {
            if matches!(u, Update::Completed(_) | Update::Failed(_)) {
                return;
            }
        }
    });
    let _ = end.await;
    Ok(Outcome::Interrupted)
}

struct Flow<'a> {
    conn: &'a Connection,
    how: &'a Run<'a>,
    start: &'a Start<'a>,
}

impl Flow<'_> {
    async fn answer(&mut self, request: &RequestProxy<'static>, p: Progress) -> Result<(), Error> {
        let say = |t: &str| self.how.secrets.say(t);
        match p {
            // Without waiting the request fails at once (NoDevice): no cue then.
            Progress::WaitingForDevice if self.how.wait => say("Insert your card or key…"),
            Progress::SelectingDevice { devices } => {
                let mut names = Vec::new();
                for d in &devices {
                    names.push(self.device_name(Some(d)).await);
                }
                say(&format!(
                    "Several enrolled cards are present ({}): remove all but one…",
                    names.join(", ")
                ));
            }
            Progress::TouchNeeded { .. } => say("Touch your key…"),
            Progress::UvNeeded { .. } => say("Verify on your key (its fingerprint sensor)…"),
            Progress::PinNeeded(prompt) => self.pin(request, prompt).await?,
            Progress::PukNeeded(prompt) => {
                if let (Some(e), true) = (&prompt.last_error, self.how.secrets.is_terminal()) {
                    say(&refused(e));
                }
                let text = format!(
                    "PUK for {}{}: ",
                    self.device_name(prompt.device.as_ref()).await,
                    tries(prompt.retries)
                );
                let puk = self.secret(&text, &prompt, "PUK").await?;
                request.submit_pin(&puk).await?;
            }
            Progress::NewPinNeeded(prompt) => {
                let new = self.new_pin(&prompt).await?;
                request.submit_pin(&new).await?;
            }
            // "working", and states of newer daemons: nothing to do or show.
            _ => {}
        }
        Ok(())
    }

    async fn pin(
        &mut self,
        request: &RequestProxy<'static>,
        prompt: SecretPrompt,
    ) -> Result<(), Error> {
        if self.how.no_pin {
            return Err(Error::Daemon {
                name: ErrorName::PinRequired,
                message: "a PIN is required".into(),
            });
        }
        let secrets = self.how.secrets;
        if let (Some(e), true) = (&prompt.last_error, secrets.is_terminal()) {
            secrets.say(&refused(e));
        }
        let whose = match self.start {
            Start::Unblock { .. } => String::new(),
            _ => format!(" for {}", self.how.user_shown),
        };
        let text = format!(
            "PIN{whose} on {}{}: ",
            self.device_name(prompt.device.as_ref()).await,
            tries(prompt.retries)
        );
        let pin = match self.secret(&text, &prompt, "PIN").await {
            Ok(p) => p,
            // Out of lines after a refused PIN, or at a last try (never spent from standard
            // input, whatever PIN was given up front): the refusal is the answer.
            Err(Error::Usage(_))
                if (prompt.last_error.is_some() || prompt.last_try) && !secrets.is_terminal() =>
            {
                return Err(last_refusal(&prompt));
            }
            Err(e) => return Err(e),
        };
        if prompt.last_try && secrets.is_terminal() {
            let again = self
                .secret(
                    "Last try before the card blocks — type the PIN again to use it: ",
                    &prompt,
                    "PIN",
                )
                .await?;
            if again != pin {
                return Err(Error::Usage(
                    "the two PINs differ; the last try was not spent".into(),
                ));
            }
            request.submit_last_try_pin(&pin).await?;
        } else {
            // From standard input the last try is never spent: the daemon answers PinWouldBlock.
            request.submit_pin(&pin).await?;
        }
        Ok(())
    }

    async fn new_pin(&self, prompt: &SecretPrompt) -> Result<Zeroizing<String>, Error> {
        let name = self.device_name(prompt.device.as_ref()).await;
        let new = self
            .secret(&format!("New PIN for {name}: "), prompt, "PIN")
            .await?;
        if self.how.secrets.is_terminal() {
            let again = self
                .secret("Type the new PIN again: ", prompt, "PIN")
                .await?;
            if again != new {
                return Err(Error::Usage("the two new PINs differ".into()));
            }
        }
        Ok(new)
    }

    /// One secret, checked against the prompt's lengths (a person is asked again).
    async fn secret(
        &self,
        text: &str,
        prompt: &SecretPrompt,
        what: &str,
    ) -> Result<Zeroizing<String>, Error> {
        let secrets = self.how.secrets;
        loop {
            let mut pending = secrets.ask(text)?;
            let Some(s) = pending.line().await? else {
                return Err(Error::Usage(format!("no {what} given (end of input)")));
            };
            let problem = if s.is_empty() {
                Some(format!("empty {what}"))
            } else if (s.len() as u64) < u64::from(prompt.min_length)
                || (s.len() as u64) > u64::from(prompt.max_length)
            {
                Some(format!(
                    "the {what} must be {} to {} characters",
                    prompt.min_length, prompt.max_length
                ))
            } else {
                None
            };
            match problem {
                None => return Ok(s),
                Some(p) if secrets.is_terminal() => secrets.say(&format!("{p}; try again.")),
                Some(p) => {
                    return Err(Error::Daemon {
                        name: ErrorName::PinFormat,
                        message: p,
                    })
                }
            }
        }
    }

    /// The device's name for prompts: its Name property, else its id.
    async fn device_name(&self, device: Option<&OwnedObjectPath>) -> String {
        let Some(path) = device else {
            return "the card".into();
        };
        let name = async {
            DeviceProxy::builder(self.conn)
                .path(path.clone())?
                .build()
                .await?
                .name()
                .await
        };
        match name.await {
            Ok(n) if !n.is_empty() => n,
            _ => tessera_client::names::device_id(path)
                .unwrap_or(path.as_str())
                .to_owned(),
        }
    }
}

/// " (3 tries left)", or nothing when the device does not tell.
fn tries(retries: Option<u32>) -> String {
    match retries {
        Some(1) => " (1 try left)".into(),
        Some(n) => format!(" ({n} tries left)"),
        None => String::new(),
    }
}

/// The sentence for a refused answer, before the prompt again.
fn refused(last_error: &str) -> String {
    match last_error {
        "PinInvalid" => "Wrong PIN.".into(),
        "PukInvalid" => "Wrong PUK.".into(),
        other => format!("Refused: {other}."),
    }
}

/// The error a non-interactive run reports when a refused PIN cannot be retried.
fn last_refusal(prompt: &SecretPrompt) -> Error {
    let name = match prompt.last_error.as_deref().and_then(ErrorName::from_short) {
        Some(name) => name,
        None if prompt.last_try => ErrorName::PinWouldBlock,
        None => ErrorName::PinInvalid,
    };
    let n = prompt.retries;
    let message = match (name, n) {
        (ErrorName::PinInvalid, Some(n)) => format!("wrong PIN, {n} retries left"),
        (ErrorName::PukInvalid, Some(n)) => format!("wrong PUK, {n} retries left"),
        (ErrorName::PinWouldBlock, Some(n)) => format!(
            "PIN not tried: only {n} retry left, spending it could block the card; unblock it \
             with the PUK"
        ),
        (other, _) => format!("the daemon refused the answer ({other})"),
    };
    Error::Daemon { name, message }
}
