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
pub use job::{
    from_fn, Delete, FnJob, Job, Read, ReadAt, ReadInto, ReadRange, Size, Verify, Write,
};
pub use stats::{OpStats, PoolStats};

use handle::Slot;
use queue::{Admit, Queue, Sequencer, Task};
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
/// # Order
///
/// Jobs on one key run in the order they were submitted to the pool: a later write of
/// a key always wins over an earlier one, and a read sees the writes submitted before
/// it. Jobs on different keys run in parallel. Prefix deletes, listings and closures
/// without a key ([`FnJob::on_key`] gives one) are not ordered.
///
/// # Handles
///
/// Dropping a [`Handle`] never cancels its job: a write or delete queued and forgotten
/// still happens. [`Handle::cancel`] cancels a job that has not started.
/// [`Pool::submit_to`] sends results to a channel instead, to wait for whichever job
/// finishes first.
///
/// # Closing
///
/// [`BlockStore::close`] (and dropping the pool) stops taking jobs (submitters, also
/// those blocked on a full queue, get `Closed`), finishes the queued jobs and joins
/// every worker. A pool made with [`Pool::new`] owns its store and closes it too; one
/// made with [`Pool::sharing`] leaves it open for the caller.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use blockstore::pool::{Read, Wait, Write};
/// use blockstore::{BlockStore, MemoryStore, Pool, PoolConfig};
///
/// let pool = Pool::new(Arc::new(MemoryStore::new()), PoolConfig { workers: 4, queue_capacity: 64 })?;
/// // Owned buffers move to the workers; one result per input, in input order.
/// let writes = (0..100).map(|i| Write::new(format!("f/chunk-0/block-{i}"), vec![i as u8; 4096]));
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
    /// Whether closing the pool closes the inner store.
    ownership: Ownership,
    config: PoolConfig,
    counters: Arc<Counters>,
    queue: Arc<Queue>,
    sequencer: Arc<Sequencer>,
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

/// Whether a pool closes the store inside it when it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ownership {
    Owns,
    Shares,
}

impl Pool {
    /// Starts `config.workers` threads in front of `inner`, which the pool owns: closing
    /// (or dropping) the pool closes it.
    pub fn new(inner: Arc<dyn BlockStore>, config: PoolConfig) -> Result<Pool> {
        Pool::start(inner, config, Ownership::Owns)
    }

    /// Starts a pool in front of a store the caller keeps using directly (a daemon
    /// that writes its manifest to the store after the pool is done, say): closing the
    /// pool finishes its jobs and leaves the store open.
    pub fn sharing(inner: Arc<dyn BlockStore>, config: PoolConfig) -> Result<Pool> {
        Pool::start(inner, config, Ownership::Shares)
    }

    fn start(inner: Arc<dyn BlockStore>, config: PoolConfig, ownership: Ownership) -> Result<Pool> {
        config.validate()?;
        let sequencer = Arc::new(Sequencer::new());
        let (queue, tasks) = Queue::new(config.queue_capacity);
        let queue = Arc::new(queue);
        let counters = Arc::new(Counters::new());
        let mut workers = Vec::with_capacity(config.workers);
        for i in 0..config.workers {
            let (tasks, shared, order, inner, counters) = (
                tasks.clone(),
                queue.clone(),
                sequencer.clone(),
                inner.clone(),
                counters.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("{THREAD_PREFIX}{i}"))
                .spawn(move || queue::worker(tasks, shared, order, inner, counters));
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
            ownership,
            config,
            counters,
            queue,
            sequencer,
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

    /// Queues `job` and, when it finishes, sends `message(result)` to `done`: a daemon
    /// with many jobs in flight waits on one channel for whichever finishes first, the
    /// message saying which job it was (writes and reads can share a channel by mapping
    /// their results to one type). Blocks while the queue is full.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use blockstore::pool::{Read, Write};
    /// use blockstore::{MemoryStore, Pool, PoolConfig};
    ///
    /// let pool = Pool::new(Arc::new(MemoryStore::new()), PoolConfig::default())?;
    /// let (done, finished) = crossbeam_channel::unbounded();
    /// pool.submit_to(Write::new("f/0", vec![1; 8]), &done, |r| ("f/0", r.map(|()| 0)))?;
    /// pool.submit_to(Read { key: "f/0".into() }, &done, |r| ("f/0 read", r.map(|b| b.len())))?;
    /// for _ in 0..2 {
    ///     let (what, result) = finished.recv().unwrap();
    ///     println!("{what}: {:?}", result?);
    /// }
    /// # Ok::<(), blockstore::Error>(())
    /// ```
    pub fn submit_to<J, M, T>(
        &self,
        job: J,
        done: &crossbeam_channel::Sender<T>,
        message: M,
    ) -> Result<()>
    where
        J: Job,
        M: FnOnce(Result<J::Output>) -> T + Send + 'static,
        T: Send + 'static,
    {
        let op = job.op();
        let key = job.key().map(str::to_owned);
        let done = done.clone();
        let queued_at = std::time::Instant::now();
        let task: Task = Box::new(move |store, counters| {
            let _ = done.send(message(queue::run(job, queued_at, store, counters)));
        });
        self.enqueue(op, key.as_deref(), task, Admit::Wait)
    }

    fn submit_as<J: Job>(&self, job: J, admit: Admit) -> Result<Handle<J::Output>> {
        let op = job.op();
        let key = job.key().map(str::to_owned);
        let slot = Slot::new();
        let delivery = slot.clone();
        let queued_at = std::time::Instant::now();
        let task: Task = Box::new(move |store, counters| {
            if !delivery.start() {
                counters.cancelled.fetch_add(1, Ordering::Relaxed);
                return;
            }
            delivery.finish(queue::run(job, queued_at, store, counters));
        });
        self.enqueue(op, key.as_deref(), task, admit)?;
        Ok(Handle::new(slot, op))
    }

    /// Queues a task, in its key's order, counting it.
    fn enqueue(&self, op: Op, key: Option<&str>, task: Task, admit: Admit) -> Result<()> {
        let _pass = self.gate.enter(op).map_err(|e| match key {
            Some(key) => e.with_key(key),
            None => e,
        })?;
        queue::enqueue(&self.queue, &self.sequencer, op, key, task, admit)?;
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Runs `job` on a worker and waits for it.
    fn call<J: Job>(&self, job: J) -> Result<J::Output> {
        self.submit(job)?.wait()
    }

    fn shutdown(&self) -> Result<()> {
        if self.gate.forked() {
            // After fork() the workers, the queue and their locks belong to the
            // parent: a parent thread may have held a lock at the fork, and it is not
            // here to let go. Nothing to join, nothing to touch.
            if let Some(mut workers) = self.workers.try_lock() {
                std::mem::forget(std::mem::take(&mut *workers));
            }
            return Ok(());
        }
        let mut workers = self.workers.lock();
        // No new jobs; submitters waiting for room wake up with Closed.
        self.queue.close();
        let first = self.gate.close();
        // Workers drain the queue and stop.
        self.queue.disconnect();
        let current = std::thread::current().id();
        for w in workers.drain(..) {
            if w.thread().id() != current {
                let _ = w.join();
            }
        }
        if first && self.ownership == Ownership::Owns {
            self.inner.close()
        } else {
            Ok(())
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if self.gate.forked() {
            // The parent's threads: never joined or detached from here.
            std::mem::forget(std::mem::take(self.workers.get_mut()));
            return;
        }
        let _ = self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    /// A child forked while a parent thread held the pool's locks (closing it, or
    /// submitting a job) drops its copy of the pool without touching them: the
    /// locks' holder is not in the child, so waiting for it would hang for ever.
    #[test]
    fn a_child_drops_its_copy_of_a_pool_whose_locks_a_parent_thread_held() {
        let pool = Pool::new(
            Arc::new(MemoryStore::new()),
            PoolConfig {
                workers: 2,
                queue_capacity: 8,
            },
        )
        .expect("pool");
        // Held as a closing thread holds it (the guard is let go of after the fork).
        std::mem::forget(pool.workers.lock());
        // SAFETY: the child only drops the pool and `_exit`s; the alarm turns a hang
        // into a failure.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            unsafe { libc::alarm(5) };
            let closed = pool.close().is_ok();
            drop(pool);
            unsafe { libc::_exit(if closed { 0 } else { 1 }) };
        }
        // SAFETY: this thread locked it above and forgot the guard.
        unsafe { pool.workers.force_unlock() };
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child hung or failed closing its copy (status {status:#x})"
        );
        pool.write_block("k", b"still works")
            .expect("the parent's pool");
    }
}
