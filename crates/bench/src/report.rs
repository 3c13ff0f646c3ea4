//! What a load run found: one struct that serialises to the JSON line the scripts collect,
//! and the human summary printed beside it.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::latency::LatencySummary;
use crate::tracker::DeliveryTotals;

/// The outcome of [`crate::run_load`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// `--label`, usually the scenario name.
    pub label: String,
    /// `chat-service`, `raw-topic` or `socketio`.
    pub mode: &'static str,
    /// Subscriber endpoints.
    pub urls: Vec<String>,
    /// Publisher endpoints.
    pub publish_urls: Vec<String>,
    /// Target publish rate, messages per second over all publishers.
    pub rate: f64,
    /// Publisher connections.
    pub publishers: usize,
    /// Subscriber connections asked for.
    pub subscribers: usize,
    /// Rooms.
    pub rooms: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Measured seconds.
    pub duration_s: f64,
    /// Warm-up seconds.
    pub warmup_s: f64,
    /// Every connection sent a JWT (`--jwt-secret`): the server verified one per CONNECT.
    pub jwt: bool,

    /// Messages the schedule called for (warm-up included).
    pub scheduled: u64,
    /// Messages written to a socket.
    pub sent: u64,
    /// Scheduled but never written: the publisher could not keep up (server pushing back).
    pub unsent: u64,
    /// What the subscribers received against what was owed (flattened into the JSON line).
    #[serde(flatten)]
    pub deliveries: DeliveryTotals,
    /// Application errors (`/user/queue/errors`) and ERROR frames the publishers received.
    pub errors: u64,
    /// Subscriber connections the server closed during the run.
    pub disconnects: u64,
    /// Connections that could not be opened or subscribed.
    pub connect_failures: u64,
    /// The first connection error, for the operator.
    pub first_connect_error: Option<String>,
    /// Seconds to open every subscriber and publisher connection (TCP, WebSocket, CONNECT,
    /// SUBSCRIBE with its receipt; --connect-concurrency at a time), before sending starts.
    pub connect_secs: f64,
    /// Connections established per second over `connect_secs` (failures not counted).
    pub connects_per_sec: f64,

    /// Messages actually sent per second during the measured window.
    pub sent_per_sec: f64,
    /// Distinct deliveries per second of messages sent during the measured window.
    pub deliveries_per_sec: f64,
    /// With `--receipts`: RECEIPTs (or Socket.IO acks) received, and the time from the
    /// intended send time to the RECEIPT, measured messages only.
    pub receipts: u64,
    pub receipt_latency: Option<LatencySummary>,
    /// End-to-end latency from the intended send time, measured messages only.
    #[serde(flatten)]
    pub latency: LatencySummary,

    /// Watched server processes.
    pub server_pids: Vec<u32>,
    /// Their CPU seconds from the start of the measured window to the end of the drain.
    pub server_cpu_s: Option<f64>,
    /// The same as a share of one core.
    pub server_cpu_cores: Option<f64>,
    /// Server CPU microseconds per delivery received in that window.
    pub cpu_us_per_delivery: Option<f64>,
    /// Sum of the watched processes' peak RSS (VmHWM) at the end, bytes.
    pub server_peak_rss_bytes: Option<u64>,
    /// Seconds the watched processes' threads were runnable but waited for a CPU, same
    /// window: high values mean the machine (other processes, the generator) was the limit.
    pub server_runqueue_wait_s: Option<f64>,
    /// The generator's own CPU seconds in the same window (it shares the machine).
    pub bench_cpu_s: Option<f64>,
    /// The generator's own run-queue wait in the same window.
    pub bench_runqueue_wait_s: Option<f64>,

    /// Seconds of that window: from the start of measuring to the end of the drain (which
    /// ends early once every owed delivery arrived). Every CPU figure covers it.
    pub cpu_window_s: f64,
    /// Messages sent in the window (the measured ones; the drain sends nothing).
    pub window_sent: u64,
    /// CPU seconds the whole machine was busy in the window, all cores together (user,
    /// nice, system, irq, softirq from /proc/stat): servers, backends, the generator and
    /// anything else running.
    pub machine_busy_cpu_s: Option<f64>,
    /// The same in percent of one core: 200 means both cores of a 2-core machine busy.
    pub machine_cpu_pct: Option<f64>,
    /// CPU seconds the hypervisor gave to someone else in the window (not in busy).
    pub machine_steal_cpu_s: Option<f64>,
    /// CPU seconds of every process on the machine in the window (all process trees,
    /// exited processes included), from the kernel's exact per-task run time. A cross-check
    /// of `machine_busy_cpu_s`, which /proc/stat samples at each timer tick: on mostly idle
    /// cores that wake for short bursts (an event loop per message) the ticks miss much of
    /// the work, and busy reads low. Interrupt time outside a task is only in busy.
    pub machine_tasks_cpu_s: Option<f64>,
    /// CPU seconds of each `--watch-backend` process tree in the window, by name.
    pub backend_cpu_s: BTreeMap<String, f64>,
    /// The same in microseconds per message sent in the window.
    pub backend_cpu_us_per_msg: BTreeMap<String, f64>,

    /// Zero loss, nothing unsent, no duplicates and p99 under `--p99-limit-ms`.
    pub ok: bool,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let optional = |value: Option<f64>, unit: &str| {
            value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}{unit}"))
        };
        writeln!(
            f,
            "== {} ({}) {} msg/s target, {} publishers, {} subscribers, {} rooms, {} B, {} s ==",
            if self.label.is_empty() {
                "run"
            } else {
                &self.label
            },
            self.mode,
            self.rate,
            self.publishers,
            self.subscribers,
            self.rooms,
            self.size,
            self.duration_s,
        )?;
        writeln!(
            f,
            "connected  {} connections in {:.2} s ({:.0}/s, {})",
            (self.subscribers + self.publishers)
                .saturating_sub(usize::try_from(self.connect_failures).unwrap_or(usize::MAX)),
            self.connect_secs,
            self.connects_per_sec,
            if self.jwt { "a JWT each" } else { "no JWT" },
        )?;
        writeln!(
            f,
            "sent       {} of {} scheduled ({:.0} msg/s measured){}",
            self.sent,
            self.scheduled,
            self.sent_per_sec,
            if self.unsent > 0 {
                "  <- publishers fell behind"
            } else {
                ""
            },
        )?;
        writeln!(
            f,
            "delivered  {} of {} expected ({:.0} deliveries/s); lost {}, duplicates {}, reordered {}, misrouted {}",
            self.deliveries.delivered,
            self.deliveries.expected,
            self.deliveries_per_sec,
            self.deliveries.lost,
            self.deliveries.duplicates,
            self.deliveries.reordered,
            self.deliveries.misrouted,
        )?;
        writeln!(
            f,
            "latency    p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  ({} samples)",
            self.latency.p50_ms,
            self.latency.p90_ms,
            self.latency.p99_ms,
            self.latency.p999_ms,
            self.latency.max_ms,
            self.latency.count,
        )?;
        if let Some(receipt) = &self.receipt_latency {
            writeln!(
                f,
                "receipts   {} received; p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
                self.receipts, receipt.p50_ms, receipt.p99_ms, receipt.p999_ms, receipt.max_ms,
            )?;
        }
        writeln!(
            f,
            "server     cpu {} ({} cores, {} waiting for a CPU), {} per delivery, peak RSS {}; generator cpu {}",
            optional(self.server_cpu_s, " s"),
            optional(self.server_cpu_cores, ""),
            optional(self.server_runqueue_wait_s, " s"),
            optional(self.cpu_us_per_delivery, " us"),
            self.server_peak_rss_bytes.map_or_else(
                || "n/a".to_owned(),
                |b| format!("{:.1} MiB", b as f64 / 1048576.0)
            ),
            optional(self.bench_cpu_s, " s"),
        )?;
        let backends: String = self
            .backend_cpu_s
            .iter()
            .map(|(name, cpu)| {
                let per_msg = self
                    .backend_cpu_us_per_msg
                    .get(name)
                    .map_or_else(String::new, |us| format!(" ({us:.1} us/msg)"));
                format!(", {name} {cpu:.2} s{per_msg}")
            })
            .collect();
        writeln!(
            f,
            "machine    busy {} ({} of one core; processes {}) over {:.2} s{backends}",
            optional(self.machine_busy_cpu_s, " s"),
            optional(self.machine_cpu_pct, " %"),
            optional(self.machine_tasks_cpu_s, " s"),
            self.cpu_window_s,
        )?;
        writeln!(
            f,
            "problems   connect failures {}, errors {}, disconnects {}, unparsable {}{}",
            self.connect_failures,
            self.errors,
            self.disconnects,
            self.deliveries.unparsable,
            self.first_connect_error
                .as_deref()
                .map_or_else(String::new, |e| format!(" (first: {e})")),
        )?;
        write!(
            f,
            "verdict    {}",
            if self.ok {
                "OK"
            } else {
                "FAILED (loss, backlog or p99 over the limit)"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_line_carries_the_delivery_totals_at_the_top_level() {
        let mut report = LoadReport::default();
        report.deliveries.lost = 3;
        report.deliveries.expected = 10;
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["lost"], 3);
        assert_eq!(json["expected"], 10);
        assert!(json.get("deliveries").is_none());
    }

    #[test]
    fn the_json_line_and_the_summary_carry_machine_and_backend_cpu() {
        let report = LoadReport {
            cpu_window_s: 10.0,
            window_sent: 5000,
            machine_busy_cpu_s: Some(15.0),
            machine_cpu_pct: Some(150.0),
            backend_cpu_s: BTreeMap::from([("postgres".to_owned(), 0.5)]),
            backend_cpu_us_per_msg: BTreeMap::from([("postgres".to_owned(), 100.0)]),
            ..LoadReport::default()
        };
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["machine_cpu_pct"], 150.0);
        assert_eq!(json["backend_cpu_s"]["postgres"], 0.5);
        assert_eq!(json["backend_cpu_us_per_msg"]["postgres"], 100.0);
        assert_eq!(json["window_sent"], 5000);
        let summary = report.to_string();
        assert!(
            summary.contains(
                "machine    busy 15.00 s (150.00 % of one core; processes n/a) over 10.00 s, postgres 0.50 s (100.0 us/msg)"
            ),
            "{summary}"
        );
    }

    #[test]
    fn the_json_line_and_the_summary_carry_the_connect_rate() {
        let report = LoadReport {
            subscribers: 90,
            publishers: 10,
            connect_secs: 0.5,
            connects_per_sec: 200.0,
            jwt: true,
            ..LoadReport::default()
        };
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["connect_secs"], 0.5);
        assert_eq!(json["connects_per_sec"], 200.0);
        assert_eq!(json["jwt"], true);
        let summary = report.to_string();
        assert!(
            summary.contains("connected  100 connections in 0.50 s (200/s, a JWT each)"),
            "{summary}"
        );
    }
}
