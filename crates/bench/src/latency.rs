//! End-to-end latency: one HDR histogram for the run, in microseconds, fed by every
//! subscriber in batches (a lock per 1024 deliveries instead of per delivery, and one
//! histogram instead of one per connection, which would cost ~200 KB each).

use std::sync::{Arc, Mutex, PoisonError};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency the histogram resolves: one hour, in microseconds. Larger values are
/// clamped to it (they mean "never", and the run is failed by loss anyway).
const MAX_TRACKABLE_US: u64 = 3_600_000_000;
/// Samples a subscriber gathers before taking the lock.
const BATCH: usize = 1024;

/// The run's histogram, shared by all subscribers.
#[derive(Debug, Clone)]
pub struct SharedLatency {
    histogram: Arc<Mutex<Histogram<u64>>>,
}

/// Percentiles of a run, in milliseconds (what a reader compares with a target).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Default for SharedLatency {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedLatency {
    /// An empty histogram with three significant digits.
    #[must_use]
    pub fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, MAX_TRACKABLE_US, 3)
            .expect("the histogram bounds are constants that hdrhistogram accepts");
        Self {
            histogram: Arc::new(Mutex::new(histogram)),
        }
    }

    /// A recorder for one subscriber; it flushes into this histogram when it is dropped.
    #[must_use]
    pub fn recorder(&self) -> LatencyRecorder {
        LatencyRecorder {
            shared: self.clone(),
            batch: Vec::with_capacity(BATCH),
        }
    }

    /// Percentiles of everything recorded so far.
    #[must_use]
    pub fn summary(&self) -> LatencySummary {
        let histogram = self
            .histogram
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        summarize(&histogram)
    }

    fn absorb(&self, samples: &[u64]) {
        let mut histogram = self
            .histogram
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for &us in samples {
            histogram.saturating_record(us.clamp(1, MAX_TRACKABLE_US));
        }
    }
}

/// Percentiles of `histogram` (microsecond values) in milliseconds.
#[must_use]
pub fn summarize(histogram: &Histogram<u64>) -> LatencySummary {
    if histogram.is_empty() {
        return LatencySummary::default();
    }
    // Report the highest value equivalent to the percentile's bucket: a conservative
    // reading, never below the true value.
    let ms = |us: u64| histogram.highest_equivalent(us) as f64 / 1000.0;
    LatencySummary {
        count: histogram.len(),
        p50_ms: ms(histogram.value_at_quantile(0.50)),
        p90_ms: ms(histogram.value_at_quantile(0.90)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        p999_ms: ms(histogram.value_at_quantile(0.999)),
        max_ms: ms(histogram.max()),
        mean_ms: histogram.mean() / 1000.0,
    }
}

/// One subscriber's batch of samples on their way to the shared histogram.
#[derive(Debug)]
pub struct LatencyRecorder {
    shared: SharedLatency,
    batch: Vec<u64>,
}

impl LatencyRecorder {
    /// Records one latency in microseconds.
    pub fn record(&mut self, us: u64) {
        self.batch.push(us);
        if self.batch.len() >= BATCH {
            self.flush();
        }
    }

    /// Moves the batch into the shared histogram.
    pub fn flush(&mut self) {
        if !self.batch.is_empty() {
            self.shared.absorb(&self.batch);
            self.batch.clear();
        }
    }
}

impl Drop for LatencyRecorder {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close_to(actual: f64, expected: f64) -> bool {
        // Three significant digits: within 0.1 % (plus rounding to the bucket top).
        (actual - expected).abs() <= expected * 0.002
    }

    #[test]
    fn percentiles_of_a_uniform_sample_are_where_they_should_be() {
        let latency = SharedLatency::new();
        let mut recorder = latency.recorder();
        for us in 1..=100_000u64 {
            recorder.record(us);
        }
        drop(recorder);
        let summary = latency.summary();
        assert_eq!(summary.count, 100_000);
        assert!(close_to(summary.p50_ms, 50.0), "{summary:?}");
        assert!(close_to(summary.p90_ms, 90.0), "{summary:?}");
        assert!(close_to(summary.p99_ms, 99.0), "{summary:?}");
        assert!(close_to(summary.p999_ms, 99.9), "{summary:?}");
        assert!(close_to(summary.max_ms, 100.0), "{summary:?}");
        assert!(close_to(summary.mean_ms, 50.0005), "{summary:?}");
    }

    #[test]
    fn one_slow_message_in_a_hundred_moves_p99_but_not_p90() {
        let latency = SharedLatency::new();
        let mut recorder = latency.recorder();
        for i in 0..1000u64 {
            recorder.record(if i % 100 == 0 { 80_000 } else { 1_000 });
        }
        recorder.flush();
        let summary = latency.summary();
        assert!(close_to(summary.p90_ms, 1.0), "{summary:?}");
        // Exactly 1 % of samples are slow: p99 is still a fast one, p99.9 the slow one.
        assert!(close_to(summary.p99_ms, 1.0), "{summary:?}");
        assert!(close_to(summary.p999_ms, 80.0), "{summary:?}");
        assert!(close_to(summary.max_ms, 80.0), "{summary:?}");
    }

    #[test]
    fn samples_from_several_recorders_end_up_in_one_histogram() {
        let latency = SharedLatency::new();
        let mut a = latency.recorder();
        let mut b = latency.recorder();
        a.record(1_000);
        b.record(3_000);
        // Not flushed yet: still in the batches.
        assert_eq!(latency.summary().count, 0);
        drop(a);
        drop(b);
        let summary = latency.summary();
        assert_eq!(summary.count, 2);
        assert!(close_to(summary.max_ms, 3.0), "{summary:?}");
    }

    #[test]
    fn an_empty_run_reports_zeros_rather_than_panicking() {
        assert_eq!(SharedLatency::new().summary(), LatencySummary::default());
    }

    #[test]
    fn absurd_latencies_are_clamped_not_dropped() {
        let latency = SharedLatency::new();
        let mut recorder = latency.recorder();
        recorder.record(u64::MAX);
        recorder.record(0);
        drop(recorder);
        assert_eq!(latency.summary().count, 2);
    }
}
