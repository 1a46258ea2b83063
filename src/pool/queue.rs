//! The queue between submitters and workers: at most `queue_capacity` jobs wait (a
//! full queue blocks the submitter, or answers `Busy`); jobs on one key wait behind
//! each other in submission order ([`Sequencer`]); the worker loop; and the guard that
//! turns a panic in a job into an error.

use std::any::Any;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{unbounded, Receiver, Sender};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{Error, ErrorKind, Result};
use crate::op::Op;
use crate::store::BlockStore;

use super::job::Job;
use super::stats::Counters;

/// A job as the queue carries it: the typed work and its delivery, erased.
pub(crate) type Task = Box<dyn FnOnce(&dyn BlockStore, &Counters) + Send>;

/// A task and the key it works on, if any.
pub(crate) struct Work {
    key: Option<String>,
    task: Task,
}

/// Whether a submitter waits for room in a full queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Wait until there is room (or the pool closes).
    Wait,
    /// Answer `Busy` at once.
    Try,
}

#[derive(Default)]
struct State {
    queued: usize,
    closed: bool,
}

/// At most `capacity` tasks waiting for a worker.
pub(crate) struct Queue {
    capacity: usize,
    state: Mutex<State>,
    room: Condvar,
    sender: RwLock<Option<Sender<Work>>>,
}

impl Queue {
    /// A queue and the receiving end its workers share.
    pub(crate) fn new(capacity: usize) -> (Queue, Receiver<Work>) {
        let (tx, rx) = unbounded();
        let queue = Queue {
            capacity,
            state: Mutex::new(State::default()),
            room: Condvar::new(),
            sender: RwLock::new(Some(tx)),
        };
        (queue, rx)
    }

    /// Takes a place in the queue for a task of `op`, waiting for room or not as
    /// `admit` says.
    pub(crate) fn reserve(&self, op: Op, admit: Admit) -> Result<()> {
        let mut state = self.state.lock();
        loop {
            if state.closed {
                return Err(closed(op));
            }
            if state.queued < self.capacity {
                state.queued += 1;
                #[cfg(feature = "metrics")]
                // Summed over every pool of the process, like the other pool metrics.
                metrics::gauge!("blockstore_pool_queued").increment(1.0);
                return Ok(());
            }
            if admit == Admit::Try {
                return Err(Error::new(ErrorKind::Busy, op)
                    .with_detail("the pool's queue is full")
                    .with_retryable(true));
            }
            self.room.wait(&mut state);
        }
    }

    /// Hands a task whose place is reserved to the workers.
    fn send(&self, op: Op, work: Work) -> Result<()> {
        let sent = match &*self.sender.read() {
            Some(sender) => sender.send(work).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            self.taken();
            Err(closed(op))
        }
    }

    /// A worker took a task: its place in the queue is free.
    pub(crate) fn taken(&self) {
        {
            let mut state = self.state.lock();
            state.queued -= 1;
            #[cfg(feature = "metrics")]
            metrics::gauge!("blockstore_pool_queued").decrement(1.0);
        }
        self.room.notify_one();
    }

    /// Refuses every later task and wakes submitters waiting for room (they get
    /// `Closed`); tasks already queued stay for the workers.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.room.notify_all();
    }

    /// Lets the workers stop once they have taken every queued task.
    pub(crate) fn disconnect(&self) {
        drop(self.sender.write().take());
    }
}

fn closed(op: Op) -> Error {
    Error::new(ErrorKind::Closed, op).with_detail("the pool is closed")
}

/// Shards of the table of keys with a job queued or running.
const SHARDS: usize = 64;

/// Keeps the jobs on one key in submission order: the first job on a key goes to the
/// workers, later ones wait here behind it, and the worker that finishes a job runs
/// the next one on its key. The table holds only keys with work in flight, and a
/// shard's lock is held for a map operation, never across a job.
pub(crate) struct Sequencer {
    shards: Vec<Mutex<HashMap<String, VecDeque<Task>>>>,
    hasher: RandomState,
}

impl Sequencer {
    pub(crate) fn new() -> Sequencer {
        Sequencer {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &str) -> &Mutex<HashMap<String, VecDeque<Task>>> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    /// `Some(task)` when no job on `key` is in flight (the caller hands it to the
    /// workers); `None` when it now waits behind one.
    fn admit(&self, key: &str, task: Task) -> Option<Task> {
        let mut shard = self.shard(key).lock();
        match shard.get_mut(key) {
            Some(waiting) => {
                waiting.push_back(task);
                None
            }
            None => {
                shard.insert(key.to_owned(), VecDeque::new());
                Some(task)
            }
        }
    }

    /// The next job on `key` after one finished; `None` frees the key.
    fn next(&self, key: &str) -> Option<Task> {
        let mut shard = self.shard(key).lock();
        let next = shard.get_mut(key).and_then(VecDeque::pop_front);
        if next.is_none() {
            shard.remove(key);
        }
        next
    }
}

/// Queues a task of `op` on `key` (if any), in its key's order.
pub(crate) fn enqueue(
    queue: &Queue,
    sequencer: &Sequencer,
    op: Op,
    key: Option<&str>,
    task: Task,
    admit: Admit,
) -> Result<()> {
    queue.reserve(op, admit)?;
    match key {
        None => queue.send(op, Work { key: None, task }),
        Some(key) => match sequencer.admit(key, task) {
            Some(task) => queue.send(
                op,
                Work {
                    key: Some(key.to_owned()),
                    task,
                },
            ),
            // It keeps its reserved place until the worker ahead of it runs it.
            None => Ok(()),
        },
    }
}

/// A worker: runs tasks until the queue is disconnected and empty, and after a task on
/// a key, the tasks that waited behind it.
pub(crate) fn worker(
    tasks: Receiver<Work>,
    queue: Arc<Queue>,
    sequencer: Arc<Sequencer>,
    store: Arc<dyn BlockStore>,
    counters: Arc<Counters>,
) {
    while let Ok(work) = tasks.recv() {
        queue.taken();
        (work.task)(&*store, &counters);
        if let Some(key) = work.key {
            while let Some(next) = sequencer.next(&key) {
                queue.taken();
                next(&*store, &counters);
            }
        }
    }
}

/// Runs a started job, counting and timing it (and the time it waited since
/// `queued_at`); a panic becomes a `Backend` error.
pub(crate) fn run<J: Job>(
    job: J,
    queued_at: Instant,
    store: &dyn BlockStore,
    counters: &Counters,
) -> Result<J::Output> {
    let op = job.op();
    let waited = queued_at.elapsed();
    counters.wait.record(waited);
    counters.started.fetch_add(1, Ordering::Relaxed);
    #[cfg(feature = "metrics")]
    {
        metrics::histogram!("blockstore_pool_wait_seconds").record(waited.as_secs_f64());
        metrics::gauge!("blockstore_pool_running").increment(1.0);
    }
    let call = counters.instruments.call(op, job.key().unwrap_or_default());
    let bytes_in = job.bytes_in();
    let result = call.enter(|| {
        catch_unwind(AssertUnwindSafe(|| job.run(store))).unwrap_or_else(|payload| {
            Err(Error::new(ErrorKind::Backend, op).with_detail(format!(
                "the backend call panicked: {}",
                panic_message(&*payload)
            )))
        })
    });
    let moved = bytes_in + result.as_ref().map_or(0, J::bytes_out);
    call.finish(&result, moved);
    #[cfg(feature = "metrics")]
    metrics::gauge!("blockstore_pool_running").decrement(1.0);
    result
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
