//! `tessera`: the command-line client of `tesserad` (status, enroll, authenticate, validate, check,
//! revoke, watch), built on the crate's D-Bus proxies.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use tessera_client::names::{BUS_NAME, DEVICES_PATH, ROOT_PATH};
use tessera_client::{BusChoice, DeviceProxy, ManagerProxy};
use zbus::zvariant::{ObjectPath, OwnedValue, Value};
use zbus::Connection;
use zeroize::Zeroizing;

/// Command-line client of the Tessera daemon.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Bus the daemon serves on: "session", "system", or a D-Bus address.
    #[arg(long, env = "TESSERA_BUS", default_value = "system")]
    bus: BusChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the present devices.
    Status,
    /// Enroll a card's key for a user (PIN checked on the card).
    Enroll {
        /// Account to enroll [default: your own].
        #[arg(long, default_value = "")]
        user: String,
        /// Device object path or id [default: the only present device].
        #[arg(long)]
        device: Option<String>,
        /// Key slot: 9a (PIN at every login) or 9e (card authentication, no PIN).
        #[arg(long, default_value = "9a")]
        slot: String,
        /// Read the PIN from the first line of standard input instead of prompting.
        #[arg(long)]
        pin_stdin: bool,
    },
    /// Authenticate with an enrolled card; prints the session token.
    Authenticate {
        /// Account to authenticate [default: your own].
        #[arg(long, default_value = "")]
        user: String,
        /// Device object path or id [default: the first present enrolled device].
        #[arg(long)]
        device: Option<String>,
        /// Read the PIN from the first line of standard input instead of prompting.
        #[arg(long)]
        pin_stdin: bool,
        /// Send no PIN (for keys enrolled in slot 9e).
        #[arg(long, conflicts_with = "pin_stdin")]
        no_pin: bool,
    },
    /// Validate a token and print its claims as JSON.
    Validate {
        /// The token, or "-" (the default) to read it from standard input.
        #[arg(default_value = "-")]
        token: String,
    },
    /// Check a token as a relying service does and print its claims as JSON.
    Check {
        /// The token, or "-" (the default) to read it from standard input.
        #[arg(default_value = "-")]
        token: String,
        /// The audience the token must be issued for.
        #[arg(long)]
        audience: Option<String>,
        /// The longest time, in seconds, since the user authenticated with the device.
        #[arg(long)]
        max_age: Option<u32>,
        /// An authentication method the token must carry (repeat for several), e.g. "pin".
        #[arg(long)]
        amr: Vec<String>,
    },
    /// Revoke a token (logout), or with --all every live token of a user.
    Revoke {
        /// The token, or "-" (the default) to read it from standard input.
        #[arg(default_value = "-", conflicts_with = "all")]
        token: String,
        /// Revoke every live token of --user (default: yourself) instead of one token.
        #[arg(long)]
        all: bool,
        /// With --all: whose tokens [default: your own; others' need root].
        #[arg(long, default_value = "", requires = "all")]
        user: String,
    },
    /// Exchange a live token for a new one of the same session (the old one is revoked).
    Refresh {
        /// The token, or "-" (the default) to read it from standard input.
        #[arg(default_value = "-")]
        token: String,
    },
    /// List the live tokens of a user [default: your own; others' need root].
    Sessions {
        /// The account.
        #[arg(default_value = "")]
        user: String,
    },
    /// List the enrolled keys of a user [default: your own; others' need root], one JSON per line.
    Enrollments {
        /// The account.
        #[arg(default_value = "")]
        user: String,
    },
    /// Remove an enrollment by id (your own, or any as root): its card no longer authenticates and
    /// its live tokens are revoked.
    Unenroll {
        /// The enrollment id (as `tessera enrollments` shows it).
        id: String,
    },
    /// Token policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Sign new tokens with a fresh key now (root).
    RotateKey,
    /// Make the daemon read its configuration file again (root).
    Reload,
    /// Print the daemon's public signing keys (JWK Set).
    Jwks,
    /// Print device and token events as they happen, one per line, until interrupted.
    Watch,
    /// Configuration file tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// The token rules that apply to a user, and where each value comes from.
    Show {
        /// The account [default: your own].
        #[arg(default_value = "")]
        user: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration file without starting anything; exit 1 with the reason if it is bad.
    Check {
        /// The file to check.
        file: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tessera: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// "ErrorName: message" for errors from the daemon, the plain message otherwise.
fn describe(e: &anyhow::Error) -> String {
    if let Some(zbus::Error::MethodError(name, msg, _)) = e.downcast_ref::<zbus::Error>() {
        let short = tessera_client::error::short_name(name.as_str());
        return match msg {
            Some(m) => format!("{short}: {m}"),
            None => short.to_owned(),
        };
    }
    format!("{e:#}")
}

async fn connect(bus: &BusChoice) -> anyhow::Result<Connection> {
    Ok(match bus {
        BusChoice::Session => Connection::session().await?,
        BusChoice::System => Connection::system().await?,
        BusChoice::Address(a) => {
            zbus::connection::Builder::address(a.as_str())?
                .build()
                .await?
        }
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Commands that need no daemon.
    if let Command::Config {
        command: ConfigCommand::Check { file },
    } = &cli.command
    {
        tessera::policy::config::Config::load(file)?;
        println!("{}: ok", file.display());
        return Ok(());
    }
    let conn = connect(&cli.bus).await?;
    let manager = ManagerProxy::new(&conn).await?;
    match cli.command {
        Command::Status => status(&conn).await,
        Command::Enroll {
            user,
            device,
            slot,
            pin_stdin,
        } => {
            let device = match device {
                Some(d) => device_path(&d)?,
                None => only_device(&conn).await?,
            };
            let pin = read_pin(pin_stdin)?;
            let mut opts: HashMap<&str, Value<'_>> = HashMap::new();
            opts.insert("pin", Value::from(pin.as_str()));
            opts.insert("slot", Value::from(slot.as_str()));
            let id = manager
                .enroll(&user, &ObjectPath::try_from(device.as_str())?, opts)
                .await?;
            println!("{id}");
            Ok(())
        }
        Command::Authenticate {
            user,
            device,
            pin_stdin,
            no_pin,
        } => {
            let pin = if no_pin {
                None
            } else {
                Some(read_pin(pin_stdin)?)
            };
            let device = device.map(|d| device_path(&d)).transpose()?;
            let mut opts: HashMap<&str, Value<'_>> = HashMap::new();
            if let Some(p) = &pin {
                opts.insert("pin", Value::from(p.as_str()));
            }
            if let Some(d) = &device {
                opts.insert("device", Value::from(ObjectPath::try_from(d.as_str())?));
            }
            let token = Zeroizing::new(manager.authenticate(&user, opts).await?);
            println!("{}", token.as_str());
            Ok(())
        }
        Command::Validate { token } => {
            let token = read_token(&token)?;
            let claims = manager.validate_token(&token).await?;
            println!("{}", claims_json(&claims));
            Ok(())
        }
        Command::Check {
            token,
            audience,
            max_age,
            amr,
        } => {
            let token = read_token(&token)?;
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
            println!("{}", claims_json(&claims));
            Ok(())
        }
        Command::Revoke { token, all, user } => {
            if all {
                manager.revoke_sessions(&user).await?;
                println!("revoked all sessions");
            } else {
                let token = read_token(&token)?;
                manager.revoke_token(&token).await?;
                println!("revoked");
            }
            Ok(())
        }
        Command::Refresh { token } => {
            let token = read_token(&token)?;
            let new = Zeroizing::new(manager.refresh_token(&token).await?);
            println!("{}", new.as_str());
            Ok(())
        }
        Command::Sessions { user } => {
            let sessions = manager.list_sessions(&user).await?;
            if sessions.is_empty() {
                println!("no live sessions");
            }
            for s in &sessions {
                println!("{}", claims_json(s));
            }
            Ok(())
        }
        Command::Enrollments { user } => {
            let enrollments = manager.list_enrollments(&user).await?;
            if enrollments.is_empty() {
                println!("no enrollments");
            }
            for e in &enrollments {
                println!("{}", claims_json(e));
            }
            Ok(())
        }
        Command::Unenroll { id } => {
            manager.remove_enrollment(&id).await?;
            println!("removed {id}");
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Show { user },
        } => {
            for (key, value, source) in manager.effective_policy(&user).await? {
                println!("{key:<18} = {value:<12} # {source}");
            }
            Ok(())
        }
        Command::RotateKey => {
            manager.rotate_key().await?;
            println!("rotated");
            Ok(())
        }
        Command::Reload => {
            manager.reload_config().await?;
            println!("reloaded");
            Ok(())
        }
        Command::Jwks => {
            println!("{}", manager.jwks().await?);
            Ok(())
        }
        Command::Watch => watch(&conn).await,
        Command::Config { .. } => Ok(()),
    }
}

async fn status(conn: &Connection) -> anyhow::Result<()> {
    let paths = device_paths(conn).await?;
    if paths.is_empty() {
        println!("no devices present");
    }
    for path in paths {
        let d = DeviceProxy::builder(conn)
            .path(path.as_str())?
            .build()
            .await?;
        println!(
            "{path}\n  kind: {}\n  transport: {}\n  name: {}\n  reader: {}",
            d.kind().await?,
            d.transport().await?,
            d.name().await?,
            d.reader().await?
        );
    }
    Ok(())
}

async fn device_paths(conn: &Connection) -> anyhow::Result<Vec<String>> {
    let om = zbus::fdo::ObjectManagerProxy::builder(conn)
        .destination(BUS_NAME)?
        .path(ROOT_PATH)?
        .build()
        .await?;
    let mut paths: Vec<String> = om
        .get_managed_objects()
        .await?
        .into_keys()
        .map(|p| p.to_string())
        .filter(|p| p.starts_with(&format!("{DEVICES_PATH}/")))
        .collect();
    paths.sort();
    Ok(paths)
}

async fn only_device(conn: &Connection) -> anyhow::Result<String> {
    let mut paths = device_paths(conn).await?;
    match paths.len() {
        0 => anyhow::bail!("no device present; insert a card"),
        1 => Ok(paths.remove(0)),
        _ => anyhow::bail!(
            "several devices present, name one with --device: {}",
            paths.join(", ")
        ),
    }
}

fn device_path(d: &str) -> anyhow::Result<String> {
    if d.starts_with('/') {
        Ok(d.to_owned())
    } else {
        Ok(format!("{DEVICES_PATH}/{d}"))
    }
}

/// The PIN from standard input (`--pin-stdin`) or a prompt on the terminal without echo.
fn read_pin(from_stdin: bool) -> anyhow::Result<Zeroizing<String>> {
    let pin = if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line)?;
        Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned())
    } else {
        Zeroizing::new(rpassword::prompt_password("PIN: ")?)
    };
    if pin.is_empty() {
        anyhow::bail!("empty PIN");
    }
    Ok(pin)
}

fn read_token(arg: &str) -> anyhow::Result<Zeroizing<String>> {
    if arg != "-" {
        return Ok(Zeroizing::new(arg.to_owned()));
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(Zeroizing::new(line.trim().to_owned()))
}

/// Prints the daemon's signals in the order the bus delivered them (one stream, one match rule).
async fn watch(conn: &Connection) -> anyhow::Result<()> {
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(BUS_NAME)?
        .build();
    let mut stream = zbus::MessageStream::for_match_rule(rule, conn, None).await?;
    println!("watching");
    std::io::stdout().flush()?;
    while let Some(msg) = stream.next().await {
        let msg = msg?;
        let header = msg.header();
        let (Some(iface), Some(member)) = (header.interface(), header.member()) else {
            continue;
        };
        match (iface.as_str(), member.as_str()) {
            ("org.tessera.Tessera1.Manager", "TokenRevoked") => {
                let (jti, user, reason): (String, String, String) = msg.body().deserialize()?;
                println!("TokenRevoked jti={jti} user={user} reason={reason}");
            }
            ("org.freedesktop.DBus.ObjectManager", "InterfacesAdded") => {
                let (path, _): (
                    zbus::zvariant::OwnedObjectPath,
                    HashMap<String, HashMap<String, OwnedValue>>,
                ) = msg.body().deserialize()?;
                println!("DeviceAdded {}", path.as_str());
            }
            ("org.freedesktop.DBus.ObjectManager", "InterfacesRemoved") => {
                let (path, _): (zbus::zvariant::OwnedObjectPath, Vec<String>) =
                    msg.body().deserialize()?;
                println!("DeviceRemoved {}", path.as_str());
            }
            _ => continue,
        }
        std::io::stdout().flush()?;
    }
    Ok(())
}

/// Claims as JSON, keys sorted.
fn claims_json(claims: &HashMap<String, OwnedValue>) -> String {
    let mut map = serde_json::Map::new();
    let mut keys: Vec<&String> = claims.keys().collect();
    keys.sort();
    for k in keys {
        if let Some(v) = claims.get(k) {
            map.insert(k.clone(), value_json(v));
        }
    }
    serde_json::Value::Object(map).to_string()
}

fn value_json(v: &Value<'_>) -> serde_json::Value {
    match v {
        Value::Str(s) => serde_json::Value::from(s.as_str()),
        Value::U64(n) => serde_json::Value::from(*n),
        Value::I64(n) => serde_json::Value::from(*n),
        Value::U32(n) => serde_json::Value::from(*n),
        Value::Bool(b) => serde_json::Value::from(*b),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(value_json).collect()),
        Value::Dict(d) => {
            let mut m = serde_json::Map::new();
            for (k, v) in d.iter() {
                if let Value::Str(k) = k {
                    m.insert(k.as_str().to_owned(), value_json(v));
                }
            }
            serde_json::Value::Object(m)
        }
        Value::Value(inner) => value_json(inner),
        other => serde_json::Value::from(format!("{other:?}")),
    }
}
