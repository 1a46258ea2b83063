//! The pool's cost and scaling:
//! - latency one call through the pool adds over calling the memory store directly,
//!   next to a bare crossbeam-channel round trip to a worker thread;
//! - throughput with 1, 4, 16 and 64 workers over a store whose every call sleeps 5 ms
//!   (linear scaling: a batch of 4 × workers calls takes 20 ms);
//! - the shared workloads (`workloads/`) through a 16-worker pool over `FsStore`.

mod workloads;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use blockstore::backend::{Backend, Checked, Fields, MemoryBackend};
use blockstore::pool::Write;
use blockstore::{BlockStore, Blocks, FsConfig, FsStore, MemoryStore, Pool, PoolConfig, Result};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_channel::{bounded, Sender};

fn latency(c: &mut Criterion) {
    let memory = Arc::new(MemoryStore::new());
    memory.write_block("k", b"small block").unwrap();
    let pool = Pool::new(
        memory.clone(),
        PoolConfig {
            workers: 1,
            queue_capacity: 16,
        },
    )
    .unwrap();

    type Task = Box<dyn FnOnce() + Send>;
    let (jobs, rx) = bounded::<Task>(16);
    let worker = thread::spawn(move || {
        while let Ok(task) = rx.recv() {
            task();
        }
    });

    let mut group = c.benchmark_group("pool_latency");
    group.bench_function("direct", |b| b.iter(|| memory.read_block("k").unwrap()));
    group.bench_function("pool", |b| b.iter(|| pool.read_block("k").unwrap()));
    group.bench_function("crossbeam_round_trip", |b| {
        b.iter(|| {
            let (tx, reply) = bounded::<u64>(1);
            jobs.send(Box::new(move || tx.send(42).unwrap())).unwrap();
            reply.recv().unwrap()
        })
    });
    group.finish();
    drop::<Sender<Task>>(jobs);
    worker.join().unwrap();
}

/// Every call takes 5 ms, as a slow remote store would.
#[derive(Default)]
struct Sleepy(MemoryBackend);

impl Sleepy {
    fn nap(&self) {
        thread::sleep(Duration::from_millis(5));
    }
}

impl Backend for Sleepy {
    fn name(&self) -> &'static str {
        "sleepy"
    }
    fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        self.nap();
        self.0.write(key, data)
    }
    fn read(&self, key: &str) -> Result<Vec<u8>> {
        self.nap();
        self.0.read(key)
    }
    fn read_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.nap();
        self.0.read_range(key, offset, length)
    }
    fn size(&self, key: &str) -> Result<u64> {
        self.nap();
        self.0.size(key)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.nap();
        self.0.delete(key)
    }
    fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        self.nap();
        self.0.delete_prefix(prefix)
    }
    fn scan(&self, prefix: &str, start_after: Option<&str>, fields: Fields) -> Result<Blocks<'_>> {
        self.nap();
        self.0.scan(prefix, start_after, fields)
    }
    fn health(&self) -> Result<()> {
        self.0.health()
    }
}

fn scaling(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_scaling_5ms");
    group.sample_size(10);
    for workers in [1usize, 4, 16, 64] {
        let pool = Pool::new(
            Arc::new(Checked::from_backend(Sleepy::default())),
            PoolConfig {
                workers,
                queue_capacity: 256,
            },
        )
        .unwrap();
        let ops = 4 * workers;
        group.throughput(Throughput::Elements(ops as u64));
        group.bench_function(BenchmarkId::from_parameter(workers), |b| {
            b.iter(|| {
                let batch = (0..ops).map(|i| Write::new(format!("s/{i}"), vec![1u8; 64]));
                let results = pool.batch(batch).in_order();
                assert!(results.iter().all(|r| r.is_ok()));
            })
        });
    }
    group.finish();
}

fn shared(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(FsStore::open(FsConfig::new(dir.path())).unwrap());
    let pool = Pool::new(
        fs,
        PoolConfig {
            workers: 16,
            queue_capacity: 256,
        },
    )
    .unwrap();
    let mut fast = FsConfig::new(dir.path());
    fast.fsync = false;
    let loader = FsStore::open(fast).unwrap();
    workloads::run_all(
        c,
        &workloads::Target {
            name: "pool_fs",
            store: &pool,
            loader: &loader,
            load_threads: 2,
            samples: 20,
        },
    );
}

criterion_group!(benches, latency, scaling, shared);
criterion_main!(benches);
