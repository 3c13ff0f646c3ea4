//! CPU time and memory of processes, and the whole machine's CPU, read from /proc: what
//! "CPU per delivery", "RSS per connection" and the machine's busy share are computed from.
//! Linux only; elsewhere every reading is `None`.

use std::collections::{HashMap, HashSet};
use std::fs;

use serde::Serialize;

/// One reading of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_secs: f64,
    /// Resident set size now, in bytes.
    pub rss_bytes: u64,
    /// Peak resident set size (VmHWM), in bytes.
    pub peak_rss_bytes: u64,
    /// Seconds its threads spent runnable but waiting for a CPU (from
    /// `/proc/<pid>/task/*/schedstat`): how much the machine, not the process, held it back.
    pub runqueue_wait_secs: f64,
}

/// Reads `/proc/<pid>` (`None` if the process is gone or this is not Linux).
#[must_use]
pub fn sample(pid: u32) -> Option<ProcSample> {
    sample_path(&format!("/proc/{pid}"))
}

/// Reads this process.
#[must_use]
pub fn sample_self() -> Option<ProcSample> {
    sample_path("/proc/self")
}

fn sample_path(dir: &str) -> Option<ProcSample> {
    let stat = fs::read_to_string(format!("{dir}/stat")).ok()?;
    let status = fs::read_to_string(format!("{dir}/status")).ok()?;
    let ticks = parse_cpu_ticks(&stat)?;
    Some(ProcSample {
        cpu_secs: ticks as f64 / clock_ticks_per_sec() as f64,
        rss_bytes: parse_status_kib(&status, "VmRSS:")? * 1024,
        peak_rss_bytes: parse_status_kib(&status, "VmHWM:")? * 1024,
        runqueue_wait_secs: runqueue_wait_ns(dir) as f64 / 1e9,
    })
}

/// Sum over the process's live threads of the second `schedstat` field (nanoseconds spent
/// waiting on a run queue). Threads that exited are not counted; a tokio runtime keeps its
/// workers for the process's life, so that loses nothing that matters here.
fn runqueue_wait_ns(dir: &str) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("{dir}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|line| parse_schedstat_wait(&line))
        .sum()
}

fn parse_schedstat_wait(line: &str) -> Option<u64> {
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// `sysconf(_SC_CLK_TCK)` without libc: the kernel passes it in the auxiliary vector
/// (`AT_CLKTCK`). Falls back to 100, the value on every mainstream Linux architecture.
fn clock_ticks_per_sec() -> u64 {
    const AT_CLKTCK: u64 = 17;
    let Ok(auxv) = fs::read("/proc/self/auxv") else {
        return 100;
    };
    let words: Vec<u64> = auxv
        .chunks_exact(8)
        .map(|chunk| u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8])))
        .collect();
    words
        .chunks_exact(2)
        .find(|pair| pair[0] == AT_CLKTCK)
        .map_or(100, |pair| pair[1])
        .max(1)
}

/// The roots of every process tree on a Linux machine: init and the kernel-thread parent.
pub const ALL_PROCESSES: [u32; 2] = [1, 2];

/// The CPU seconds of process trees: every process given, every live descendant, and
/// every descendant that has exited and been reaped (its time moved to its parent's
/// `cutime`/`cstime`). That is what a forking server costs: PostgreSQL's backends come
/// and go with their connections, Redis forks for BGSAVE. Each process counts once, also
/// when it is a root and another root's descendant. `None` if no root is alive.
#[must_use]
pub fn tree_cpu_secs(roots: &[u32]) -> Option<f64> {
    let table: Vec<(u32, StatTimes)> = fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parse_stat_times(&stat)?))
        })
        .collect();
    let ticks = tree_ticks(&table, roots)?;
    Some(ticks as f64 / clock_ticks_per_sec() as f64)
}

/// Sum of own and reaped children's ticks over `roots` and their descendants in `table`.
fn tree_ticks(table: &[(u32, StatTimes)], roots: &[u32]) -> Option<u64> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut times = HashMap::new();
    for &(pid, stat) in table {
        children.entry(stat.ppid).or_default().push(pid);
        times.insert(pid, stat);
    }
    let mut seen = HashSet::new();
    let mut queue: Vec<u32> = roots
        .iter()
        .copied()
        .filter(|pid| times.contains_key(pid))
        .collect();
    if queue.is_empty() {
        return None;
    }
    let mut ticks = 0;
    while let Some(pid) = queue.pop() {
        if !seen.insert(pid) {
            continue;
        }
        let stat = times[&pid];
        ticks += stat.own_ticks + stat.reaped_children_ticks;
        queue.extend(children.get(&pid).into_iter().flatten().copied());
    }
    Some(ticks)
}

/// The fields of `/proc/<pid>/stat` a process tree is summed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatTimes {
    ppid: u32,
    /// utime + stime.
    own_ticks: u64,
    /// cutime + cstime: children that exited and were waited for.
    reaped_children_ticks: u64,
}

fn parse_stat_times(stat: &str) -> Option<StatTimes> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().take(15).collect();
    // After the name, index 0 is field 3 (state): ppid is field 4, utime..cstime 14..17.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(StatTimes {
        ppid: u32::try_from(field(4)?).ok()?,
        own_ticks: field(14)? + field(15)?,
        reaped_children_ticks: field(16)? + field(17)?,
    })
}

/// One reading of the machine's CPU counters (the `cpu` line of `/proc/stat`), in seconds
/// summed over all cores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MachineSample {
    /// Time spent running anything: user, nice, system, irq and softirq (guest time is part
    /// of user). Steal (the hypervisor running someone else) is not work done here.
    pub busy_secs: f64,
    /// Idle and I/O wait.
    pub idle_secs: f64,
    /// Stolen by the hypervisor.
    pub steal_secs: f64,
}

/// Reads `/proc/stat` (`None` where it does not exist).
#[must_use]
pub fn sample_machine() -> Option<MachineSample> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    parse_machine(&stat, clock_ticks_per_sec())
}

fn parse_machine(stat: &str, ticks_per_sec: u64) -> Option<MachineSample> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let at = |i: usize| values.get(i).copied().unwrap_or(0);
    if values.len() < 4 {
        return None;
    }
    let secs = |ticks: u64| ticks as f64 / ticks_per_sec.max(1) as f64;
    Some(MachineSample {
        busy_secs: secs(at(0) + at(1) + at(2) + at(5) + at(6)),
        idle_secs: secs(at(3) + at(4)),
        steal_secs: secs(at(7)),
    })
}

/// Sum of readings over processes; `None` if any of them cannot be read.
#[must_use]
pub fn sample_all(pids: &[u32]) -> Option<ProcSample> {
    let mut total = ProcSample::default();
    for &pid in pids {
        let one = sample(pid)?;
        total.cpu_secs += one.cpu_secs;
        total.rss_bytes += one.rss_bytes;
        total.peak_rss_bytes += one.peak_rss_bytes;
        total.runqueue_wait_secs += one.runqueue_wait_secs;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 1000 10";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn status_values_are_read_in_kib() {
        let status = "Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn run_queue_wait_is_the_second_schedstat_field() {
        assert_eq!(parse_schedstat_wait("123 456 7\n"), Some(456));
        assert_eq!(parse_schedstat_wait("123"), None);
    }

    #[test]
    fn parent_child_and_cumulative_times_are_read_from_stat() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime ...
        let stat = "42 (postgres) S 7 42 42 0 -1 0 0 0 0 0 30 20 500 100 20 0 1 0";
        assert_eq!(
            parse_stat_times(stat),
            Some(StatTimes {
                ppid: 7,
                own_ticks: 50,
                reaped_children_ticks: 600,
            })
        );
        assert_eq!(parse_stat_times("42 (x) S 7 42"), None);
    }

    #[test]
    fn a_process_tree_counts_descendants_and_reaped_children_once() {
        let times = |ppid, own, reaped| StatTimes {
            ppid,
            own_ticks: own,
            reaped_children_ticks: reaped,
        };
        let table = [
            (1, times(0, 1000, 0)),
            // A postmaster with two live backends, one of which forked a child.
            (10, times(1, 5, 200)),
            (11, times(10, 30, 0)),
            (12, times(10, 40, 7)),
            (13, times(12, 3, 0)),
            // Someone else's process.
            (20, times(1, 900, 0)),
        ];
        assert_eq!(tree_ticks(&table, &[10]), Some(5 + 200 + 30 + 40 + 7 + 3));
        // A root that is also another root's descendant is not counted twice.
        assert_eq!(tree_ticks(&table, &[10, 12]), Some(285));
        assert_eq!(tree_ticks(&table, &[12]), Some(50));
        // Roots that are gone are skipped; none alive is no reading.
        assert_eq!(tree_ticks(&table, &[99, 13]), Some(3));
        assert_eq!(tree_ticks(&table, &[99]), None);
    }

    #[test]
    fn the_machine_line_splits_into_busy_idle_and_steal() {
        let stat = "cpu  100 5 50 1000 20 3 2 7 40 0\ncpu0 50 2 25 500 10 1 1 3 20 0\nintr 1\n";
        let sample = parse_machine(stat, 100).unwrap();
        assert!((sample.busy_secs - 1.60).abs() < 1e-9, "{sample:?}");
        assert!((sample.idle_secs - 10.20).abs() < 1e-9, "{sample:?}");
        assert!((sample.steal_secs - 0.07).abs() < 1e-9, "{sample:?}");
        assert_eq!(parse_machine("cpu0 1 2 3 4\n", 100), None);
        assert_eq!(parse_machine("cpu 1 x 3 4\n", 100), None);
    }

    #[test]
    fn this_process_can_be_sampled_on_linux() {
        if cfg!(target_os = "linux") {
            let me = sample_self().expect("/proc/self is readable on Linux");
            assert!(me.rss_bytes > 0 && me.peak_rss_bytes >= me.rss_bytes / 2);
            assert!(clock_ticks_per_sec() >= 1);
            let tree = tree_cpu_secs(&[std::process::id()]).expect("this process is alive");
            assert!(tree >= 0.0);
            let machine = sample_machine().expect("/proc/stat is readable on Linux");
            assert!(machine.busy_secs > 0.0 && machine.idle_secs >= 0.0);
        }
    }
}
