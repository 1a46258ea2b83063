//! [`Pool`]: a fixed set of worker threads in front of any store, for callers without
//! an async runtime that want bounded, batched concurrency.
//!
//! Split by role: `config` ([`PoolConfig`]), `job` (what runs: [`Job`] and the store's
//! operations as jobs), `handle` (a submitted job: [`Handle`], [`Wait`]), `queue` (the
//! bounded queue and the workers), `batch` (many jobs side by side: [`Batch`]), `stats`
//! ([`PoolStats`]), `store` (the pool as a [`BlockStore`]).

mod batch;
mod config;
mod handle;
mod job;
mod queue;
mod stats;
mod store;

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};
use crate::gate::Gate;
use crate::op::Op;
use crate::store::BlockStore;

pub use batch::Batch;
pub use config::PoolConfig;
pub use handle::{Handle, Wait};
pub use job::{from_fn, Delete, FnJob, Job, Read, ReadInto, ReadRange, Size, Write};
pub use stats::{OpStats, PoolStats};

use handle::Slot;
use queue::{Admit, Queue, Task};
use stats::Counters;

/// The name prefix of every worker thread: `blockstore-pool-0`, `blockstore-pool-1`, …
pub const THREAD_PREFIX: &str = "blockstore-pool-";

/// A worker pool in front of a store: every call runs on one of a fixed set of named
/// threads taking jobs from one bounded queue, so the pool also caps how many calls
/// reach the inner store at once.
///
/// `Pool` is itself a [`BlockStore`]: its borrowed-buffer calls copy the data (a worker
/// cannot borrow the caller's buffer). Jobs that own their buffers ([`Write`],
/// [`ReadInto`]) move them to the worker without a copy.
///
/// # Jobs
///
/// [`Pool::submit`] queues one [`Job`] and returns a [`Handle`] to wait on; the store's
/// operations are jobs ([`Write`], [`Read`], [`ReadRange`], [`ReadInto`], [`Size`],
/// [`Delete`]) and so is any closure over the store ([`from_fn`]).
///
/// # Batches
///
/// [`Pool::batch`] runs many jobs side by side and hands back `(input index, result)`
/// pairs as they complete, with at most `workers` jobs (so at most `workers` blocks)
/// in flight; [`Batch::in_order`] collects one result per input, in input order. One
/// failure never hides the others.
///
/// # Backpressure
///
/// A full queue blocks the submitter; [`Pool::try_submit`] returns `Busy` instead.
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
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use blockstore::pool::{Read, Wait, Write};
/// use blockstore::{BlockStore, MemoryStore, Pool, PoolConfig};
///
/// let pool = Pool::new(Arc::new(MemoryStore::new()), PoolConfig { workers: 4, queue_capacity: 64 })?;
/// // Owned buffers move to the workers; one result per input, in input order.
/// let writes = (0..100).map(|i| Write { key: format!("f/chunk-0/block-{i}"), data: vec![i as u8; 4096] });
/// assert!(pool.batch(writes).in_order().iter().all(|r| r.is_ok()));
/// // Streaming: results as they complete, at most `workers` blocks in memory.
/// let reads = (0..100).map(|i| Read { key: format!("f/chunk-0/block-{i}") });
/// let bytes: usize = pool.batch(reads).map(|(_, block)| block.map_or(0, |b| b.len())).sum();
/// assert_eq!(bytes, 100 * 4096);
/// // One job: wait, wait with a time limit (expiry is "not done yet"), poll, or detach.
/// let handle = pool.submit(Read { key: "f/chunk-0/block-7".into() })?;
/// match handle.wait_timeout(Duration::from_secs(5)) {
///     Wait::Done(block) => assert_eq!(block?, vec![7u8; 4096]),
///     Wait::Pending(handle) => handle.detach(),
/// }
/// println!("{:?}", pool.stats());
/// pool.close()?;
/// # Ok::<(), blockstore::Error>(())
/// ```
pub struct Pool {
    inner: Arc<dyn BlockStore>,
    config: PoolConfig,
    counters: Arc<Counters>,
    queue: Arc<Queue>,
    gate: Gate,
    /// Held by `close` while it joins the workers: a second `close` returns once the
    /// first has finished.
    workers: Mutex<Vec<JoinHandle<()>>>,
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
        let (queue, tasks) = Queue::new(config.queue_capacity);
        let queue = Arc::new(queue);
        let counters = Arc::new(Counters::new());
        let mut workers = Vec::with_capacity(config.workers);
        for i in 0..config.workers {
            let (tasks, shared, inner, counters) = (
                tasks.clone(),
                queue.clone(),
                inner.clone(),
                counters.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("{THREAD_PREFIX}{i}"))
                .spawn(move || queue::worker(tasks, shared, inner, counters));
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(e) => {
                    queue.disconnect();
                    for w in workers {
                        let _ = w.join();
                    }
                    return Err(Error::new(ErrorKind::Backend, Op::Open)
                        .with_detail("cannot start a worker thread")
                        .with_source(e));
                }
            }
        }
        Ok(Pool {
            inner,
            config,
            counters,
            queue,
            gate: Gate::new(),
            workers: Mutex::new(workers),
        })
    }

    /// The pool's size.
    pub fn config(&self) -> PoolConfig {
        self.config
    }

    /// A snapshot of the pool's counters and latencies.
    pub fn stats(&self) -> PoolStats {
        self.counters.snapshot(self.config.workers)
    }

    /// Queues `job`; blocks while the queue is full.
    pub fn submit<J: Job>(&self, job: J) -> Result<Handle<J::Output>> {
        self.submit_as(job, Admit::Wait)
    }

    /// Queues `job`, or fails with `Busy` at once when the queue is full.
    pub fn try_submit<J: Job>(&self, job: J) -> Result<Handle<J::Output>> {
        self.submit_as(job, Admit::Try)
    }

    /// Runs `jobs` side by side; see [`Batch`].
    pub fn batch<J: Job, I: IntoIterator<Item = J>>(&self, jobs: I) -> Batch<'_, J, I::IntoIter> {
        Batch::new(self, jobs.into_iter(), self.config.workers)
    }

    fn submit_as<J: Job>(&self, job: J, admit: Admit) -> Result<Handle<J::Output>> {
        let op = job.op();
        let slot = Slot::new();
        let delivery = slot.clone();
        let task: Task = Box::new(move |store, counters| {
            if !delivery.start() {
                counters.cancelled.fetch_add(1, Ordering::Relaxed);
                return;
            }
            delivery.finish(queue::run(job, store, counters));
        });
        self.enqueue(op, task, admit)?;
        Ok(Handle::new(slot, op))
    }

    /// Queues a task, counting it.
    fn enqueue(&self, op: Op, task: Task, admit: Admit) -> Result<()> {
        let _pass = self.gate.enter(op)?;
        self.queue.push(op, task, admit)?;
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Runs `job` on a worker and waits for it.
    fn call<J: Job>(&self, job: J) -> Result<J::Output> {
        self.submit(job)?.wait()
    }

    fn shutdown(&self) -> Result<()> {
        let mut workers = self.workers.lock();
        // No new jobs; submitters waiting for room wake up with Closed.
        self.queue.close();
        let first = self.gate.close();
        if self.gate.forked() {
            // After fork() the workers belong to the parent: there is nothing to join.
            std::mem::forget(std::mem::take(&mut *workers));
            return Ok(());
        }
        // Workers drain the queue and stop.
        self.queue.disconnect();
        let current = std::thread::current().id();
        for w in workers.drain(..) {
            if w.thread().id() != current {
                let _ = w.join();
            }
        }
        if first {
            self.inner.close()
        } else {
            Ok(())
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
