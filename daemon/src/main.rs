//! `tesserad`: parses the command line, starts [`tesserad::Daemon`], stops on SIGTERM or SIGINT.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use tessera::policy::config::{Config, DEFAULT_PATH};
use tesserad::{BusChoice, Daemon, Options};

/// Tessera daemon: hardware-token challenge-response and session tokens over D-Bus.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Bus to serve on: "session", "system", or a D-Bus address (unix:path=...).
    #[arg(long, env = tessera_client::connect::BUS_ENV, default_value = "system")]
    bus: BusChoice,
    /// Directory for the database and the signing keys (created owner-only if missing).
    #[arg(long, default_value = "/var/lib/tessera")]
    state_dir: PathBuf,
    /// Configuration file [default: /etc/tessera/tessera.toml when it exists, else built-in
    /// defaults].
    #[arg(long)]
    config: Option<PathBuf>,
    /// For tests only: as root, serve a bus whose daemon is not run by root (such a bus could claim
    /// uid 0 for any caller, which is why it is refused by default).
    #[arg(long)]
    insecure_bus: bool,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in journals and log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Each cause once: many errors already quote their source.
            eprintln!("tesserad: {}", tessera_client::report::chain(&*e));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    // Nothing the daemon creates (database, keys, journal files) is for other users' eyes.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let config_path = match args.config {
        Some(path) => Some(path),
        None if std::path::Path::new(DEFAULT_PATH).exists() => Some(PathBuf::from(DEFAULT_PATH)),
        None => None,
    };
    let config = match &config_path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut opts = Options::new(args.bus, args.state_dir, config);
        opts.config_path = config_path;
        opts.insecure_bus = args.insecure_bus;
        let daemon = Daemon::start(opts).await?;
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = hup.recv() => match daemon.reload_config() {
                    Ok(()) => {}
                    Err(e) => tracing::error!("SIGHUP: configuration not reloaded, old policy stays: {e}"),
                },
            }
        }
        tracing::info!("stopping");
        daemon.stop().await;
        Ok(())
    })
}
