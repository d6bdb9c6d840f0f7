//! CPU time, of this process and of the whole machine (PostgreSQL included),
//! from `/proc`: on a machine whose cores the host and the database share,
//! a throughput's ceiling is the cores over the CPU a step costs everyone.

use std::time::Duration;

/// The kernel's USER_HZ: `/proc` counts CPU time in ticks of 10 ms on Linux.
const TICK: Duration = Duration::from_millis(10);

/// CPU time this process has used so far (user + system, all threads), from `/proc/self/stat`.
pub fn process() -> Duration {
    stat_ticks(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}

/// utime + stime of a `/proc/PID/stat` line.
fn stat_ticks(stat: &str) -> Duration {
    // Fields after the command (which may hold spaces): utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    ticks([11, 12].iter().filter_map(|&index| fields.get(index)?.parse::<u64>().ok()).sum())
}

/// CPU time process `pid` has used so far (user + system, all threads); zero once it is gone.
pub fn of(pid: u32) -> Duration {
    stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// CPU time every core of the machine has spent busy so far (user, nice,
/// system, irq, softirq; not idle, I/O wait or time stolen by the
/// hypervisor), from the `cpu` line of `/proc/stat`.
pub fn machine() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|line| line.starts_with("cpu ")) else { return Duration::ZERO };
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|field| field.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    ticks([0, 1, 2, 5, 6].iter().filter_map(|&index| fields.get(index)).sum())
}

/// The cores this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn ticks(count: u64) -> Duration {
    TICK * u32::try_from(count).unwrap_or(u32::MAX)
}
