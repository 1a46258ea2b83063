//! The pool's statistics: jobs queued, running, done, failed and cancelled, the time
//! jobs wait in the queue, and the latency of each kind of operation on the workers,
//! kept by the same instruments every store uses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::instrument::{Histogram, Instruments, Latency};
use crate::op::Op;

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

impl OpStats {
    fn new(op: Op, l: Latency) -> OpStats {
        OpStats {
            op,
            count: l.count,
            mean: l.mean,
            p50: l.p50,
            p99: l.p99,
            max: l.max,
        }
    }
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
    /// How long jobs waited in the queue before a worker took them.
    pub wait: Option<Latency>,
    /// Latency per kind of operation that ran at least once.
    pub ops: Vec<OpStats>,
}

/// The counters a pool keeps while it runs.
pub(crate) struct Counters {
    pub(crate) submitted: AtomicU64,
    pub(crate) started: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    /// Every job, timed: calls, errors, latency per operation.
    pub(crate) instruments: Instruments,
    pub(crate) wait: Histogram,
}

impl Counters {
    pub(crate) fn new() -> Counters {
        Counters {
            submitted: AtomicU64::new(0),
            started: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            instruments: Instruments::timed("pool"),
            wait: Histogram::new(),
        }
    }

    /// A snapshot, for a pool of `workers` threads.
    pub(crate) fn snapshot(&self, workers: usize) -> PoolStats {
        // A job is submitted, then started (or cancelled), then finished: reading the
        // counters in the reverse order (each read at least as late as the one before)
        // never sees more finished than started nor more started than submitted, so
        // the parts add up to at most what was submitted.
        let (ops, _) = self.instruments.report();
        let cancelled = self.cancelled.load(Ordering::SeqCst);
        let started = self.started.load(Ordering::SeqCst);
        let submitted = self.submitted.load(Ordering::SeqCst);
        let failed: u64 = ops
            .iter()
            .map(|o| o.errors.iter().map(|(_, n)| n).sum::<u64>())
            .sum();
        let finished: u64 = ops
            .iter()
            .map(|o| o.calls - o.in_flight.max(0) as u64)
            .sum();
        PoolStats {
            workers,
            queued: submitted.saturating_sub(started + cancelled),
            running: started.saturating_sub(finished),
            done: finished.saturating_sub(failed),
            failed,
            cancelled,
            wait: self.wait.snapshot(),
            ops: ops
                .iter()
                .filter_map(|o| {
                    self.instruments
                        .latency(o.op)
                        .map(|l| OpStats::new(o.op, l))
                })
                .collect(),
        }
    }
}
