//! The open/closed state of a store: operations pass the gate, `close` shuts it and waits
//! for the ones already through.
//!
//! Passing costs two atomic operations and takes no lock, so it never serialises
//! operations on different keys; the mutex is only touched while closing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, ErrorKind, Result};

/// Counts operations in flight and refuses new ones once closed.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    closed: AtomicBool,
    in_flight: AtomicUsize,
    idle: Mutex<()>,
    idle_cv: Condvar,
}

/// Proof that an operation passed the gate; dropping it ends the operation.
pub(crate) struct Pass<'a>(&'a Gate);

impl Gate {
    /// Lets an operation in, or refuses it with `Closed`.
    pub(crate) fn enter(&self, op: &'static str) -> Result<Pass<'_>> {
        // Count first, then look: `close` sets the flag first, then waits for the count,
        // so either it sees this operation or this operation sees the flag.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let pass = Pass(self);
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::Closed, op));
        }
        Ok(pass)
    }

    /// Refuses new operations and waits until those in flight have finished. Returns
    /// `true` for the first call, `false` when the gate was already closed.
    pub(crate) fn close(&self) -> bool {
        let first = !self.closed.swap(true, Ordering::SeqCst);
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
        let gate = Arc::new(Gate::default());
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let g = gate.clone();
        let worker = std::thread::spawn(move || {
            let _pass = g.enter("read").unwrap();
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
            gate.enter("read").err().map(|e| e.kind()),
            Some(ErrorKind::Closed)
        );
        release_tx.send(()).unwrap();
        worker.join().unwrap();
        assert!(closer.join().unwrap());
        assert!(!gate.close(), "second close reports it was already closed");
    }
}
