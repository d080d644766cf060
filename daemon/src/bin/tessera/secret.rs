//! Reading PINs and PUKs: from the terminal without echo, or a line at a time from standard input
//! when it is not a terminal (scripts, tests) or `--pin-stdin` says so.
//!
//! Echo is turned off on the terminal only while a secret is typed, by a guard that puts the saved
//! settings back when dropped — also when the request fails or Ctrl-C cancels it mid-prompt, since
//! every exit path of the request loop drops it before the process exits.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::fd::AsFd;

use nix::sys::termios::{self, LocalFlags, SetArg, Termios};
use tessera_client::Error;
use zeroize::Zeroizing;

/// Where secrets come from.
pub enum Source {
    /// The controlling terminal, echo off.
    Terminal(File),
    /// Standard input, one secret per line.
    Stdin,
}

impl Source {
    /// Standard input when `from_stdin` or when it is not a terminal, else the terminal.
    pub fn choose(from_stdin: bool) -> Result<Source, Error> {
        if from_stdin || !std::io::stdin().is_terminal() {
            return Ok(Source::Stdin);
        }
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")?;
        Ok(Source::Terminal(tty))
    }

    /// Whether a person answers at a terminal.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Source::Terminal(_))
    }

    /// Shows `text` to the person (the terminal, else standard error).
    pub fn say(&self, text: &str) {
        match self {
            Source::Terminal(tty) => {
                let mut tty = tty;
                let _ = writeln!(tty, "{text}");
            }
            Source::Stdin => eprintln!("{text}"),
        }
    }

    /// Starts reading one secret after showing `prompt` (on the terminal only). The returned
    /// [`Pending`] holds the echo guard; await [`Pending::line`] for the text.
    pub fn ask(&self, prompt: &str) -> Result<Pending, Error> {
        match self {
            Source::Terminal(tty) => {
                let guard = EchoOff::new(tty.try_clone()?)?;
                let mut out = tty.try_clone()?;
                write!(out, "{prompt}")?;
                out.flush()?;
                let input = tty.try_clone()?;
                let read = tokio::task::spawn_blocking(move || read_line(BufReader::new(input)));
                Ok(Pending {
                    read,
                    guard: Some(guard),
                })
            }
            Source::Stdin => {
                let read = tokio::task::spawn_blocking(|| read_line(std::io::stdin().lock()));
                Ok(Pending { read, guard: None })
            }
        }
    }
}

/// A secret being typed.
pub struct Pending {
    read: tokio::task::JoinHandle<std::io::Result<Option<Zeroizing<String>>>>,
    guard: Option<EchoOff>,
}

impl Pending {
    /// The line typed, without its end; `None` at end of input.
    pub async fn line(&mut self) -> Result<Option<Zeroizing<String>>, Error> {
        let line = (&mut self.read)
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))??;
        if let Some(guard) = self.guard.take() {
            // Enter was not echoed either.
            guard.finish();
        }
        Ok(line)
    }
}

/// Reads one line; the buffer it grew in is wiped with the line.
fn read_line(mut input: impl BufRead) -> std::io::Result<Option<Zeroizing<String>>> {
    let mut line = Zeroizing::new(String::new());
    if input.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let end = line.trim_end_matches(['\r', '\n']).len();
    line.truncate(end);
    Ok(Some(line))
}

/// The terminal with echo off, back to its saved settings when dropped.
struct EchoOff {
    tty: File,
    saved: Termios,
}

impl EchoOff {
    fn new(tty: File) -> Result<EchoOff, Error> {
        let saved = termios::tcgetattr(tty.as_fd()).map_err(std::io::Error::from)?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        // Keep the line editing and the newline echo off too: nothing of the secret shows.
        quiet.local_flags.remove(LocalFlags::ECHONL);
        termios::tcsetattr(tty.as_fd(), SetArg::TCSANOW, &quiet).map_err(std::io::Error::from)?;
        Ok(EchoOff { tty, saved })
    }

    /// Puts echo back and ends the prompt's line.
    fn finish(self) {
        let mut tty = &self.tty;
        let _ = writeln!(tty);
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.tty.as_fd(), SetArg::TCSANOW, &self.saved);
    }
}
