//! What processes use of the machine, read from Linux `/proc`: CPU time (of the server,
//! this load client, chosen processes and nobody) and resident memory. Elsewhere every
//! reading is `None` or empty.

use std::collections::HashMap;

/// Resident memory of process `pid` now and at its peak (`VmRSS`, `VmHWM`), in MiB.
pub(crate) fn memory_of(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time read at one moment (Linux `/proc`), to tell after a phase who used the cores:
/// the server, this load client, or nobody.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuClock {
    /// Clock ticks of all CPUs, and of those idle or waiting for I/O (`/proc/stat`).
    total: u64,
    idle: u64,
    iowait: u64,
    /// Clock ticks (user + system) of the server and of this process.
    server: u64,
    client: u64,
}

/// What a phase used, in cores (1.0 = one CPU busy for the whole phase).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuUse {
    /// The machine's cores.
    pub(crate) cores: f64,
    pub(crate) server: f64,
    pub(crate) client: f64,
    /// Cores nobody used, and of those the ones waiting for the disk.
    pub(crate) idle: f64,
    pub(crate) iowait: f64,
}

impl CpuClock {
    /// `None` where `/proc` cannot be read.
    pub(crate) fn read(server: u32) -> Option<Self> {
        let (total, idle, iowait) = machine_ticks()?;
        Some(Self {
            total,
            idle,
            iowait,
            server: process_ticks(server)?,
            client: process_ticks(std::process::id())?,
        })
    }

    /// What was used from `before` to `self`.
    pub(crate) fn since(self, before: Self) -> CpuUse {
        let total = self.total.saturating_sub(before.total);
        let share = |ticks: u64| in_cores(ticks, total);
        CpuUse {
            cores: cores(),
            server: share(self.server.saturating_sub(before.server)),
            client: share(self.client.saturating_sub(before.client)),
            idle: share(self.idle.saturating_sub(before.idle)),
            iowait: share(self.iowait.saturating_sub(before.iowait)),
        }
    }
}

impl CpuUse {
    /// The cores nobody measured used: the database's processes, mostly, and anything else.
    pub(crate) fn others(&self) -> f64 {
        (self.cores - self.server - self.client - self.idle).max(0.0)
    }

    /// The CPU time a request took at `rate` requests/s, in µs: the server's, the load
    /// client's and the others' (see [`CpuUse::others`]).
    pub(crate) fn per_request(&self, rate: f64) -> [f64; 3] {
        [self.server, self.client, self.others()].map(|c| c * 1e6 / rate.max(f64::MIN_POSITIVE))
    }
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cores used: server {:.2}, load client {:.2}, others {:.2}; idle {:.2} of {} \
             (waiting for the disk {:.2})",
            self.server,
            self.client,
            self.others(),
            self.idle,
            self.cores,
            self.iowait
        )
    }
}

/// Clock ticks of all CPUs, of those idle and of those waiting for I/O (`/proc/stat`).
fn machine_ticks() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is within user).
    Some((cpu.iter().take(8).sum(), *cpu.get(3)?, *cpu.get(4)?))
}

/// CPU time of chosen processes read at one moment, with the machine's: to tell after a
/// run what groups of processes (a benchmark's workers, the database server's own) used,
/// where [`CpuClock`]'s one server and one client do not fit.
#[derive(Clone, Debug)]
pub(crate) struct ProcessClock {
    total: u64,
    idle: u64,
    ticks: HashMap<u32, u64>,
}

impl ProcessClock {
    /// `None` where `/proc/stat` cannot be read; a process that is gone is left out.
    pub(crate) fn read(pids: impl IntoIterator<Item = u32>) -> Option<Self> {
        let (total, idle, _) = machine_ticks()?;
        let ticks = pids
            .into_iter()
            .filter_map(|pid| Some((pid, process_ticks(pid)?)))
            .collect();
        Some(Self { total, idle, ticks })
    }

    /// The cores `pids` used from `before` to `self` (a process started in between counts
    /// from zero; one that ended in between is not counted).
    pub(crate) fn cores(&self, before: &Self, pids: &[u32]) -> f64 {
        let ticks: u64 = pids
            .iter()
            .filter_map(|pid| {
                let now = self.ticks.get(pid)?;
                Some(now.saturating_sub(before.ticks.get(pid).copied().unwrap_or(0)))
            })
            .sum();
        self.share(before, ticks)
    }

    /// The cores nobody used from `before` to `self`.
    pub(crate) fn idle(&self, before: &Self) -> f64 {
        self.share(before, self.idle.saturating_sub(before.idle))
    }

    /// `ticks` of the time from `before` to `self`, in cores.
    fn share(&self, before: &Self, ticks: u64) -> f64 {
        in_cores(ticks, self.total.saturating_sub(before.total))
    }
}

/// `ticks` of a process or state in cores, over a time in which all CPUs counted `total`
/// ticks (`/proc/stat` counts the ticks of all CPUs: a share of it times the cores).
fn in_cores(ticks: u64, total: u64) -> f64 {
    ticks as f64 / total.max(1) as f64 * cores()
}

/// The machine's cores.
pub(crate) fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// The processes whose command name is `name` (`/proc/PID/comm`).
pub(crate) fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

/// User and system clock ticks of process `pid` (`/proc/PID/stat`, fields 14 and 15).
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields after it.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}
