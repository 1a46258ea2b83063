//! The pool's statistics: jobs queued, running, done, failed and cancelled, and the
//! latency of each kind of operation on the workers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::op::Op;

/// Latency histogram with four buckets per power of two of nanoseconds: lock-free to
/// record, about 19 % resolution on percentiles.
struct Histogram {
    buckets: [AtomicU64; 256],
    count: AtomicU64,
    total_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            total_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }

    fn bucket(ns: u64) -> usize {
        if ns < 4 {
            return ns as usize;
        }
        let log = 63 - ns.leading_zeros() as usize;
        let fraction = ((ns >> (log - 2)) & 3) as usize;
        (log * 4 + fraction).min(255)
    }

    /// The largest value a bucket holds.
    fn upper(bucket: usize) -> u64 {
        if bucket < 8 {
            // 0..3 hold exactly their value; 4..7 are never used (4 ns is bucket 8).
            return bucket.min(3) as u64;
        }
        let (log, fraction) = (bucket / 4, (bucket % 4) as u64);
        ((4 + fraction + 1) << (log - 2)).saturating_sub(1)
    }

    fn record(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[Self::bucket(ns)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.total_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    fn snapshot(&self, op: Op) -> Option<OpStats> {
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 {
            return None;
        }
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let max = self.max_ns.load(Ordering::Relaxed);
        let quantile = |q: f64| {
            let rank = ((count as f64 * q).ceil() as u64).max(1);
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Duration::from_nanos(Self::upper(i).min(max));
                }
            }
            Duration::from_nanos(max)
        };
        Some(OpStats {
            op,
            count,
            mean: Duration::from_nanos(self.total_ns.load(Ordering::Relaxed) / count),
            p50: quantile(0.50),
            p99: quantile(0.99),
            max: Duration::from_nanos(max),
        })
    }
}

/// Latency of one kind of operation on the workers (time in the inner store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpStats {
    /// Which operation.
    pub op: Op,
    /// How many finished.
    pub count: u64,
    /// Mean latency.
    pub mean: Duration,
    /// Median latency (bucketed, within about 19 %).
    pub p50: Duration,
    /// 99th percentile latency (bucketed, within about 19 %).
    pub p99: Duration,
    /// Largest latency.
    pub max: Duration,
}

/// A snapshot of a pool's work, for logs and the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    /// Worker threads.
    pub workers: usize,
    /// Jobs waiting in the queue (a snapshot: counters move while it is taken).
    pub queued: u64,
    /// Jobs running on a worker.
    pub running: u64,
    /// Jobs finished successfully.
    pub done: u64,
    /// Jobs finished with an error (panics included).
    pub failed: u64,
    /// Jobs cancelled before they started.
    pub cancelled: u64,
    /// Latency per kind of operation that ran at least once.
    pub ops: Vec<OpStats>,
}

/// The counters a pool keeps while it runs.
pub(crate) struct Counters {
    pub(crate) submitted: AtomicU64,
    pub(crate) started: AtomicU64,
    pub(crate) done: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    latency: Vec<Histogram>,
}

impl Counters {
    pub(crate) fn new() -> Counters {
        Counters {
            submitted: AtomicU64::new(0),
            started: AtomicU64::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            latency: Op::ALL.iter().map(|_| Histogram::new()).collect(),
        }
    }

    /// Counts a finished job of `op` that took `elapsed`.
    pub(crate) fn finished(&self, op: Op, elapsed: Duration, ok: bool) {
        self.latency[op.index()].record(elapsed);
        let counter = if ok { &self.done } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot, for a pool of `workers` threads.
    pub(crate) fn snapshot(&self, workers: usize) -> PoolStats {
        let submitted = self.submitted.load(Ordering::Relaxed);
        let started = self.started.load(Ordering::Relaxed);
        let cancelled = self.cancelled.load(Ordering::Relaxed);
        let done = self.done.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        PoolStats {
            workers,
            queued: submitted.saturating_sub(started + cancelled),
            running: started.saturating_sub(done + failed),
            done,
            failed,
            cancelled,
            ops: Op::ALL
                .iter()
                .filter_map(|op| self.latency[op.index()].snapshot(*op))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_bound_their_values() {
        for ns in [
            0u64,
            1,
            3,
            4,
            5,
            7,
            8,
            100,
            1_000,
            123_456,
            5_000_000,
            u64::MAX / 2,
        ] {
            let b = Histogram::bucket(ns);
            assert!(
                Histogram::upper(b) >= ns,
                "{ns} above its bucket's upper bound"
            );
            if b > 0 {
                assert!(Histogram::upper(b - 1) < ns, "{ns} fits an earlier bucket");
            }
        }
    }

    #[test]
    fn percentiles_from_the_histogram() {
        let h = Histogram::new();
        for _ in 0..98 {
            h.record(Duration::from_micros(10));
        }
        h.record(Duration::from_millis(5));
        h.record(Duration::from_millis(50));
        let s = h.snapshot(Op::Read).unwrap();
        assert_eq!(s.count, 100);
        // (98 × 10 µs + 5 ms + 50 ms) / 100
        assert_eq!(s.mean, Duration::from_nanos(559_800));
        assert!(
            s.p50 >= Duration::from_micros(10) && s.p50 < Duration::from_micros(13),
            "{:?}",
            s.p50
        );
        assert!(
            s.p99 >= Duration::from_millis(5) && s.p99 < Duration::from_millis(6),
            "{:?}",
            s.p99
        );
        assert_eq!(s.max, Duration::from_millis(50));
        assert!(h.snapshot(Op::Write).is_some() && Histogram::new().snapshot(Op::Write).is_none());
    }
}
