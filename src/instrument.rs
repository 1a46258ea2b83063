//! What a store records of every call, in one place: the `tracing` span and events
//! (feature `tracing`, on by default), the `metrics` counters, gauges and histograms
//! (feature `metrics`), and the numbers a store reports about itself
//! ([`Report`](crate::Report)). The [`Checked`](crate::backend::Checked) layer uses it
//! for every backend, and the pool for its jobs, so no backend repeats it.
//!
//! A call is timed only when something will read the time: a span a subscriber
//! listens to, the `metrics` feature, the pool's statistics, or a slow-call threshold.
//! With none of these a call costs a few atomic additions.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};
use crate::op::Op;
use crate::store::{BlockRef, Blocks};

/// How many recent errors a store remembers for its report.
const RECENT: usize = 8;

/// Latency histogram with four buckets per power of two of nanoseconds: lock-free to
/// record, about 19 % resolution on percentiles.
pub(crate) struct Histogram {
    buckets: [AtomicU64; 256],
    count: AtomicU64,
    total_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Histogram {
    pub(crate) fn new() -> Self {
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

    pub(crate) fn record(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[Self::bucket(ns)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.total_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// Count, mean, p50, p99 and max, if anything was recorded.
    pub(crate) fn snapshot(&self) -> Option<Latency> {
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
        Some(Latency {
            count,
            mean: Duration::from_nanos(self.total_ns.load(Ordering::Relaxed) / count),
            p50: quantile(0.50),
            p99: quantile(0.99),
            max: Duration::from_nanos(max),
        })
    }
}

/// A latency summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// How many calls were timed.
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

/// The counters of one operation. Aligned so operations do not share cache lines.
#[repr(align(64))]
struct OpMetrics {
    calls: AtomicU64,
    errors: [AtomicU64; ErrorKind::ALL.len()],
    bytes: AtomicU64,
    in_flight: AtomicI64,
    latency: Histogram,
    #[cfg(feature = "metrics")]
    keys: MetricKeys,
}

impl OpMetrics {
    fn new(_backend: &'static str, _op: Op) -> Self {
        OpMetrics {
            calls: AtomicU64::new(0),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            bytes: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            latency: Histogram::new(),
            #[cfg(feature = "metrics")]
            keys: MetricKeys::new(_backend, _op),
        }
    }
}

/// The `metrics` keys of one operation, built once per store: a call hands them to the
/// current recorder by reference, so it allocates nothing and, with no recorder
/// installed, costs little more than a thread-local read.
#[cfg(feature = "metrics")]
struct MetricKeys {
    calls: metrics::Key,
    in_flight: metrics::Key,
    seconds: metrics::Key,
    bytes: metrics::Key,
    errors: [metrics::Key; ErrorKind::ALL.len()],
}

#[cfg(feature = "metrics")]
static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new("blockstore", metrics::Level::INFO, Some(module_path!()));

#[cfg(feature = "metrics")]
impl MetricKeys {
    fn new(backend: &'static str, op: Op) -> Self {
        let key = |name: &'static str| {
            metrics::Key::from_parts(
                name,
                vec![
                    metrics::Label::from_static_parts("backend", backend),
                    metrics::Label::from_static_parts("op", op.label()),
                ],
            )
        };
        MetricKeys {
            calls: key("blockstore_calls_total"),
            in_flight: key("blockstore_in_flight"),
            seconds: key("blockstore_call_seconds"),
            bytes: key(if op == Op::Write {
                "blockstore_bytes_written_total"
            } else {
                "blockstore_bytes_read_total"
            }),
            errors: std::array::from_fn(|i| {
                metrics::Key::from_parts(
                    "blockstore_errors_total",
                    vec![
                        metrics::Label::from_static_parts("backend", backend),
                        metrics::Label::from_static_parts("op", op.label()),
                        metrics::Label::from_static_parts("kind", ErrorKind::ALL[i].label()),
                    ],
                )
            }),
        }
    }
}

/// What one operation of a store has seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpReport {
    /// Which operation.
    pub op: Op,
    /// Calls started.
    pub calls: u64,
    /// Calls that failed, by kind of error (kinds that never happened left out).
    pub errors: Vec<(ErrorKind, u64)>,
    /// Bytes read (reads) or written (writes).
    pub bytes: u64,
    /// Calls running now.
    pub in_flight: i64,
    /// Latency of the timed calls, when any was timed.
    pub latency: Option<Latency>,
}

/// An error a store met, as its report keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentError {
    /// When.
    pub at: SystemTime,
    /// The error's kind.
    pub kind: ErrorKind,
    /// The error as it displays.
    pub message: String,
}

/// The instruments of one store (or pool).
pub(crate) struct Instruments {
    backend: &'static str,
    ops: Vec<OpMetrics>,
    recent: Mutex<VecDeque<RecentError>>,
    /// Calls slower than this are a `warn` event; 0 is off.
    slow_ns: AtomicU64,
    /// Time every call (the pool's statistics want every latency).
    always_timed: bool,
}

/// One call in progress; [`Call::finish`] records how it ended. A call dropped
/// unfinished (its backend panicked) is recorded as a `Backend` error, so nothing stays
/// in flight.
pub(crate) struct Call<'a> {
    instruments: &'a Instruments,
    op: Op,
    started: Option<Instant>,
    /// The key, kept only when slow calls are reported (their warning names it).
    key: Option<Box<str>>,
    finished: bool,
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl Instruments {
    /// Instruments for a store of `backend` (`memory`, `filesystem`, `s3`, `pool`).
    pub(crate) fn new(backend: &'static str) -> Instruments {
        Instruments {
            backend,
            ops: Op::ALL
                .iter()
                .map(|op| OpMetrics::new(backend, *op))
                .collect(),
            recent: Mutex::new(VecDeque::new()),
            slow_ns: AtomicU64::new(0),
            always_timed: false,
        }
    }

    /// Instruments that time every call.
    pub(crate) fn timed(backend: &'static str) -> Instruments {
        Instruments {
            always_timed: true,
            ..Instruments::new(backend)
        }
    }

    /// Calls slower than `threshold` become `warn` events (`None`: no such events).
    pub(crate) fn set_slow_threshold(&self, threshold: Option<Duration>) {
        let ns = threshold.map_or(0, |t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
        self.slow_ns.store(ns, Ordering::Relaxed);
    }

    /// Starts a call of `op` on `key` (a key, a prefix, or empty).
    pub(crate) fn call(&self, op: Op, key: &str) -> Call<'_> {
        let m = &self.ops[op.index()];
        m.calls.fetch_add(1, Ordering::Relaxed);
        m.in_flight.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::with_recorder(|r| {
            r.register_counter(&m.keys.calls, &METADATA).increment(1);
            r.register_gauge(&m.keys.in_flight, &METADATA)
                .increment(1.0);
        });
        #[cfg(feature = "tracing")]
        let span = tracing::debug_span!(
            "blockstore",
            backend = self.backend,
            op = op.label(),
            key,
            bytes = tracing::field::Empty,
            outcome = tracing::field::Empty,
            elapsed_us = tracing::field::Empty,
        );
        #[cfg(feature = "tracing")]
        let listened = !span.is_disabled();
        #[cfg(not(feature = "tracing"))]
        let listened = false;
        let slow = self.slow_ns.load(Ordering::Relaxed) > 0;
        let timed = self.always_timed || listened || cfg!(feature = "metrics") || slow;
        Call {
            instruments: self,
            op,
            started: timed.then(Instant::now),
            key: slow.then(|| key.into()),
            finished: false,
            #[cfg(feature = "tracing")]
            span,
        }
    }

    /// What the store has seen, per operation that ran at least once, and its last
    /// errors.
    pub(crate) fn report(&self) -> (Vec<OpReport>, Vec<RecentError>) {
        let ops = Op::ALL
            .iter()
            .filter_map(|op| {
                let m = &self.ops[op.index()];
                let calls = m.calls.load(Ordering::Relaxed);
                (calls > 0).then(|| OpReport {
                    op: *op,
                    calls,
                    errors: ErrorKind::ALL
                        .iter()
                        .filter_map(|k| {
                            let n = m.errors[k.index()].load(Ordering::Relaxed);
                            (n > 0).then_some((*k, n))
                        })
                        .collect(),
                    bytes: m.bytes.load(Ordering::Relaxed),
                    in_flight: m.in_flight.load(Ordering::Relaxed),
                    latency: m.latency.snapshot(),
                })
            })
            .collect();
        (ops, self.recent.lock().iter().cloned().collect())
    }

    /// Latency of `op`, for the pool's statistics.
    pub(crate) fn latency(&self, op: Op) -> Option<Latency> {
        self.ops[op.index()].latency.snapshot()
    }
}

impl Call<'_> {
    /// Runs `f` inside the call's span.
    pub(crate) fn enter<T>(&self, f: impl FnOnce() -> T) -> T {
        #[cfg(feature = "tracing")]
        let _entered = self.span.enter();
        f()
    }

    /// Records how the call ended: `bytes` moved, and the outcome.
    pub(crate) fn finish<T>(mut self, result: &Result<T>, bytes: u64) {
        self.record(result.as_ref().err(), bytes);
        self.finished = true;
    }

    /// Records that the call failed with `e`.
    pub(crate) fn fail(mut self, e: &Error) {
        self.record(Some(e), 0);
        self.finished = true;
    }

    fn record(&self, result: Option<&Error>, bytes: u64) {
        let result = match result {
            Some(e) => Err(e),
            None => Ok(()),
        };
        let inst = self.instruments;
        let m = &inst.ops[self.op.index()];
        m.in_flight.fetch_sub(1, Ordering::Relaxed);
        m.bytes.fetch_add(bytes, Ordering::Relaxed);
        let elapsed = self.started.map(|t| t.elapsed());
        if let Some(elapsed) = elapsed {
            m.latency.record(elapsed);
        }
        if let Err(e) = result {
            m.errors[e.kind().index()].fetch_add(1, Ordering::Relaxed);
            let mut recent = inst.recent.lock();
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(RecentError {
                at: SystemTime::now(),
                kind: e.kind(),
                message: e.to_string(),
            });
        }
        #[cfg(feature = "metrics")]
        metrics::with_recorder(|r| {
            r.register_gauge(&m.keys.in_flight, &METADATA)
                .decrement(1.0);
            if let Some(elapsed) = elapsed {
                r.register_histogram(&m.keys.seconds, &METADATA)
                    .record(elapsed.as_secs_f64());
            }
            if bytes > 0 {
                r.register_counter(&m.keys.bytes, &METADATA)
                    .increment(bytes);
            }
            if let Err(e) = result {
                r.register_counter(&m.keys.errors[e.kind().index()], &METADATA)
                    .increment(1);
            }
        });
        #[cfg(feature = "tracing")]
        {
            let outcome = match result {
                Ok(_) => "ok",
                Err(e) => e.kind().label(),
            };
            self.span.record("bytes", bytes);
            self.span.record("outcome", outcome);
            if let Some(elapsed) = elapsed {
                self.span.record("elapsed_us", elapsed.as_micros() as u64);
            }
            let _entered = self.span.enter();
            let slow = inst.slow_ns.load(Ordering::Relaxed);
            match (elapsed, result) {
                (Some(t), _) if slow > 0 && t.as_nanos() as u64 > slow => tracing::warn!(
                    backend = inst.backend,
                    op = self.op.label(),
                    key = self.key.as_deref().unwrap_or_default(),
                    elapsed_ms = t.as_millis() as u64,
                    outcome,
                    "slow call"
                ),
                (_, Err(e)) => tracing::debug!(error = %e, "call failed"),
                _ => tracing::debug!("call done"),
            }
        }
        #[cfg(not(feature = "tracing"))]
        let _ = elapsed;
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let why = if std::thread::panicking() {
                "the call panicked"
            } else {
                "the call ended without an outcome"
            };
            self.record(
                Some(&Error::new(ErrorKind::Backend, self.op).with_detail(why)),
                0,
            );
        }
    }
}

impl Instruments {
    /// A streaming listing as one call, from opening it to its last block: the call's
    /// span is entered for every step, a failure at any step is the call's outcome, and
    /// a scan dropped early ends as a success.
    pub(crate) fn scan<'a>(
        &'a self,
        prefix: &str,
        open: impl FnOnce() -> Result<Blocks<'a>>,
    ) -> Result<Blocks<'a>> {
        let call = self.call(Op::List, prefix);
        match call.enter(open) {
            Ok(inner) => Ok(Box::new(ObservedScan {
                inner,
                call: Some(call),
            })),
            Err(e) => {
                call.fail(&e);
                Err(e)
            }
        }
    }
}

/// A scan whose steps belong to one call (see [`Instruments::scan`]).
struct ObservedScan<'a> {
    inner: Blocks<'a>,
    /// Until the scan ends.
    call: Option<Call<'a>>,
}

impl Iterator for ObservedScan<'_> {
    type Item = Result<BlockRef>;

    fn next(&mut self) -> Option<Self::Item> {
        let Some(call) = &self.call else {
            return self.inner.next();
        };
        let item = call.enter(|| self.inner.next());
        match &item {
            Some(Ok(_)) => {}
            None => self.end(None),
            Some(Err(e)) => self.end(Some(e)),
        }
        item
    }
}

impl ObservedScan<'_> {
    fn end(&mut self, failure: Option<&Error>) {
        if let Some(mut call) = self.call.take() {
            call.record(failure, 0);
            call.finished = true;
        }
    }
}

impl Drop for ObservedScan<'_> {
    fn drop(&mut self) {
        self.end(None);
    }
}

/// The bytes a result carries, for the counters.
pub(crate) fn bytes_of<T: AsRef<[u8]>>(result: &Result<T>) -> u64 {
    result.as_ref().map_or(0, |v| v.as_ref().len() as u64)
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
        let s = h.snapshot().unwrap();
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
        assert!(h.snapshot().is_some() && Histogram::new().snapshot().is_none());
    }
}
