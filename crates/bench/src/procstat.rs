//! CPU time and memory of processes, read from /proc: what "CPU per delivery" and "RSS per
//! connection" are computed from. Linux only; elsewhere every reading is `None`.

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
    fn this_process_can_be_sampled_on_linux() {
        if cfg!(target_os = "linux") {
            let me = sample_self().expect("/proc/self is readable on Linux");
            assert!(me.rss_bytes > 0 && me.peak_rss_bytes >= me.rss_bytes / 2);
            assert!(clock_ticks_per_sec() >= 1);
        }
    }
}
