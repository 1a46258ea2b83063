//! [`Gate`]: the open/closed state of a store. Operations pass the gate, `close` shuts
//! it and waits for the ones already through.
//!
//! Passing costs two atomic operations and takes no lock, so it never serialises
//! operations on different keys; the mutex is only touched while closing.
//!
//! # Fork
//!
//! A gate notices when it is used in a child process forked after it was made: threads
//! of the parent that were inside the gate at the fork do not exist in the child, so
//! waiting for them would hang. In a child every operation is refused with a `Backend`
//! error that says to open a new store, and `close` returns at once.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, ErrorKind, Result};
use crate::op::Op;

/// Bumped in every child process right after `fork()`.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn forked_child() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// The fork generation of this process: how many forks lie between the first process
/// that used the crate and this one.
///
/// The handler is registered on first use. Not with a `Once`: a child forked while a
/// thread of its parent was inside it would wait for ever for a thread it does not
/// have. Instead the registering process's id is noted first, and a process that
/// finds registration begun by another process (its parent, at the fork) and not
/// finished does it itself (registered twice, the counter moves by two: still moved).
pub(crate) fn fork_generation() -> u64 {
    /// The id of the process registering the handler (high bits) and whether it is
    /// done (bit 0; a registered handler is inherited by children with this).
    static REGISTER: AtomicU64 = AtomicU64::new(0);
    let pid = u64::from(std::process::id());
    loop {
        let state = REGISTER.load(Ordering::Acquire);
        if state & 1 == 1 {
            break;
        }
        if state >> 1 == pid {
            // Another thread of this process is registering it right now.
            std::hint::spin_loop();
            continue;
        }
        if REGISTER
            .compare_exchange(state, pid << 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // SAFETY: registers a handler that only touches an atomic, which is
            // async-signal-safe as a fork child handler must be.
            unsafe {
                libc::pthread_atfork(None, None, Some(forked_child));
            }
            REGISTER.store(pid << 1 | 1, Ordering::Release);
            break;
        }
    }
    FORK_GENERATION.load(Ordering::SeqCst)
}

/// The error for a store used in a process forked after it was opened.
pub(crate) fn forked_error(op: Op) -> Error {
    Error::new(ErrorKind::Backend, op).with_detail(
        "the store was opened before this process was forked; open a new store in the child",
    )
}

/// Counts operations in flight and refuses new ones once closed.
///
/// For backends and wrappers that implement [`crate::BlockStore`] themselves (the
/// [`Checked`](crate::backend::Checked) layer uses one for every backend):
///
/// ```
/// use blockstore::backend::Gate;
/// use blockstore::{ErrorKind, Op};
///
/// let gate = Gate::new();
/// {
///     let _pass = gate.enter(Op::Read)?; // the operation runs while the pass lives
/// }
/// assert!(gate.close(), "the first close");
/// assert_eq!(gate.enter(Op::Read).unwrap_err().kind(), ErrorKind::Closed);
/// # Ok::<(), blockstore::Error>(())
/// ```
#[derive(Debug)]
pub struct Gate {
    closed: AtomicBool,
    in_flight: AtomicUsize,
    idle: Mutex<()>,
    idle_cv: Condvar,
    /// The fork generation the gate was made in.
    generation: u64,
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

/// Proof that an operation passed the gate; dropping it ends the operation.
#[derive(Debug)]
pub struct Pass<'a>(&'a Gate);

impl Gate {
    /// An open gate.
    pub fn new() -> Gate {
        Gate {
            closed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Mutex::new(()),
            idle_cv: Condvar::new(),
            generation: fork_generation(),
        }
    }

    /// Whether this process was forked after the gate was made.
    pub fn forked(&self) -> bool {
        FORK_GENERATION.load(Ordering::SeqCst) != self.generation
    }

    /// Lets an operation in, or refuses it with `Closed` (or, in a forked child, with a
    /// `Backend` error).
    pub fn enter(&self, op: Op) -> Result<Pass<'_>> {
        if self.forked() {
            return Err(forked_error(op));
        }
        // Count first, then look: `close` sets the flag first, then waits for the count,
        // so either it sees this operation or this operation sees the flag.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let pass = Pass(self);
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::Closed, op));
        }
        Ok(pass)
    }

    /// Whether the gate was closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Refuses new operations and waits until those in flight have finished (in a
    /// forked child: returns at once). Returns `true` for the first call, `false` when
    /// the gate was already closed.
    pub fn close(&self) -> bool {
        let first = !self.closed.swap(true, Ordering::SeqCst);
        if self.forked() {
            return first;
        }
        let mut guard = self.idle.lock();
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            self.idle_cv.wait(&mut guard);
        }
        first
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let gate = self.0;
        let before = gate.in_flight.fetch_sub(1, Ordering::SeqCst);
        if before == 1 && gate.closed.load(Ordering::SeqCst) {
            // Taking the mutex orders this wake-up after the closer's last check.
            let _guard = gate.idle.lock();
            gate.idle_cv.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn close_waits_for_operations_in_flight() {
        let gate = Arc::new(Gate::new());
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let g = gate.clone();
        let worker = std::thread::spawn(move || {
            let _pass = g.enter(Op::Read).unwrap();
            entered_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        });
        entered_rx.recv().unwrap();
        let g = gate.clone();
        let closer = std::thread::spawn(move || g.close());
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !closer.is_finished(),
            "close returned while an operation ran"
        );
        assert_eq!(
            gate.enter(Op::Read).err().map(|e| e.kind()),
            Some(ErrorKind::Closed)
        );
        release_tx.send(()).unwrap();
        worker.join().unwrap();
        assert!(closer.join().unwrap());
        assert!(!gate.close(), "second close reports it was already closed");
        assert!(gate.is_closed());
    }

    /// A child forked while a thread is inside the gate neither hangs in `close` nor
    /// runs operations.
    #[test]
    fn a_forked_child_neither_waits_nor_enters() {
        let gate = Arc::new(Gate::new());
        let pass = gate.enter(Op::Write).unwrap();
        // SAFETY: the child only touches the gate and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            unsafe { libc::alarm(5) };
            let refused = gate
                .enter(Op::Read)
                .is_err_and(|e| e.kind() == ErrorKind::Backend);
            let closed = gate.close();
            unsafe { libc::_exit(if refused && closed { 0 } else { 1 }) };
        }
        let mut status = 0;
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child hung or entered: status {status}"
        );
        assert!(!gate.forked());
        drop(pass);
        assert!(gate.close());
    }
}
