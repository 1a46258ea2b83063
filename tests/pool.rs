//! What the pool adds on top of the contract: batches, bounded in-flight work,
//! backpressure, handles, panics, closing, and a stress run over the filesystem.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use blockstore::backend::{Backend, Checked, Fields, MemoryBackend};
use blockstore::pool::{from_fn, Delete, Read, ReadRange, Wait, Write};
use blockstore::{
    BlockStore, Blocks, ErrorKind, FsConfig, FsStore, MemoryStore, Op, Pool, PoolConfig, Result,
};
use parking_lot::{Condvar, Mutex};

/// A memory backend that counts calls in flight, can hold every call until released,
/// and panics on keys containing `panic`; used behind the real `Checked` layer.
#[derive(Default)]
struct Probe {
    inner: MemoryBackend,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    calls: AtomicUsize,
    held: Mutex<bool>,
    released: Condvar,
    delay: Option<Duration>,
}

impl Probe {
    fn holding() -> Self {
        Probe {
            held: Mutex::new(true),
            ..Probe::default()
        }
    }

    fn release(&self) {
        *self.held.lock() = false;
        self.released.notify_all();
    }

    fn run<T>(&self, key: &str, op: impl FnOnce(&MemoryBackend) -> Result<T>) -> Result<T> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.calls.fetch_add(1, Ordering::SeqCst);
        {
            let mut held = self.held.lock();
            while *held {
                self.released.wait(&mut held);
            }
        }
        if let Some(d) = self.delay {
            std::thread::sleep(d);
        }
        let result = if key.contains("panic") {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            panic!("planted panic for {key}");
        } else {
            op(&self.inner)
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

impl Backend for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        self.run(key, |s| s.write(key, data))
    }
    fn read(&self, key: &str) -> Result<Vec<u8>> {
        self.run(key, |s| s.read(key))
    }
    fn read_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.run(key, |s| s.read_range(key, offset, length))
    }
    fn size(&self, key: &str) -> Result<u64> {
        self.run(key, |s| s.size(key))
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.run(key, |s| s.delete(key))
    }
    fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        self.run(prefix, |s| s.delete_prefix(prefix))
    }
    fn scan(&self, prefix: &str, start_after: Option<&str>, fields: Fields) -> Result<Blocks<'_>> {
        self.run(prefix, |_| Ok(()))?;
        self.inner.scan(prefix, start_after, fields)
    }
    fn health(&self) -> Result<()> {
        self.inner.health()
    }
    fn shut_down(&self) -> Result<()> {
        self.inner.shut_down()
    }
}

type Probed = Checked<Probe>;

fn probe(p: Probe) -> Arc<Probed> {
    Arc::new(Checked::from_backend(p))
}

fn pool(probe: &Arc<Probed>, workers: usize, queue_capacity: usize) -> Pool {
    Pool::new(
        probe.clone(),
        PoolConfig {
            workers,
            queue_capacity,
        },
    )
    .unwrap()
}

#[test]
fn zero_workers_or_queue_is_a_config_error() {
    let store: Arc<dyn BlockStore> = Arc::new(MemoryStore::new());
    for (workers, queue_capacity) in [(0, 1), (1, 0)] {
        let e = Pool::new(
            store.clone(),
            PoolConfig {
                workers,
                queue_capacity,
            },
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
    }
    assert_eq!(
        PoolConfig::default(),
        PoolConfig {
            workers: 16,
            queue_capacity: 256
        }
    );
}

#[test]
fn batches_keep_input_order_and_isolate_failures() {
    let probe = probe(Probe::default());
    let p = pool(&probe, 4, 4);
    let writes = (0..50).map(|i| {
        let key = match i {
            7 => "bad//key".to_string(),
            13 => "k/panic".to_string(),
            _ => format!("k/{i:02}"),
        };
        Write::new(key, vec![i as u8; i * 10])
    });
    let results = p.batch(writes).in_order();
    assert_eq!(results.len(), 50);
    for (i, r) in results.iter().enumerate() {
        match i {
            7 => assert_eq!(r.as_ref().unwrap_err().kind(), ErrorKind::InvalidKey),
            13 => {
                let e = r.as_ref().unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Backend);
                assert!(e.to_string().contains("panicked"), "{e}");
                assert!(
                    e.to_string().contains("planted panic for k/panic"),
                    "the panic's own message: {e}"
                );
            }
            _ => assert!(r.is_ok(), "write {i}: {r:?}"),
        }
    }
    let reads = p
        .batch((0..50).map(|i| Read {
            key: format!("k/{i:02}"),
        }))
        .in_order();
    assert_eq!(reads.len(), 50);
    for (i, r) in reads.iter().enumerate() {
        match i {
            7 | 13 => assert_eq!(r.as_ref().unwrap_err().kind(), ErrorKind::NotFound),
            _ => assert_eq!(r.as_ref().unwrap(), &vec![i as u8; i * 10], "read {i}"),
        }
    }
    let ranges = (1..50).map(|i| ReadRange {
        key: format!("k/{i:02}"),
        offset: 1,
        length: 3,
    });
    let ranged = p.batch(ranges).in_order();
    assert_eq!(ranged.len(), 49);
    for (j, r) in ranged.iter().enumerate() {
        let i = j + 1;
        match i {
            7 | 13 => assert_eq!(r.as_ref().unwrap_err().kind(), ErrorKind::NotFound),
            _ => assert_eq!(r.as_ref().unwrap(), &vec![i as u8; 3], "range {i}"),
        }
    }
    let deletes = p
        .batch(["k/00", "a//b", "k/01"].map(|k| Delete { key: k.into() }))
        .in_order();
    assert_eq!(deletes.len(), 3);
    assert!(deletes[0].is_ok() && deletes[2].is_ok());
    assert_eq!(
        deletes[1].as_ref().unwrap_err().kind(),
        ErrorKind::InvalidKey
    );
    // The worker that ran the panicking call still serves.
    assert_eq!(p.config().workers, 4);
    assert_eq!(p.read_block("k/02").unwrap(), vec![2u8; 20]);
}

#[test]
fn streaming_batches_keep_at_most_workers_in_flight() {
    let probe = probe(Probe::default());
    let p = pool(&probe, 6, 2);
    let mut seen = vec![false; 10_000];
    let writes = (0..10_000).map(|i| Write::new(format!("s/{i}"), vec![1u8; 16]));
    for (delivered, (i, r)) in p.batch(writes).enumerate() {
        let delivered = delivered as u64;
        r.unwrap();
        assert!(!seen[i], "result {i} delivered twice");
        seen[i] = true;
        // Submitted but not yet handed to the caller: never more than the workers.
        let s = p.stats();
        let submitted = s.done + s.failed + s.queued + s.running + s.cancelled;
        assert!(
            submitted - delivered <= 6,
            "{} jobs outstanding after {delivered} results",
            submitted - delivered
        );
    }
    assert!(seen.iter().all(|s| *s));
    let mut reads = 0;
    for (_, r) in p.batch((0..10_000).map(|i| Read {
        key: format!("s/{i}"),
    })) {
        assert_eq!(r.unwrap().len(), 16);
        reads += 1;
    }
    assert_eq!(reads, 10_000);
    let mut ranged = vec![false; 1000];
    let ranges = (0..1000).map(|i| ReadRange {
        key: format!("s/{i}"),
        offset: 2,
        length: 4,
    });
    for (i, r) in p.batch(ranges) {
        assert_eq!(r.unwrap(), vec![1u8; 4]);
        ranged[i] = true;
    }
    assert!(ranged.iter().all(|r| *r));
    let mut deleted = vec![false; 1000];
    for (i, r) in p.batch((0..1000).map(|i| Delete {
        key: format!("s/{i}"),
    })) {
        r.unwrap();
        deleted[i] = true;
    }
    assert!(deleted.iter().all(|d| *d));
    assert_eq!(p.read_block("s/0").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(p.read_block("s/1000").unwrap().len(), 16);
    assert_eq!(probe.backend().calls.load(Ordering::SeqCst), 22_002);
    let max = probe.backend().max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 6, "{max} operations in flight with 6 workers");
    assert!(max >= 2, "the batch never ran concurrently (max {max})");
}

#[test]
fn many_callers_over_capacity_do_not_deadlock() {
    let probe = probe(Probe::default());
    let p = Arc::new(pool(&probe, 3, 2));
    let start = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (p, start) = (p.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let writes = (0..200).map(|i| Write::new(format!("c/{t}/{i}"), vec![t as u8; 8]));
                assert!(p.batch(writes).in_order().iter().all(|r| r.is_ok()));
                // Single jobs beyond the queue's capacity, all pending at once.
                let handles: Vec<_> = (0..20)
                    .map(|i| {
                        p.submit(Read {
                            key: format!("c/{t}/{i}"),
                        })
                        .unwrap()
                    })
                    .collect();
                for h in handles {
                    assert_eq!(h.wait().unwrap(), vec![t as u8; 8]);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(p.list_by_prefix("c/").unwrap().len(), 1600);
}

#[test]
fn backpressure_blocks_then_busy_then_closed() {
    let probe = probe(Probe::holding());
    let p = Arc::new(pool(&probe, 1, 2));
    // One job runs (held), two fill the queue.
    let running = p.submit(Write::new("b/0", vec![0])).unwrap();
    while probe.backend().in_flight.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    let queued: Vec<_> = (1..3)
        .map(|i| p.submit(Write::new(format!("b/{i}"), vec![0])).unwrap())
        .collect();
    let e = p.try_submit(Write::new("b/x", vec![0])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy);
    assert!(e.is_retryable());
    assert_eq!(
        p.try_submit(from_fn(|_| Ok(()))).unwrap_err().kind(),
        ErrorKind::Busy
    );
    // A blocking submitter waits…
    let blocked = {
        let p = p.clone();
        std::thread::spawn(move || {
            p.submit(Write::new("b/blocked", vec![0]))
                .map(|h| h.detach())
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !blocked.is_finished(),
        "a submitter to a full queue must block"
    );
    let stats = p.stats();
    assert_eq!((stats.running, stats.queued), (1, 2), "{stats:?}");
    // …until close, which gives it Closed; queued jobs still finish.
    let closer = {
        let p = p.clone();
        std::thread::spawn(move || p.close())
    };
    let result = blocked.join().unwrap();
    assert_eq!(result.unwrap_err().kind(), ErrorKind::Closed);
    probe.backend().release();
    closer.join().unwrap().unwrap();
    running.wait().unwrap();
    for h in queued {
        h.wait().unwrap();
    }
    assert_eq!(
        p.submit(Write::new("b/late", vec![])).unwrap_err().kind(),
        ErrorKind::Closed
    );
    assert_eq!(p.read_block("b/0").unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(
        probe.read_block("b/0").unwrap_err().kind(),
        ErrorKind::Closed,
        "inner store closed too"
    );
}

#[test]
fn cancel_is_explicit_wait_timeout_keeps_place_dropped_and_detached_run() {
    let probe = probe(Probe::holding());
    let p = pool(&probe, 1, 8);
    let first = p.submit(Write::new("h/first", b"1".to_vec())).unwrap();
    while probe.backend().in_flight.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    let cancelled = p.submit(Write::new("h/cancelled", b"2".to_vec())).unwrap();
    let detached = p.submit(Write::new("h/detached", b"3".to_vec())).unwrap();
    let timed = p
        .submit(Read {
            key: "h/first".into(),
        })
        .unwrap();
    let dropped = p.submit(Write::new("h/dropped", b"4".to_vec())).unwrap();
    assert!(cancelled.cancel(), "a queued job can be cancelled");
    assert!(!cancelled.cancel(), "only once");
    assert_eq!(cancelled.wait().unwrap_err().kind(), ErrorKind::Closed);
    // Dropping a handle is not cancelling: the write still happens.
    drop(dropped);
    detached.detach();
    let timed = match timed.wait_timeout(Duration::from_millis(50)) {
        Wait::Pending(h) => h,
        Wait::Done(r) => panic!("finished while the store is held: {r:?}"),
    };
    assert!(!first.is_done());
    let first = match first.poll() {
        Wait::Pending(h) => h,
        Wait::Done(r) => panic!("{r:?}"),
    };
    probe.backend().release();
    first.wait().unwrap();
    match timed.wait_timeout(Duration::from_secs(10)) {
        Wait::Done(r) => assert_eq!(r.unwrap(), b"1"),
        Wait::Pending(_) => panic!("job lost its place after a timeout"),
    }
    let finished = p
        .submit(Read {
            key: "h/first".into(),
        })
        .unwrap();
    while !finished.is_done() {
        std::thread::yield_now();
    }
    assert!(!finished.cancel(), "a finished job stays finished");
    assert_eq!(finished.wait().unwrap(), b"1");
    assert_eq!(
        p.list_by_prefix("h/").unwrap(),
        ["h/detached", "h/dropped", "h/first"]
    );
    p.close().unwrap();
    assert_eq!(
        probe.list_by_prefix("h/").unwrap_err().kind(),
        ErrorKind::Closed
    );
    let stats = p.stats();
    assert_eq!(stats.cancelled, 1, "{stats:?}");
    assert_eq!(stats.done, 6, "{stats:?}");
    assert_eq!((stats.queued, stats.running), (0, 0), "{stats:?}");
}

/// A job that finishes within `wait_timeout` is returned as done; `is_done` turns true
/// once it has finished; a panic with a plain string message keeps that message.
#[test]
fn wait_timeout_returns_a_job_that_finishes_in_time() {
    let probe = probe(Probe {
        delay: Some(Duration::from_millis(100)),
        ..Probe::default()
    });
    let p = pool(&probe, 2, 8);
    p.write_block("t/k", b"v").unwrap();
    let slow = p.submit(Read { key: "t/k".into() }).unwrap();
    match slow.wait_timeout(Duration::from_secs(10)) {
        Wait::Done(r) => assert_eq!(r.unwrap(), b"v"),
        Wait::Pending(_) => panic!("gave up long before the timeout"),
    }
    let h = p.submit(Read { key: "t/k".into() }).unwrap();
    let started = std::time::Instant::now();
    while !h.is_done() {
        assert!(started.elapsed() < Duration::from_secs(10), "never done");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(h.wait().unwrap(), b"v");
    let e = p
        .submit(from_fn(|_| -> Result<()> { panic!("a plain message") }))
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(e.to_string().contains("a plain message"), "{e}");
}

#[test]
fn close_with_jobs_queued_and_running_and_from_two_threads() {
    let probe = probe(Probe {
        delay: Some(Duration::from_millis(5)),
        ..Probe::default()
    });
    let p = Arc::new(pool(&probe, 2, 64));
    let handles: Vec<_> = (0..40)
        .map(|i| p.submit(Write::new(format!("q/{i}"), vec![1])).unwrap())
        .collect();
    let closers: Vec<_> = (0..2)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || p.close())
        })
        .collect();
    for c in closers {
        c.join().unwrap().unwrap();
    }
    for h in handles {
        h.wait().expect("queued jobs finish before close returns");
    }
    assert_eq!(probe.backend().calls.load(Ordering::SeqCst), 40);
    p.close().unwrap();
}

#[test]
fn drop_without_close_finishes_and_joins() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::open(FsConfig::new(dir.path())).unwrap());
    let p = Pool::new(
        store.clone(),
        PoolConfig {
            workers: 4,
            queue_capacity: 4,
        },
    )
    .unwrap();
    for i in 0..20 {
        p.submit(Write::new(format!("d/{i}"), vec![i as u8; 100]))
            .unwrap()
            .detach();
    }
    drop(p);
    assert_eq!(
        store.read_block("d/0").unwrap_err().kind(),
        ErrorKind::Closed,
        "drop closes the inner store"
    );
    let reopened = FsStore::open(FsConfig::new(dir.path())).unwrap();
    assert_eq!(
        reopened.list_by_prefix("d/").unwrap().len(),
        20,
        "detached jobs ran before drop returned"
    );
}

#[test]
fn stats_count_jobs_and_latency() {
    let probe = probe(Probe::default());
    let p = pool(&probe, 2, 8);
    for i in 0..10 {
        p.write_block(&format!("st/{i}"), b"x").unwrap();
    }
    assert_eq!(
        p.read_block("st/missing").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let stats = p.stats();
    assert_eq!(
        (stats.done, stats.failed, stats.queued, stats.running),
        (10, 1, 0, 0),
        "{stats:?}"
    );
    let write = stats.ops.iter().find(|o| o.op == Op::Write).unwrap();
    assert_eq!(write.count, 10);
    assert!(write.p50 <= write.p99 && write.p99 <= write.max && write.mean <= write.max);
}

/// A collecting batch runs its operations side by side, not one after another.
#[test]
fn collecting_batches_run_concurrently() {
    let probe = probe(Probe {
        delay: Some(Duration::from_millis(20)),
        ..Probe::default()
    });
    let p = pool(&probe, 4, 4);
    let writes = (0..8).map(|i| Write::new(format!("c/{i}"), vec![1]));
    assert!(p.batch(writes).in_order().iter().all(|r| r.is_ok()));
    let max = probe.backend().max_in_flight.load(Ordering::SeqCst);
    assert!((2..=4).contains(&max), "{max} in flight with 4 workers");
}
