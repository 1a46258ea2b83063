//! The queue between submitters and workers: a channel that holds at most
//! `queue_capacity` jobs (a full queue blocks the submitter, or answers `Busy`), the
//! worker loop, and the guard that turns a panic in a job into an error.

use std::any::Any;
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
    sender: RwLock<Option<Sender<Task>>>,
}

impl Queue {
    /// A queue and the receiving end its workers share.
    pub(crate) fn new(capacity: usize) -> (Queue, Receiver<Task>) {
        let (tx, rx) = unbounded();
        let queue = Queue {
            capacity,
            state: Mutex::new(State::default()),
            room: Condvar::new(),
            sender: RwLock::new(Some(tx)),
        };
        (queue, rx)
    }

    /// Queues a task of `op`, waiting for room or not as `admit` says.
    pub(crate) fn push(&self, op: Op, task: Task, admit: Admit) -> Result<()> {
        let closed = || Error::new(ErrorKind::Closed, op).with_detail("the pool is closed");
        {
            let mut state = self.state.lock();
            loop {
                if state.closed {
                    return Err(closed());
                }
                if state.queued < self.capacity {
                    break;
                }
                if admit == Admit::Try {
                    return Err(Error::new(ErrorKind::Busy, op)
                        .with_detail("the pool's queue is full")
                        .with_retryable(true));
                }
                self.room.wait(&mut state);
            }
            state.queued += 1;
        }
        let sent = match &*self.sender.read() {
            Some(sender) => sender.send(task).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            self.taken();
            Err(closed())
        }
    }

    /// A worker took a task: its place in the queue is free.
    pub(crate) fn taken(&self) {
        self.state.lock().queued -= 1;
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

/// A worker: runs tasks until the queue is disconnected and empty.
pub(crate) fn worker(
    tasks: Receiver<Task>,
    queue: Arc<Queue>,
    store: Arc<dyn BlockStore>,
    counters: Arc<Counters>,
) {
    while let Ok(task) = tasks.recv() {
        queue.taken();
        task(&*store, &counters);
    }
}

/// Runs a started job, counting and timing it; a panic becomes a `Backend` error.
pub(crate) fn run<J: Job>(
    job: J,
    store: &dyn BlockStore,
    counters: &Counters,
) -> Result<J::Output> {
    let op = job.op();
    counters.started.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| job.run(store))).unwrap_or_else(|payload| {
        Err(Error::new(ErrorKind::Backend, op).with_detail(format!(
            "the backend call panicked: {}",
            panic_message(&*payload)
        )))
    });
    counters.finished(op, started.elapsed(), result.is_ok());
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
