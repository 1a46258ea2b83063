//! `Pool`: a fixed set of worker threads in front of any store, for callers without an
//! async runtime that want bounded, batched concurrency.

use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender, TrySendError};
use crossbeam_utils::Backoff;
use parking_lot::{Condvar, Mutex, RwLock};
use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};
use crate::store::{BlockRef, BlockStore};

/// The name prefix of every worker thread: `blockstore-pool-0`, `blockstore-pool-1`, …
pub const THREAD_PREFIX: &str = "blockstore-pool-";

/// The size of a pool; the `[pool]` section of the configuration.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Worker threads, and so the most calls that reach the inner store at once; at
    /// least 1. Default 16.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Jobs that may wait in the queue before submitters block; at least 1. Default 256.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
}

fn default_workers() -> usize {
    16
}
fn default_queue_capacity() -> usize {
    256
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: default_workers(),
            queue_capacity: default_queue_capacity(),
        }
    }
}

impl PoolConfig {
    /// Checks that both sizes are at least 1.
    pub fn validate(&self) -> Result<()> {
        for (key, value) in [
            ("workers", self.workers),
            ("queue_capacity", self.queue_capacity),
        ] {
            if value == 0 {
                return Err(Error::new(ErrorKind::Config, "config")
                    .with_key(&format!("pool.{key}"))
                    .with_detail("must be at least 1"));
            }
        }
        Ok(())
    }
}

/// The kinds of operation the pool runs, for its statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpKind {
    /// `write_block`.
    Write,
    /// `read_block`.
    Read,
    /// `read_block_range` and `read_block_range_into`.
    ReadRange,
    /// `block_size`.
    Size,
    /// `delete_block`.
    Delete,
    /// `delete_by_prefix`.
    DeletePrefix,
    /// `list_by_prefix` and `list_blocks`.
    List,
    /// `health_check`.
    Health,
    /// A job given to [`Pool::submit`].
    Custom,
}

const KINDS: [OpKind; 9] = [
    OpKind::Write,
    OpKind::Read,
    OpKind::ReadRange,
    OpKind::Size,
    OpKind::Delete,
    OpKind::DeletePrefix,
    OpKind::List,
    OpKind::Health,
    OpKind::Custom,
];

impl OpKind {
    /// The kind's slot in the statistics: its place in [`KINDS`], which lists the kinds
    /// in declaration order.
    fn index(self) -> usize {
        self as usize
    }

    /// The operation's name in error messages.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Write => "write",
            OpKind::Read => "read",
            OpKind::ReadRange => "read range",
            OpKind::Size => "size",
            OpKind::Delete => "delete",
            OpKind::DeletePrefix => "delete prefix",
            OpKind::List => "list",
            OpKind::Health => "health check",
            OpKind::Custom => "job",
        }
    }
}

// ---------------------------------------------------------------------------------------
// statistics

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

    fn snapshot(&self, kind: OpKind) -> Option<OpStats> {
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
            kind,
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
    pub kind: OpKind,
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

struct Counters {
    submitted: AtomicU64,
    started: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    latency: Vec<Histogram>,
}

// ---------------------------------------------------------------------------------------
// jobs and handles

/// A unit of work as the queue carries it: typed work and its delivery, erased. The
/// task records its own statistics before it delivers its result, so a caller that has
/// its result sees it counted.
struct Job {
    kind: OpKind,
    task: Task,
}

type Task = Box<dyn FnOnce(&dyn BlockStore, &Counters) + Send>;

impl Counters {
    /// Runs `op` as a started job of `kind`, counting it and timing it.
    fn run<T>(
        &self,
        kind: OpKind,
        store: &dyn BlockStore,
        op: impl FnOnce(&dyn BlockStore) -> Result<T>,
    ) -> Result<T> {
        self.started.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = run_guarded(kind, store, op);
        self.latency[kind.index()].record(started.elapsed());
        let finished = if result.is_ok() {
            &self.done
        } else {
            &self.failed
        };
        finished.fetch_add(1, Ordering::Relaxed);
        result
    }
}

/// Runs `op` on the store, turning a panic into a `Backend` error of kind `kind`.
fn run_guarded<T>(
    kind: OpKind,
    store: &dyn BlockStore,
    op: impl FnOnce(&dyn BlockStore) -> Result<T>,
) -> Result<T> {
    catch_unwind(AssertUnwindSafe(|| op(store))).unwrap_or_else(|payload| {
        Err(
            Error::new(ErrorKind::Backend, kind.name()).with_detail(format!(
                "the backend call panicked: {}",
                panic_message(&*payload)
            )),
        )
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

enum SlotState<T> {
    Queued,
    Running,
    Cancelled,
    Done(Result<T>),
    Taken,
}

/// Where a handle's job leaves its result.
struct Slot<T> {
    state: Mutex<SlotState<T>>,
    ready: Condvar,
    /// Set once the result is in `state`; lets a waiter spin briefly before it sleeps.
    finished: AtomicBool,
}

/// What [`Handle::wait_timeout`] and [`Handle::poll`] found.
#[must_use]
pub enum Wait<T> {
    /// The job finished with this result.
    Done(Result<T>),
    /// The job has not finished; it keeps its place. Wait again on the handle.
    Pending(Handle<T>),
}

impl<T> fmt::Debug for Wait<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wait::Done(r) => write!(f, "Done(ok: {})", r.is_ok()),
            Wait::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// A submitted job. Dropping the handle of a job that has not started cancels it;
/// [`Handle::detach`] lets it run unobserved instead.
#[must_use = "dropping a handle cancels its job unless it has started; use detach() to let it run"]
pub struct Handle<T> {
    slot: Arc<Slot<T>>,
    kind: OpKind,
    detached: bool,
}

impl<T> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl<T> Handle<T> {
    fn take(&self, state: &mut SlotState<T>) -> Option<Result<T>> {
        match std::mem::replace(state, SlotState::Taken) {
            SlotState::Done(result) => Some(result),
            SlotState::Cancelled => Some(Err(Error::new(ErrorKind::Closed, self.kind.name())
                .with_detail("the job was cancelled"))),
            other => {
                *state = other;
                None
            }
        }
    }

    /// Blocks until the job has finished and returns its result.
    pub fn wait(self) -> Result<T> {
        // Most calls finish within microseconds: spin and yield a little before sleeping,
        // since waking a sleeping thread costs far more than that on many machines.
        let backoff = Backoff::new();
        while !self.slot.finished.load(Ordering::Acquire) && !backoff.is_completed() {
            backoff.snooze();
        }
        let mut state = self.slot.state.lock();
        loop {
            if let Some(result) = self.take(&mut state) {
                return result;
            }
            self.slot.ready.wait(&mut state);
        }
    }

    /// Waits at most `timeout`. On expiry the job is not affected: the handle comes
    /// back in [`Wait::Pending`] to wait again.
    pub fn wait_timeout(self, timeout: Duration) -> Wait<T> {
        let deadline = Instant::now() + timeout;
        let mut state = self.slot.state.lock();
        loop {
            if let Some(result) = self.take(&mut state) {
                return Wait::Done(result);
            }
            if self.slot.ready.wait_until(&mut state, deadline).timed_out() {
                if let Some(result) = self.take(&mut state) {
                    return Wait::Done(result);
                }
                drop(state);
                return Wait::Pending(self);
            }
        }
    }

    /// Returns the result if the job has finished, without blocking.
    pub fn poll(self) -> Wait<T> {
        let mut state = self.slot.state.lock();
        match self.take(&mut state) {
            Some(result) => Wait::Done(result),
            None => {
                drop(state);
                Wait::Pending(self)
            }
        }
    }

    /// Whether the job has finished (its result is waiting).
    pub fn is_done(&self) -> bool {
        matches!(*self.slot.state.lock(), SlotState::Done(_))
    }

    /// Lets the job run to completion with nobody waiting for it.
    pub fn detach(mut self) {
        self.detached = true;
    }
}

impl<T> Drop for Handle<T> {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        let mut state = self.slot.state.lock();
        if matches!(*state, SlotState::Queued) {
            *state = SlotState::Cancelled;
        }
    }
}

// ---------------------------------------------------------------------------------------
// the pool

struct Shared {
    counters: Counters,
}

/// A worker pool in front of a store: every call runs on one of a fixed set of named
/// threads taking jobs from one bounded queue, so the pool also caps how many calls
/// reach the inner store at once.
///
/// `Pool` is itself a [`BlockStore`]: its borrowed-buffer calls copy the data (a worker
/// cannot borrow the caller's buffer). The owned-buffer submissions
/// ([`Pool::submit_write`], [`Pool::submit_read_into`]) and the batch calls avoid that
/// copy.
///
/// # Backpressure
///
/// A full queue blocks the submitter; the `try_` variants return `Busy` instead.
///
/// # Batches
///
/// [`Pool::write_blocks`], [`Pool::read_blocks`], [`Pool::read_ranges`] and
/// [`Pool::delete_blocks`] return one result per input, in input order. Their streaming
/// forms (`for_each_*`) hand each result to a callback as it completes and keep at most
/// `workers` operations, so at most `workers` blocks, in flight.
///
/// # Fork
///
/// Worker threads do not survive `fork()`: in a child process every call fails at once
/// with a `Backend` error. Open stores after daemonizing.
///
/// # Closing
///
/// [`BlockStore::close`] (and dropping the pool) stops taking jobs (submitters, also
/// those blocked on a full queue, get `Closed`), finishes the queued jobs, joins every
/// worker, then closes the inner store.
pub struct Pool {
    inner: Arc<dyn BlockStore>,
    config: PoolConfig,
    shared: Arc<Shared>,
    closing: AtomicBool,
    jobs: RwLock<Option<Sender<Job>>>,
    /// Dropped at close: wakes submitters blocked on a full queue.
    closed_signal: Mutex<Option<Sender<()>>>,
    closed_watch: Receiver<()>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Serialises `close` so a second caller returns only once the first has finished.
    close_lock: Mutex<Option<Result<()>>>,
    /// The process that started the workers: a forked child has none of them.
    pid: u32,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Starts `config.workers` threads in front of `inner`.
    pub fn new(inner: Arc<dyn BlockStore>, config: PoolConfig) -> Result<Pool> {
        config.validate()?;
        let (tx, rx) = bounded::<Job>(config.queue_capacity);
        let (signal_tx, signal_rx) = bounded::<()>(0);
        let shared = Arc::new(Shared {
            counters: Counters {
                submitted: AtomicU64::new(0),
                started: AtomicU64::new(0),
                done: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                cancelled: AtomicU64::new(0),
                latency: KINDS.iter().map(|_| Histogram::new()).collect(),
            },
        });
        let mut workers = Vec::with_capacity(config.workers);
        for i in 0..config.workers {
            let (rx, inner, shared) = (rx.clone(), inner.clone(), shared.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("{THREAD_PREFIX}{i}"))
                .spawn(move || worker(rx, inner, shared));
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(e) => {
                    drop(tx);
                    for w in workers {
                        let _ = w.join();
                    }
                    return Err(Error::new(ErrorKind::Backend, "start pool")
                        .with_detail("cannot start a worker thread")
                        .with_source(e));
                }
            }
        }
        Ok(Pool {
            inner,
            config,
            shared,
            closing: AtomicBool::new(false),
            jobs: RwLock::new(Some(tx)),
            closed_signal: Mutex::new(Some(signal_tx)),
            closed_watch: signal_rx,
            workers: Mutex::new(workers),
            close_lock: Mutex::new(None),
            pid: std::process::id(),
        })
    }

    /// The pool's size.
    pub fn config(&self) -> PoolConfig {
        self.config
    }

    /// A snapshot of the pool's counters and latencies.
    pub fn stats(&self) -> PoolStats {
        let c = &self.shared.counters;
        let submitted = c.submitted.load(Ordering::Relaxed);
        let started = c.started.load(Ordering::Relaxed);
        let cancelled = c.cancelled.load(Ordering::Relaxed);
        let done = c.done.load(Ordering::Relaxed);
        let failed = c.failed.load(Ordering::Relaxed);
        PoolStats {
            workers: self.config.workers,
            queued: submitted.saturating_sub(started + cancelled),
            running: started.saturating_sub(done + failed),
            done,
            failed,
            cancelled,
            ops: KINDS
                .iter()
                .filter_map(|k| c.latency[k.index()].snapshot(*k))
                .collect(),
        }
    }

    /// Queues a job; blocks while the queue is full (or fails with `Busy` when
    /// `blocking` is false).
    fn enqueue(&self, job: Job, blocking: bool) -> Result<()> {
        let kind = job.kind;
        let closed =
            || Error::new(ErrorKind::Closed, kind.name()).with_detail("the pool is closed");
        if self.closing.load(Ordering::Acquire) {
            return Err(closed());
        }
        if std::process::id() != self.pid {
            // The workers did not survive fork(): a submitted job would never run.
            return Err(Error::new(ErrorKind::Backend, kind.name()).with_detail(
                "the pool was started by the parent process; open a new store after fork()",
            ));
        }
        let sender = self.jobs.read().clone().ok_or_else(closed)?;
        let submitted = &self.shared.counters.submitted;
        let job = match sender.try_send(job) {
            Ok(()) => {
                submitted.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(TrySendError::Full(job)) if blocking => job,
            Err(_) => {
                return Err(if self.closing.load(Ordering::Acquire) {
                    closed()
                } else {
                    Error::new(ErrorKind::Busy, kind.name())
                        .with_detail("the pool's queue is full")
                        .with_retryable(true)
                });
            }
        };
        select! {
            send(sender, job) -> sent => match sent {
                Ok(()) => {
                    submitted.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(_) => Err(closed()),
            },
            recv(self.closed_watch) -> _ => Err(closed()),
        }
    }

    fn submit_kind<T, F>(&self, kind: OpKind, op: F, blocking: bool) -> Result<Handle<T>>
    where
        T: Send + 'static,
        F: FnOnce(&dyn BlockStore) -> Result<T> + Send + 'static,
    {
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState::Queued),
            ready: Condvar::new(),
            finished: AtomicBool::new(false),
        });
        let job_slot = slot.clone();
        let task = move |store: &dyn BlockStore, counters: &Counters| {
            {
                let mut state = job_slot.state.lock();
                if matches!(*state, SlotState::Cancelled) {
                    counters.cancelled.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                *state = SlotState::Running;
            }
            let result = counters.run(kind, store, op);
            *job_slot.state.lock() = SlotState::Done(result);
            job_slot.finished.store(true, Ordering::Release);
            job_slot.ready.notify_all();
        };
        self.enqueue(
            Job {
                kind,
                task: Box::new(task),
            },
            blocking,
        )?;
        Ok(Handle {
            slot,
            kind,
            detached: false,
        })
    }

    /// Runs `op` on a worker; blocks while the queue is full.
    pub fn submit<T, F>(&self, op: F) -> Result<Handle<T>>
    where
        T: Send + 'static,
        F: FnOnce(&dyn BlockStore) -> Result<T> + Send + 'static,
    {
        self.submit_kind(OpKind::Custom, op, true)
    }

    /// Runs `op` on a worker, or fails with `Busy` at once when the queue is full.
    pub fn try_submit<T, F>(&self, op: F) -> Result<Handle<T>>
    where
        T: Send + 'static,
        F: FnOnce(&dyn BlockStore) -> Result<T> + Send + 'static,
    {
        self.submit_kind(OpKind::Custom, op, false)
    }

    /// Writes an owned buffer (no copy); blocks while the queue is full.
    pub fn submit_write(&self, key: String, data: Vec<u8>) -> Result<Handle<()>> {
        self.submit_kind(OpKind::Write, move |s| s.write_block(&key, &data), true)
    }

    /// [`Pool::submit_write`], or `Busy` at once when the queue is full.
    pub fn try_submit_write(&self, key: String, data: Vec<u8>) -> Result<Handle<()>> {
        self.submit_kind(OpKind::Write, move |s| s.write_block(&key, &data), false)
    }

    /// Reads a whole block; blocks while the queue is full.
    pub fn submit_read(&self, key: String) -> Result<Handle<Vec<u8>>> {
        self.submit_kind(OpKind::Read, move |s| s.read_block(&key), true)
    }

    /// [`Pool::submit_read`], or `Busy` at once when the queue is full.
    pub fn try_submit_read(&self, key: String) -> Result<Handle<Vec<u8>>> {
        self.submit_kind(OpKind::Read, move |s| s.read_block(&key), false)
    }

    /// Reads at `offset` into the caller's buffer (its whole length) and hands it back
    /// with the count of bytes read; no copy.
    pub fn submit_read_into(
        &self,
        key: String,
        offset: u64,
        mut buf: Vec<u8>,
    ) -> Result<Handle<(Vec<u8>, usize)>> {
        self.submit_kind(
            OpKind::ReadRange,
            move |s| {
                let n = s.read_block_range_into(&key, offset, &mut buf)?;
                Ok((buf, n))
            },
            true,
        )
    }

    /// Deletes a block; blocks while the queue is full.
    pub fn submit_delete(&self, key: String) -> Result<Handle<()>> {
        self.submit_kind(OpKind::Delete, move |s| s.delete_block(&key), true)
    }

    /// Runs one job per input, each reporting to a channel of this batch, with at most
    /// `window` of them submitted and not yet reported, whatever the batch's size.
    /// `each` is the operation for one input.
    fn stream<I, T, F, C>(
        &self,
        kind: OpKind,
        window: usize,
        inputs: impl IntoIterator<Item = I>,
        each: F,
        mut callback: C,
    ) where
        I: Send + 'static,
        T: Send + 'static,
        F: Fn(&dyn BlockStore, I) -> Result<T> + Send + Sync + 'static,
        C: FnMut(usize, Result<T>),
    {
        let (tx, rx) = unbounded::<(usize, Result<T>)>();
        let each = Arc::new(each);
        let mut in_flight = 0usize;
        for (i, input) in inputs.into_iter().enumerate() {
            if in_flight == window {
                if let Ok((j, result)) = rx.recv() {
                    in_flight -= 1;
                    callback(j, result);
                }
            }
            let (tx, each) = (tx.clone(), each.clone());
            let task = move |store: &dyn BlockStore, counters: &Counters| {
                let result = counters.run(kind, store, |s| each(s, input));
                let _ = tx.send((i, result));
            };
            match self.enqueue(
                Job {
                    kind,
                    task: Box::new(task),
                },
                true,
            ) {
                Ok(()) => in_flight += 1,
                Err(e) => callback(i, Err(e)),
            }
        }
        drop(tx);
        for _ in 0..in_flight {
            match rx.recv() {
                Ok((j, result)) => callback(j, result),
                Err(_) => break,
            }
        }
    }

    fn collect<T>(n: usize, run: impl FnOnce(&mut dyn FnMut(usize, Result<T>))) -> Vec<Result<T>> {
        let mut results: Vec<Option<Result<T>>> = (0..n).map(|_| None).collect();
        run(&mut |i, r| results[i] = Some(r));
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::new(ErrorKind::Backend, "batch").with_detail("no result"))
                })
            })
            .collect()
    }

    /// At most this many jobs of a streaming batch are in flight: one per worker, so at
    /// most `workers` blocks are held at once.
    fn streaming_window(&self) -> usize {
        self.config.workers
    }

    /// A collecting batch holds every result anyway, so it also keeps the queue full:
    /// workers then never wait for the caller to hand out the next job.
    fn collecting_window(&self) -> usize {
        self.config.workers + self.config.queue_capacity
    }

    fn writes(
        &self,
        window: usize,
        blocks: impl IntoIterator<Item = (String, Vec<u8>)>,
        callback: impl FnMut(usize, Result<()>),
    ) {
        self.stream(
            OpKind::Write,
            window,
            blocks,
            |s, (k, d): (String, Vec<u8>)| s.write_block(&k, &d),
            callback,
        )
    }

    fn reads<S: AsRef<str>>(
        &self,
        window: usize,
        keys: impl IntoIterator<Item = S>,
        callback: impl FnMut(usize, Result<Vec<u8>>),
    ) {
        let keys = keys.into_iter().map(|k| k.as_ref().to_owned());
        self.stream(
            OpKind::Read,
            window,
            keys,
            |s, k: String| s.read_block(&k),
            callback,
        )
    }

    fn ranges<S: AsRef<str>>(
        &self,
        window: usize,
        ranges: impl IntoIterator<Item = (S, u64, u64)>,
        callback: impl FnMut(usize, Result<Vec<u8>>),
    ) {
        let ranges = ranges
            .into_iter()
            .map(|(k, o, l)| (k.as_ref().to_owned(), o, l));
        self.stream(
            OpKind::ReadRange,
            window,
            ranges,
            |s, (k, o, l): (String, u64, u64)| s.read_block_range(&k, o, l),
            callback,
        )
    }

    fn deletes<S: AsRef<str>>(
        &self,
        window: usize,
        keys: impl IntoIterator<Item = S>,
        callback: impl FnMut(usize, Result<()>),
    ) {
        let keys = keys.into_iter().map(|k| k.as_ref().to_owned());
        self.stream(
            OpKind::Delete,
            window,
            keys,
            |s, k: String| s.delete_block(&k),
            callback,
        )
    }

    /// Writes many blocks concurrently; hands each result (with its input index) to
    /// `callback` as it completes, keeping at most `workers` writes in flight.
    pub fn for_each_write(
        &self,
        blocks: impl IntoIterator<Item = (String, Vec<u8>)>,
        callback: impl FnMut(usize, Result<()>),
    ) {
        self.writes(self.streaming_window(), blocks, callback)
    }

    /// Writes many blocks concurrently; one result per input, in input order.
    pub fn write_blocks(&self, blocks: Vec<(String, Vec<u8>)>) -> Vec<Result<()>> {
        Self::collect(blocks.len(), |cb| {
            self.writes(self.collecting_window(), blocks, cb)
        })
    }

    /// Reads many blocks concurrently; hands each block (with its input index) to
    /// `callback` as it arrives, so at most `workers` blocks are in memory at once.
    pub fn for_each_read<S: AsRef<str>>(
        &self,
        keys: impl IntoIterator<Item = S>,
        callback: impl FnMut(usize, Result<Vec<u8>>),
    ) {
        self.reads(self.streaming_window(), keys, callback)
    }

    /// Reads many blocks concurrently; one result per key, in input order.
    pub fn read_blocks<S: AsRef<str>>(&self, keys: &[S]) -> Vec<Result<Vec<u8>>> {
        Self::collect(keys.len(), |cb| {
            self.reads(
                self.collecting_window(),
                keys.iter().map(|k| k.as_ref()),
                cb,
            )
        })
    }

    /// Reads many ranges `(key, offset, length)` concurrently, streaming the results as
    /// [`Pool::for_each_read`] does.
    pub fn for_each_range<S: AsRef<str>>(
        &self,
        ranges: impl IntoIterator<Item = (S, u64, u64)>,
        callback: impl FnMut(usize, Result<Vec<u8>>),
    ) {
        self.ranges(self.streaming_window(), ranges, callback)
    }

    /// Reads many ranges `(key, offset, length)` concurrently; one result per input,
    /// in input order.
    pub fn read_ranges<S: AsRef<str>>(&self, ranges: &[(S, u64, u64)]) -> Vec<Result<Vec<u8>>> {
        Self::collect(ranges.len(), |cb| {
            self.ranges(
                self.collecting_window(),
                ranges.iter().map(|(k, o, l)| (k.as_ref(), *o, *l)),
                cb,
            )
        })
    }

    /// Deletes many blocks concurrently, streaming the results.
    pub fn for_each_delete<S: AsRef<str>>(
        &self,
        keys: impl IntoIterator<Item = S>,
        callback: impl FnMut(usize, Result<()>),
    ) {
        self.deletes(self.streaming_window(), keys, callback)
    }

    /// Deletes many blocks concurrently; one result per key, in input order.
    pub fn delete_blocks<S: AsRef<str>>(&self, keys: &[S]) -> Vec<Result<()>> {
        Self::collect(keys.len(), |cb| {
            self.deletes(
                self.collecting_window(),
                keys.iter().map(|k| k.as_ref()),
                cb,
            )
        })
    }

    /// Runs `op` on a worker and waits for it.
    fn call<T, F>(&self, kind: OpKind, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn BlockStore) -> Result<T> + Send + 'static,
    {
        self.submit_kind(kind, op, true)?.wait()
    }

    fn shutdown(&self) -> Result<()> {
        let mut closed = self.close_lock.lock();
        if let Some(result) = &*closed {
            return result
                .as_ref()
                .map(|_| ())
                .map_err(|e| Error::new(e.kind(), "close").with_detail(e.to_string()));
        }
        self.closing.store(true, Ordering::Release);
        // No new jobs; wake submitters blocked on a full queue.
        drop(self.jobs.write().take());
        drop(self.closed_signal.lock().take());
        // Workers drain the queue and stop once every sender is gone.
        let workers = std::mem::take(&mut *self.workers.lock());
        if std::process::id() != self.pid {
            // After fork() the workers belong to the parent: there is nothing to join.
            std::mem::forget(workers);
            return Ok(());
        }
        let current = std::thread::current().id();
        for w in workers {
            if w.thread().id() != current {
                let _ = w.join();
            }
        }
        let result = self.inner.close();
        *closed = Some(match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::new(e.kind(), "close").with_detail(e.to_string())),
        });
        result
    }
}

fn worker(jobs: Receiver<Job>, store: Arc<dyn BlockStore>, shared: Arc<Shared>) {
    while let Ok(job) = jobs.recv() {
        (job.task)(&*store, &shared.counters);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl BlockStore for Pool {
    fn write_block(&self, key: &str, data: &[u8]) -> Result<()> {
        let (key, data) = (key.to_owned(), data.to_vec());
        self.call(OpKind::Write, move |s| s.write_block(&key, &data))
    }

    fn read_block(&self, key: &str) -> Result<Vec<u8>> {
        let key = key.to_owned();
        self.call(OpKind::Read, move |s| s.read_block(&key))
    }

    fn read_block_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let key = key.to_owned();
        self.call(OpKind::ReadRange, move |s| {
            s.read_block_range(&key, offset, length)
        })
    }

    fn read_block_range_into(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let (key, len) = (key.to_owned(), buf.len());
        let (data, n) = self.call(OpKind::ReadRange, move |s| {
            let mut own = vec![0u8; len];
            let n = s.read_block_range_into(&key, offset, &mut own)?;
            Ok((own, n))
        })?;
        buf[..n].copy_from_slice(&data[..n]);
        Ok(n)
    }

    fn block_size(&self, key: &str) -> Result<u64> {
        let key = key.to_owned();
        self.call(OpKind::Size, move |s| s.block_size(&key))
    }

    fn content_md5(&self, key: &str) -> Result<Option<[u8; 16]>> {
        let key = key.to_owned();
        self.call(OpKind::Size, move |s| s.content_md5(&key))
    }

    fn delete_block(&self, key: &str) -> Result<()> {
        let key = key.to_owned();
        self.call(OpKind::Delete, move |s| s.delete_block(&key))
    }

    fn delete_by_prefix(&self, prefix: &str) -> Result<u64> {
        let prefix = prefix.to_owned();
        self.call(OpKind::DeletePrefix, move |s| s.delete_by_prefix(&prefix))
    }

    fn list_by_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = prefix.to_owned();
        self.call(OpKind::List, move |s| s.list_by_prefix(&prefix))
    }

    fn list_blocks(&self, prefix: &str) -> Result<Vec<BlockRef>> {
        let prefix = prefix.to_owned();
        self.call(OpKind::List, move |s| s.list_blocks(&prefix))
    }

    fn health_check(&self) -> Result<()> {
        self.call(OpKind::Health, |s| s.health_check())
    }

    fn close(&self) -> Result<()> {
        self.shutdown()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_slot_and_name() {
        for (i, kind) in KINDS.iter().enumerate() {
            assert_eq!(kind.index(), i, "{kind:?}");
        }
        let names: Vec<&str> = KINDS.iter().map(|k| k.name()).collect();
        assert_eq!(
            names,
            [
                "write",
                "read",
                "read range",
                "size",
                "delete",
                "delete prefix",
                "list",
                "health check",
                "job"
            ]
        );
    }

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
        let s = h.snapshot(OpKind::Read).unwrap();
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
        assert!(
            h.snapshot(OpKind::Write).is_some()
                && Histogram::new().snapshot(OpKind::Write).is_none()
        );
    }
}
