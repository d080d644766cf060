//! Part 2, ValidateToken throughput with 1, 4 and 16 clients (one bus connection each), next to
//! `org.freedesktop.DBus.Peer.Ping` answered by the same daemon over the same bus, in interleaved
//! rounds, with the CPU each side spends per call.

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use nix::unistd::Pid;
use tessera_client::ManagerProxy;
use tokio::runtime::Runtime;
use zbus::fdo::PeerProxy;
use zbus::Connection;

use crate::stack::{connect, peer_proxy};
use crate::stats::us;

// 2. ValidateToken vs Ping throughput.
pub const CLIENT_COUNTS: [usize; 3] = [1, 4, 16];
pub const THROUGHPUT_ROUNDS: usize = 3;
pub const THROUGHPUT_WINDOW: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Validate,
    Ping,
}

pub struct ThroughputRound {
    pub clients: usize,
    pub round: usize,
    pub validate: Rate,
    pub ping: Rate,
}

/// Calls per second of one window, and the CPU time each call cost the three processes involved.
#[derive(Clone, Copy, Default)]
pub struct Rate {
    pub per_sec: f64,
    pub daemon_cpu: Duration,
    pub bus_cpu: Duration,
    pub client_cpu: Duration,
}

/// The processes whose CPU time the throughput rounds account for.
#[derive(Clone, Copy)]
pub struct CpuPids {
    pub daemon: Pid,
    pub bus: Pid,
}

pub fn measure_throughput(
    rt: &Runtime,
    address: &str,
    token: &str,
    pids: CpuPids,
) -> Result<Vec<ThroughputRound>> {
    let max = CLIENT_COUNTS.iter().copied().max().unwrap_or(1);
    let clients = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..max {
            let conn = connect(address).await?;
            let manager = ManagerProxy::new(&conn).await?;
            let peer = peer_proxy(&conn).await?;
            // Warm both paths on this connection.
            manager.validate_token(token).await?;
            peer.ping().await?;
            v.push((manager, peer, conn));
        }
        anyhow::Ok(v)
    })?;
    let token: Arc<str> = Arc::from(token);
    let mut out = Vec::new();
    for round in 0..THROUGHPUT_ROUNDS {
        for (i, &n) in CLIENT_COUNTS.iter().enumerate() {
            let order = if (round + i) % 2 == 0 {
                [Call::Validate, Call::Ping]
            } else {
                [Call::Ping, Call::Validate]
            };
            let mut rates = [Rate::default(); 2];
            for call in order {
                let rate =
                    rt.block_on(hammer(clients.get(..n).unwrap_or(&[]), call, &token, pids))?;
                rates[usize::from(call == Call::Ping)] = rate;
            }
            eprintln!(
                "e2e:   round {round}, {n:>2} clients: ValidateToken {:>7.0}/s, Ping {:>7.0}/s; \
                 tesserad CPU/call {:.1} vs {:.1} us",
                rates[0].per_sec,
                rates[1].per_sec,
                us(rates[0].daemon_cpu),
                us(rates[1].daemon_cpu)
            );
            out.push(ThroughputRound {
                clients: n,
                round,
                validate: rates[0],
                ping: rates[1],
            });
        }
    }
    drop(clients);
    Ok(out)
}

/// Every client calls `call` back to back for [`THROUGHPUT_WINDOW`]; returns calls per second.
pub async fn hammer(
    clients: &[(ManagerProxy<'static>, PeerProxy<'static>, Connection)],
    call: Call,
    token: &Arc<str>,
    pids: CpuPids,
) -> Result<Rate> {
    let cpu_before = [cpu_time(pids.daemon), cpu_time(pids.bus), self_cpu_time()];
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let deadline = start + THROUGHPUT_WINDOW;
    let mut tasks = Vec::new();
    for (manager, peer, _) in clients {
        let (manager, peer, token) = (manager.clone(), peer.clone(), Arc::clone(token));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start).await;
            let mut calls = 0u64;
            loop {
                match call {
                    Call::Validate => {
                        manager.validate_token(&token).await?;
                    }
                    Call::Ping => peer.ping().await?,
                }
                calls += 1;
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return anyhow::Ok((calls, now));
                }
            }
        }));
    }
    let mut total = 0u64;
    let mut end = deadline;
    for t in tasks {
        let (calls, finished) = t.await.context("client task")??;
        total += calls;
        end = end.max(finished);
    }
    let cpu_after = [cpu_time(pids.daemon), cpu_time(pids.bus), self_cpu_time()];
    let per_call = |i: usize| -> Duration {
        let (Some(Some(a)), Some(Some(b))) = (cpu_after.get(i), cpu_before.get(i)) else {
            return Duration::ZERO;
        };
        a.saturating_sub(*b) / u32::try_from(total.max(1)).unwrap_or(u32::MAX)
    };
    Ok(Rate {
        per_sec: total as f64 / (end - start).as_secs_f64(),
        daemon_cpu: per_call(0),
        bus_cpu: per_call(1),
        client_cpu: per_call(2),
    })
}

/// User + system CPU time of a process, from /proc/<pid>/stat (fields 14 and 15, in USER_HZ ticks,
/// which Linux fixes at 100 per second for this interface).
pub fn cpu_time(pid: Pid) -> Option<Duration> {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

pub fn self_cpu_time() -> Option<Duration> {
    stat_cpu("/proc/self/stat")
}

pub fn stat_cpu(path: &str) -> Option<Duration> {
    let stat = fs::read_to_string(path).ok()?;
    // Fields after "pid (comm) " start at field 3 (state).
    let (_, rest) = stat.rsplit_once(") ")?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}
