//! `tessera`: the command-line client of `tesserad` (status, enroll, authenticate, unblock,
//! validate, check, revoke, watch, ...), built on the `tessera-client` crate. Every failure is
//! printed one way: `tessera: <ErrorName>: <message>`, and a `hint:` line where one helps.

mod args;
mod devices;
mod interactive;
mod output;
mod secret;
mod session_token;
mod tokens;
mod v1;
mod watch;

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use tessera_client::{report, Error, ManagerProxy};
use zbus::zvariant::Value;
use zbus::Connection;
use zeroize::Zeroizing;

use args::{Cli, Command, ConfigCommand, PinArgs, PolicyCommand, Shell};
use interactive::{Outcome, Run, Start};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&Error::Io(e)),
    };
    let result = runtime.block_on(run(cli));
    // A secret being read on a blocking thread must not hold the exit up.
    runtime.shutdown_background();
    match result {
        Ok(Done::Success) => ExitCode::SUCCESS,
        Ok(Done::Interrupted) => ExitCode::from(interactive::EXIT_INTERRUPTED),
        Err(e) => fail(&e),
    }
}

fn fail(e: &Error) -> ExitCode {
    eprintln!("{}", report::render("tessera", e));
    ExitCode::FAILURE
}

enum Done {
    Success,
    Interrupted,
}

async fn run(cli: Cli) -> Result<Done, Error> {
    let json = cli.json;
    // Commands that need no daemon.
    match &cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            tessera::policy::config::Config::load(file).map_err(|e| Error::Daemon {
                name: tesserad::errors::error_name(&e),
                message: e.to_string(),
            })?;
            println!("{}: ok", file.display());
            return Ok(Done::Success);
        }
        Command::Completions { shell } => {
            completions(*shell);
            return Ok(Done::Success);
        }
        Command::Token => {
            let token = session_token::find()?;
            println!("{}", token.as_str());
            return Ok(Done::Success);
        }
        _ => {}
    }
    let conn = tessera_client::connect(&cli.bus).await?;
    let manager = ManagerProxy::new(&conn).await?;
    match cli.command {
        Command::Status => devices::status(&conn, json).await?,
        Command::Enroll {
            user,
            device,
            credential,
            pin,
        } => {
            let user = user.unwrap_or_default();
            let device = match device {
                Some(d) => devices::resolve(&conn, &d).await?,
                None => devices::only(&conn).await?,
            };
            let start = Start::Enrollment {
                user: &user,
                device: &device,
                credential: credential.as_deref(),
            };
            return finish(&conn, start, &user, pin, false, |id| {
                if json {
                    println!("{}", serde_json::json!({ "id": id }));
                } else {
                    println!("{id}");
                }
            })
            .await;
        }
        Command::Authenticate {
            user,
            device,
            no_pin,
            pin,
        } => {
            let user = user.unwrap_or_default();
            let device = match device {
                Some(d) => Some(devices::resolve(&conn, &d).await?),
                None => None,
            };
            let start = Start::Authentication {
                user: &user,
                device: device.as_deref(),
            };
            return finish(&conn, start, &user, pin, no_pin, |token| {
                if json {
                    println!("{}", serde_json::json!({ "token": token }));
                } else {
                    println!("{token}");
                }
            })
            .await;
        }
        Command::Unblock { device, pin } => {
            let device = match device {
                Some(d) => devices::resolve(&conn, &d).await?,
                None => devices::only(&conn).await?,
            };
            let start = Start::Unblock { device: &device };
            return finish(&conn, start, "", pin, false, |_| {
                if json {
                    println!("{}", serde_json::json!({ "unblocked": true }));
                } else {
                    println!("unblocked; the new PIN is in force");
                }
            })
            .await;
        }
        Command::Validate { token } => {
            let token = tokens::read_token(token.as_deref(), "validate")?;
            let claims = manager.validate_token(&token).await?;
            tokens::print_claims(&claims, json);
        }
        Command::Check {
            token,
            audience,
            max_age,
            amr,
        } => {
            let token = tokens::read_token(token.as_deref(), "check")?;
            let mut requirements: HashMap<&str, Value<'_>> = HashMap::new();
            if let Some(a) = &audience {
                requirements.insert("audience", Value::from(a.as_str()));
            }
            if let Some(s) = max_age {
                requirements.insert("max_age", Value::from(s));
            }
            if !amr.is_empty() {
                requirements.insert("amr", Value::from(amr.clone()));
            }
            let claims = manager.check_token(&token, requirements).await?;
            tokens::print_claims(&claims, json);
        }
        Command::Revoke { token, all, user } => {
            if all {
                let user = user.unwrap_or_default();
                // RevokeSessions reports no count: count the live sessions just before.
                let n = manager.list_sessions(&user).await?.len();
                manager.revoke_sessions(&user).await?;
                if json {
                    println!("{}", serde_json::json!({ "revoked": n }));
                } else {
                    println!("revoked {n} session{}", if n == 1 { "" } else { "s" });
                }
            } else {
                let token = tokens::read_token(token.as_deref(), "revoke")?;
                manager.revoke_token(&token).await?;
                if json {
                    println!("{}", serde_json::json!({ "revoked": 1 }));
                } else {
                    println!("revoked");
                }
            }
        }
        Command::Refresh { token } => {
            let token = tokens::read_token(token.as_deref(), "refresh")?;
            let new = Zeroizing::new(manager.refresh_token(&token).await?);
            if json {
                println!("{}", serde_json::json!({ "token": new.as_str() }));
            } else {
                println!("{}", new.as_str());
            }
        }
        Command::Sessions { user } => {
            let sessions = manager.list_sessions(&user.unwrap_or_default()).await?;
            if json {
                sessions
                    .iter()
                    .for_each(|s| println!("{}", output::json(s)));
            } else if sessions.is_empty() {
                println!("no live sessions");
            } else {
                for s in &sessions {
                    println!(
                        "{}  {}  issued {}  expires {}  last used {}  reader {}",
                        output::field(s, "jti"),
                        output::field(s, "user"),
                        output::field(s, "iat"),
                        output::field(s, "exp"),
                        output::field(s, "last_used"),
                        output::field(s, "reader"),
                    );
                }
            }
        }
        Command::Enrollments { user } => {
            let enrollments = manager.list_enrollments(&user.unwrap_or_default()).await?;
            if json {
                enrollments
                    .iter()
                    .for_each(|e| println!("{}", output::json(e)));
            } else if enrollments.is_empty() {
                println!("no enrollments");
            } else {
                for e in &enrollments {
                    println!(
                        "{}  {}  {} {} on {}  enrolled {}  last used {}",
                        output::field(e, "id"),
                        output::field(e, "user"),
                        output::field(e, "kind"),
                        output::field(e, "credential"),
                        output::field(e, "device_name"),
                        output::field(e, "created"),
                        output::field(e, "last_used"),
                    );
                }
            }
        }
        Command::Unenroll { id } => {
            manager.remove_enrollment(&id).await?;
            if json {
                println!("{}", serde_json::json!({ "removed": id }));
            } else {
                println!("removed {id}");
            }
        }
        Command::Policy {
            command: PolicyCommand::Show { user },
        } => {
            let items = manager.effective_policy(&user.unwrap_or_default()).await?;
            // Columns as wide as their longest entry (a PAM service's key, a FIDO rp id).
            let width = |col: fn(&(String, String, String)) -> usize| {
                items.iter().map(col).max().unwrap_or(0)
            };
            let (keys, values) = (width(|i| i.0.len()), width(|i| i.1.len()));
            for (key, value, source) in items {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "key": key, "value": value, "source": source })
                    );
                } else {
                    println!("{key:<keys$} = {value:<values$} # {source}");
                }
            }
        }
        Command::RotateKey => {
            let before = tokens::key_ids(&manager.jwks().await?);
            manager.rotate_key().await?;
            let after = tokens::key_ids(&manager.jwks().await?);
            let new: Vec<&String> = after.iter().filter(|k| !before.contains(*k)).collect();
            let new = new.first().map_or("unknown", |k| k.as_str());
            if json {
                println!("{}", serde_json::json!({ "kid": new }));
            } else {
                println!("rotated: new tokens are signed with key {new}");
            }
        }
        Command::Reload => {
            manager.reload_config().await?;
            if json {
                println!("{}", serde_json::json!({ "reloaded": true }));
            } else {
                println!("reloaded");
            }
        }
        Command::Jwks => println!("{}", manager.jwks().await?),
        Command::Watch => watch::watch(&conn, json).await?,
        Command::Config { .. } | Command::Completions { .. } | Command::Token => {}
    }
    Ok(Done::Success)
}

/// Runs an interactive request and prints its result with `print`.
async fn finish(
    conn: &Connection,
    start: Start<'_>,
    user: &str,
    pin: PinArgs,
    no_pin: bool,
    print: impl FnOnce(&str),
) -> Result<Done, Error> {
    let secrets = secret::Source::choose(pin.pin_stdin)?;
    let wait = if pin.no_wait {
        false
    } else {
        pin.wait || secrets.is_terminal()
    };
    let user_shown = shown_user(user);
    // --pin-stdin gives the PIN up front, as v1 took it: the daemon refuses one it would not use
    // (a 9E login) instead of it being dropped unseen. Unblocking asks for the PUK at its prompt.
    let up_front = match (&start, pin.pin_stdin && !no_pin) {
        (Start::Authentication { .. } | Start::Enrollment { .. }, true) => {
            Some(v1::read_pin(&secrets).await?)
        }
        _ => None,
    };
    let how = Run {
        secrets: &secrets,
        wait,
        timeout: pin.timeout,
        no_pin,
        user_shown: &user_shown,
        pin: up_front.as_ref().map(|p| p.as_str()),
    };
    match interactive::run(conn, &start, &how).await {
        Ok(Outcome::Completed(result)) => {
            print(result.as_str());
            Ok(Done::Success)
        }
        Ok(Outcome::Interrupted) => {
            eprintln!(
                "{}",
                report::render(
                    "tessera",
                    &Error::Daemon {
                        name: tessera_client::ErrorName::Cancelled,
                        message: "the request was cancelled".into(),
                    }
                )
            );
            Ok(Done::Interrupted)
        }
        Err(e) if v1::is_unknown_method(&e) => {
            // A tesserad from before requests: the v1 call, with the PIN asked up front.
            let result = v1::call(conn, &start, &how).await?;
            print(result.as_str());
            Ok(Done::Success)
        }
        Err(e) => Err(e),
    }
}

/// The account named in prompts: `user`, or the caller's own name.
fn shown_user(user: &str) -> String {
    if !user.is_empty() {
        return user.to_owned();
    }
    match nix::unistd::User::from_uid(nix::unistd::getuid()) {
        Ok(Some(u)) => u.name,
        _ => format!("uid {}", nix::unistd::getuid()),
    }
}

fn completions(shell: Shell) {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "tessera", &mut out);
    let _ = out.flush();
}
