//! Part 4, the idle daemon: context switches per thread over 10 s (every wake-up of a sleeping
//! thread is one), its memory, and the syscalls it makes (with `strace` when installed).

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::procs::{find_in_path, Proc};
use crate::TERM_GRACE;

pub const IDLE_SETTLE: Duration = Duration::from_secs(1);
pub const IDLE_WINDOW: Duration = Duration::from_secs(10);
pub const STRACE_WINDOW: Duration = Duration::from_secs(5);

pub struct ThreadSample {
    pub name: String,
    pub switches: u64,
}

pub struct IdleResults {
    pub window: Duration,
    /// Per thread id: name, context switches during the window (voluntary + involuntary).
    pub threads: Vec<(u32, String, u64)>,
    /// Threads that existed at the start of the window and not at its end.
    pub exited: Vec<(u32, String)>,
    /// Threads that appeared during the window.
    pub started: Vec<(u32, String)>,
    pub rss_kib: Option<u64>,
    pub hwm_kib: Option<u64>,
    /// `strace -c -f` summary over [`STRACE_WINDOW`], or why it was skipped.
    pub strace: std::result::Result<String, String>,
}

pub fn measure_idle(daemon: &Proc, work: &Path) -> Result<IdleResults> {
    let pid = daemon
        .pid()
        .ok_or_else(|| anyhow!("tesserad is not running"))?;
    thread::sleep(IDLE_SETTLE);
    let before = thread_samples(pid)?;
    let t = Instant::now();
    thread::sleep(IDLE_WINDOW);
    let after = thread_samples(pid)?;
    let window = t.elapsed();
    let mut threads = Vec::new();
    let mut exited = Vec::new();
    for (tid, b) in &before {
        match after.get(tid) {
            Some(a) => threads.push((*tid, a.name.clone(), a.switches.saturating_sub(b.switches))),
            None => exited.push((*tid, b.name.clone())),
        }
    }
    let started = after
        .iter()
        .filter(|(tid, _)| !before.contains_key(tid))
        .map(|(tid, a)| (*tid, a.name.clone()))
        .collect();
    threads.sort_by_key(|t| t.0);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let strace = strace_summary(pid, work);
    Ok(IdleResults {
        window,
        threads,
        exited,
        started,
        rss_kib: status_kib(&status, "VmRSS:"),
        hwm_kib: status_kib(&status, "VmHWM:"),
        strace,
    })
}

pub fn thread_samples(pid: Pid) -> Result<HashMap<u32, ThreadSample>> {
    let mut out = HashMap::new();
    let dir = format!("/proc/{pid}/task");
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let entry = entry?;
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let (Ok(name), Ok(status)) = (
            fs::read_to_string(path.join("comm")),
            fs::read_to_string(path.join("status")),
        ) else {
            continue; // exited while we looked
        };
        let field = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        out.insert(
            tid,
            ThreadSample {
                name: name.trim().to_owned(),
                switches: field("voluntary_ctxt_switches:") + field("nonvoluntary_ctxt_switches:"),
            },
        );
    }
    Ok(out)
}

pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The syscalls of every thread over [`STRACE_WINDOW`] (`strace -f -c`); `Err` says why not.
/// Tracing perturbs the process, so this runs after the undisturbed /proc window.
pub fn strace_summary(pid: Pid, work: &Path) -> std::result::Result<String, String> {
    let Some(strace) = find_in_path("strace") else {
        return Err("strace not installed (apt-get install strace); skipped".into());
    };
    let out = work.join("strace.txt");
    let mut proc = Proc::spawn(
        "strace",
        Command::new(strace)
            .args(["-f", "-c", "-o"])
            .arg(&out)
            .arg("-p")
            .arg(pid.to_string()),
        work,
    )
    .map_err(|e| format!("{e:#}"))?;
    thread::sleep(STRACE_WINDOW);
    // SIGINT makes strace detach and write its summary.
    proc.signal(Signal::SIGINT);
    match proc.wait_exit(TERM_GRACE) {
        Some(_) => {}
        None => return Err("strace did not exit after SIGINT".into()),
    }
    let text = fs::read_to_string(&out).map_err(|e| format!("strace wrote no summary: {e}"))?;
    let log = fs::read_to_string(&proc.err).unwrap_or_default();
    // "Process N attached with M threads", then one "Process T detached" per thread.
    let attached = log.lines().filter(|l| l.ends_with(" detached")).count();
    if attached == 0 {
        return Err(format!("strace did not attach: {}", log.trim()));
    }
    // strace -c prints no table at all when it counted no syscall.
    if text.trim().is_empty() {
        return Ok(format!("no syscalls in any of the {attached} threads"));
    }
    Ok(format!("{attached} threads traced:\n{}", text.trim_end()))
}
