//! CPU time on a nanosecond clock: the sum of a process's threads' time on a CPU, from
//! `/proc/<pid>/task/<tid>/schedstat` (its first field, in ns; Documentation/scheduler/sched-stats
//! in the kernel). Fine enough to split a few hundred calls of a millisecond, where
//! `/proc/<pid>/stat`'s 10 ms ticks are not.

use std::fs;
use std::time::Duration;

use nix::unistd::Pid;

/// The time all live threads of `pid` have run; a thread that exited in between is not counted.
pub fn on_cpu(pid: Pid) -> Option<Duration> {
    tasks_on_cpu(&format!("/proc/{pid}/task"))
}

/// [`on_cpu`] of this process.
pub fn self_on_cpu() -> Option<Duration> {
    tasks_on_cpu("/proc/self/task")
}

fn tasks_on_cpu(dir: &str) -> Option<Duration> {
    let mut ns: u64 = 0;
    for task in fs::read_dir(dir).ok()?.flatten() {
        // A thread may exit between the listing and the read; it then counts nothing.
        let Ok(stat) = fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let run: u64 = stat.split_whitespace().next()?.parse().ok()?;
        ns = ns.saturating_add(run);
    }
    Some(Duration::from_nanos(ns))
}
