//! [`Batch`]: many jobs side by side, with a bounded number in flight.

use std::collections::VecDeque;

use crossbeam_channel::{unbounded, Receiver, Sender};

use crate::error::{Error, ErrorKind, Result};

use super::job::Job;
use super::queue::{self, Admit, Task};
use super::Pool;

/// The jobs of one [`Pool::batch`], run side by side: an iterator of
/// `(input index, result)` pairs in the order the jobs complete. It queues a job only
/// while fewer than its window (the pool's `workers` unless set) are in flight, so a
/// batch of any size holds at most that many results, and blocks, at once. A job that
/// cannot be queued (a closed pool) yields its error like any other result.
///
/// Dropping a batch lets the jobs in flight finish and queues no more.
pub struct Batch<'p, J: Job, I> {
    pool: &'p Pool,
    jobs: std::iter::Enumerate<I>,
    window: usize,
    in_flight: usize,
    tx: Sender<(usize, Result<J::Output>)>,
    rx: Receiver<(usize, Result<J::Output>)>,
    refused: VecDeque<(usize, Result<J::Output>)>,
}

impl<'p, J: Job, I: Iterator<Item = J>> Batch<'p, J, I> {
    pub(crate) fn new(pool: &'p Pool, jobs: I, window: usize) -> Self {
        let (tx, rx) = unbounded();
        Batch {
            pool,
            jobs: jobs.enumerate(),
            window: window.max(1),
            in_flight: 0,
            tx,
            rx,
            refused: VecDeque::new(),
        }
    }

    /// At most `window` jobs in flight (at least 1).
    pub fn window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }

    /// Runs every job and returns one result per input, in input order. The window
    /// grows to fill the queue too, since every result is kept anyway.
    pub fn in_order(mut self) -> Vec<Result<J::Output>> {
        let config = self.pool.config();
        self.window = self.window.max(config.workers + config.queue_capacity);
        let mut results: Vec<Option<Result<J::Output>>> = Vec::new();
        for (i, result) in self.by_ref() {
            if results.len() <= i {
                results.resize_with(i + 1, || None);
            }
            results[i] = Some(result);
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::new(ErrorKind::Backend, crate::op::Op::Job)
                        .with_detail("the batch lost a result"))
                })
            })
            .collect()
    }

    /// Queues the next jobs until the window is full or the jobs run out.
    fn fill(&mut self) {
        while self.in_flight < self.window {
            let Some((i, job)) = self.jobs.next() else {
                return;
            };
            let op = job.op();
            let key = job.key().map(str::to_owned);
            let tx = self.tx.clone();
            let queued_at = std::time::Instant::now();
            let task: Task = Box::new(move |store, counters| {
                let result = queue::run(job, queued_at, store, counters);
                let _ = tx.send((i, result));
            });
            match self.pool.enqueue(op, key.as_deref(), task, Admit::Wait) {
                Ok(()) => self.in_flight += 1,
                Err(e) => self.refused.push_back((i, Err(e))),
            }
        }
    }
}

impl<J: Job, I: Iterator<Item = J>> Iterator for Batch<'_, J, I> {
    type Item = (usize, Result<J::Output>);

    fn next(&mut self) -> Option<Self::Item> {
        self.fill();
        if let Some(refused) = self.refused.pop_front() {
            return Some(refused);
        }
        if self.in_flight == 0 {
            return None;
        }
        let done = self.rx.recv().ok()?;
        self.in_flight -= 1;
        Some(done)
    }
}
