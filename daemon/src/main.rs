//! `tesserad`: parses the command line, starts [`tesserad::Daemon`], stops on SIGTERM or SIGINT.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use tessera::config::{Config, DEFAULT_PATH};
use tesserad::{BusChoice, Daemon, Options};

/// Tessera daemon: hardware-token challenge-response and session tokens over D-Bus.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Bus to serve on: "session", "system", or a D-Bus address (unix:path=...).
    #[arg(long, default_value = "system")]
    bus: BusChoice,
    /// Directory for the database and the signing keys (created owner-only if missing).
    #[arg(long, default_value = "/var/lib/tessera")]
    state_dir: PathBuf,
    /// Configuration file [default: /etc/tessera/tessera.toml when it exists, else built-in defaults].
    #[arg(long)]
    config: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tesserad: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    // Nothing the daemon creates (database, keys, journal files) is for other users' eyes.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None if std::path::Path::new(DEFAULT_PATH).exists() => {
            Config::load(std::path::Path::new(DEFAULT_PATH))?
        }
        None => Config::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let daemon = Daemon::start(Options::new(args.bus, args.state_dir, config)).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stopping");
        daemon.stop().await;
        Ok(())
    })
}
