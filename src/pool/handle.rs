//! [`Handle`]: a submitted job, to wait on (with or without a time limit), poll, cancel
//! or detach.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;
use parking_lot::{Condvar, Mutex};

use crate::error::{Error, ErrorKind, Result};
use crate::op::Op;

enum SlotState<T> {
    Queued,
    Running,
    Cancelled,
    Done(Result<T>),
    Taken,
}

/// Where a job leaves its result for its handle.
pub(crate) struct Slot<T> {
    state: Mutex<SlotState<T>>,
    ready: Condvar,
    /// Set once the result is in `state`; lets a waiter spin briefly before it sleeps.
    finished: AtomicBool,
}

impl<T> Slot<T> {
    pub(crate) fn new() -> Arc<Slot<T>> {
        Arc::new(Slot {
            state: Mutex::new(SlotState::Queued),
            ready: Condvar::new(),
            finished: AtomicBool::new(false),
        })
    }

    /// Marks the job as running, unless it was cancelled: whether to run it.
    pub(crate) fn start(&self) -> bool {
        let mut state = self.state.lock();
        if matches!(*state, SlotState::Cancelled) {
            return false;
        }
        *state = SlotState::Running;
        true
    }

    /// Leaves the job's result and wakes its waiter.
    pub(crate) fn finish(&self, result: Result<T>) {
        *self.state.lock() = SlotState::Done(result);
        self.finished.store(true, Ordering::Release);
        self.ready.notify_all();
    }
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

/// A submitted job: wait for its result, poll it, or [`cancel`](Handle::cancel) it.
/// Dropping a handle never cancels the job: a write handed to the pool happens whether
/// or not anyone waits for it.
#[must_use = "the job runs anyway; wait() for its result, or detach() to say it is not needed"]
pub struct Handle<T> {
    slot: Arc<Slot<T>>,
    op: Op,
}

impl<T> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("op", &self.op)
            .finish_non_exhaustive()
    }
}

impl<T> Handle<T> {
    pub(crate) fn new(slot: Arc<Slot<T>>, op: Op) -> Handle<T> {
        Handle { slot, op }
    }

    /// The operation the job runs.
    pub fn op(&self) -> Op {
        self.op
    }

    fn take(&self, state: &mut SlotState<T>) -> Option<Result<T>> {
        match std::mem::replace(state, SlotState::Taken) {
            SlotState::Done(result) => Some(result),
            SlotState::Cancelled => {
                // It stays cancelled: the worker that reaches it must still skip it.
                *state = SlotState::Cancelled;
                Some(Err(
                    Error::new(ErrorKind::Closed, self.op).with_detail("the job was cancelled")
                ))
            }
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

    /// Lets the job run to completion with nobody waiting for it (as dropping the
    /// handle does; this says so).
    pub fn detach(self) {}

    /// Cancels the job if it has not started: it will not run, and its result is a
    /// `Closed` error saying so. Returns whether it was cancelled (`false`: it has
    /// started or finished, and its result stands).
    pub fn cancel(&self) -> bool {
        let mut state = self.slot.state.lock();
        if matches!(*state, SlotState::Queued) {
            *state = SlotState::Cancelled;
            true
        } else {
            false
        }
    }
}
