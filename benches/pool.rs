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

use blockstore::{BlockRef, BlockStore, FsConfig, FsStore, MemoryStore, Pool, PoolConfig, Result};
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
struct Sleepy(MemoryStore);

impl Sleepy {
    fn nap(&self) {
        thread::sleep(Duration::from_millis(5));
    }
}

impl BlockStore for Sleepy {
    fn write_block(&self, key: &str, data: &[u8]) -> Result<()> {
        self.nap();
        self.0.write_block(key, data)
    }
    fn read_block(&self, key: &str) -> Result<Vec<u8>> {
        self.nap();
        self.0.read_block(key)
    }
    fn read_block_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.nap();
        self.0.read_block_range(key, offset, length)
    }
    fn block_size(&self, key: &str) -> Result<u64> {
        self.nap();
        self.0.block_size(key)
    }
    fn delete_block(&self, key: &str) -> Result<()> {
        self.nap();
        self.0.delete_block(key)
    }
    fn delete_by_prefix(&self, prefix: &str) -> Result<u64> {
        self.nap();
        self.0.delete_by_prefix(prefix)
    }
    fn list_blocks(&self, prefix: &str) -> Result<Vec<BlockRef>> {
        self.nap();
        self.0.list_blocks(prefix)
    }
    fn health_check(&self) -> Result<()> {
        self.0.health_check()
    }
    fn close(&self) -> Result<()> {
        self.0.close()
    }
}

fn scaling(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_scaling_5ms");
    group.sample_size(10);
    for workers in [1usize, 4, 16, 64] {
        let pool = Pool::new(
            Arc::new(Sleepy(MemoryStore::new())),
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
                let batch: Vec<(String, Vec<u8>)> = (0..ops)
                    .map(|i| (format!("s/{i}"), vec![1u8; 64]))
                    .collect();
                let results = pool.write_blocks(batch);
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
