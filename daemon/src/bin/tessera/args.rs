//! The command line of `tessera`: its flags and subcommands (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use tessera_client::BusChoice;

/// Command-line client of the Tessera daemon.
#[derive(Parser)]
#[command(name = "tessera", version)]
pub struct Cli {
    /// Bus the daemon serves on: "session", "system", or a D-Bus address.
    #[arg(long, env = "TESSERA_BUS", default_value = "system", global = true)]
    pub bus: BusChoice,
    /// Print data as JSON (one object per line for lists) instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// How the PIN is given to `authenticate` and `enroll`.
#[derive(clap::Args, Clone, Copy, Default)]
pub struct PinArgs {
    /// Read the PIN from the first line of standard input and give it up front (a retry, if asked,
    /// from the next line). Without it, a standard input that is not a terminal is read a line at
    /// each prompt.
    #[arg(long)]
    pub pin_stdin: bool,
    /// Wait for a card to be inserted [default: when asking on a terminal].
    #[arg(long, overrides_with = "no_wait")]
    pub wait: bool,
    /// Fail at once with NoDevice when no card is in.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up after this many seconds [default: the daemon's].
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u32>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Show the present devices and who is enrolled with each.
    Status,
    /// Enroll a card's key or a FIDO security key for a user (the PIN is checked on the device).
    Enroll {
        /// Account to enroll [default: your own].
        #[arg(long)]
        user: Option<String>,
        /// Device id, object path or reader name [default: the only present device].
        #[arg(long)]
        device: Option<String>,
        /// Which credential: a PIV card's slot, 9a (PIN at every login, the default) or 9e (card
        /// authentication, no PIN); a FIDO key makes a new one ("new", the default).
        #[arg(long, alias = "slot")]
        credential: Option<String>,
        #[command(flatten)]
        pin: PinArgs,
    },
    /// Authenticate with an enrolled card; prints the session token.
    Authenticate {
        /// Account to authenticate [default: your own].
        #[arg(long)]
        user: Option<String>,
        /// Device id, object path or reader name [default: the enrolled device that is present].
        #[arg(long)]
        device: Option<String>,
        /// Send no PIN (for keys enrolled in slot 9e); fail with PinRequired if one is asked.
        #[arg(long, conflicts_with = "pin_stdin")]
        no_pin: bool,
        #[command(flatten)]
        pin: PinArgs,
    },
    /// Unblock a card's PIN with its PUK and set a new PIN.
    Unblock {
        /// Device id, object path or reader name [default: the only present device].
        #[arg(long)]
        device: Option<String>,
        #[command(flatten)]
        pin: PinArgs,
    },
    /// Validate a token and print its claims.
    Validate {
        /// The token, or "-" to read it from standard input [default: standard input].
        token: Option<String>,
    },
    /// Check a token as a relying service does and print its claims.
    Check {
        /// The token, or "-" to read it from standard input [default: standard input].
        token: Option<String>,
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
        /// The token, or "-" to read it from standard input [default: standard input].
        #[arg(conflicts_with = "all")]
        token: Option<String>,
        /// Revoke every live token of --user instead of one token.
        #[arg(long)]
        all: bool,
        /// With --all: whose tokens [default: your own; others' need root].
        #[arg(long, requires = "all")]
        user: Option<String>,
    },
    /// Exchange a live token for a new one of the same session (the old one is revoked).
    Refresh {
        /// The token, or "-" to read it from standard input [default: standard input].
        token: Option<String>,
    },
    /// List the live tokens of a user.
    Sessions {
        /// The account [default: your own; others' need root].
        user: Option<String>,
    },
    /// List the enrolled keys of a user.
    Enrollments {
        /// The account [default: your own; others' need root].
        user: Option<String>,
    },
    /// Remove an enrollment by id (your own, or any as root): its card no longer authenticates and
    /// its live tokens are revoked.
    Unenroll {
        /// The enrollment id (as `tessera enrollments` shows it).
        id: String,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Sign new tokens with a fresh key now (root).
    RotateKey,
    /// Make the daemon read its configuration file again (root).
    Reload,
    /// Print the daemon's public signing keys (JWK Set, always JSON).
    Jwks,
    /// Print device, token and enrollment events as they happen, one per line, until interrupted.
    Watch,
    /// Print the session token pam_tessera.so left for this login session: from the session
    /// keyring ("tessera:token"), else from $XDG_RUNTIME_DIR/tessera/token.
    Token,
    /// Configuration file tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: Shell,
    },
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// The rules that apply to a user ([token], [piv], [fido], [pam], [session]), and where each
    /// value comes from.
    Show {
        /// The account [default: your own].
        user: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file without starting anything; exit 1 with the reason if it is bad.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

/// Shells `tessera completions` writes for.
#[derive(Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}
