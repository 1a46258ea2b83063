//! The workloads every backend is measured on, shared by the bench targets: write and
//! read of 4 KiB, 64 KiB, 1 MiB and 4 MiB blocks, range reads of 4 KiB and 1 MiB at
//! random offsets, `block_size`, and list and delete by prefix of 1,000 keys out of a
//! population of 100,000 (`BLOCKSTORE_BENCH_KEYS` sets another population, e.g. a
//! small one for a quick run).

#![allow(dead_code)]

pub mod checksums;

use std::time::Duration;

use blockstore::{BlockStore, BLOCK_SIZE};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};

/// The block sizes of the issue: 4 KiB, 64 KiB, 1 MiB, 4 MiB.
pub const SIZES: [usize; 4] = [4 << 10, 64 << 10, 1 << 20, BLOCK_SIZE];

/// Keys that match the listed or deleted prefix.
pub const MATCHES: usize = 1000;

/// Keys in the store while listing and deleting: 100,000 unless set.
pub fn population() -> usize {
    std::env::var("BLOCKSTORE_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
        .max(MATCHES)
}

/// Deterministic, incompressible-looking bytes.
pub fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes()[7])
        .collect()
}

/// `name` under group `share-{s}`: 1,000 keys per share.
fn listed_key(share: usize, file: usize) -> String {
    format!("pop/share-{share:03}/blk-{file:04}")
}

/// Writes the small blocks `keys` (the `i`-th is `key(i)`) with `threads` threads,
/// through `store` (which may be a faster twin of the measured store, e.g. without
/// fsync).
fn write_many(
    store: &(dyn BlockStore + Sync),
    keys: usize,
    threads: usize,
    key: &(dyn Fn(usize) -> String + Sync),
) {
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in (t..keys).step_by(threads) {
                    store.write_block(&key(i), b"b").expect("populate");
                }
            });
        }
    });
}

/// Fills the store with `keys` keys, 1,000 per share.
pub fn populate(store: &(dyn BlockStore + Sync), keys: usize, threads: usize) {
    let shares = keys.div_ceil(MATCHES);
    write_many(store, keys, threads, &|i| {
        listed_key(i / MATCHES % shares, i % MATCHES)
    });
}

/// Settings for one backend's run.
pub struct Target<'a> {
    /// The group name prefix, e.g. `fs` or `s3`.
    pub name: &'a str,
    /// The store measured.
    pub store: &'a (dyn BlockStore + Sync),
    /// The store used to set up the listing population (the same, or a faster twin).
    pub loader: &'a (dyn BlockStore + Sync),
    /// Threads that set up the population.
    pub load_threads: usize,
    /// Criterion samples per benchmark (fewer for slow backends).
    pub samples: usize,
}

/// Runs every workload on one backend.
pub fn run_all(c: &mut Criterion, t: &Target<'_>) {
    writes_and_reads(c, t);
    ranges(c, t);
    prefixes(c, t);
}

fn writes_and_reads(c: &mut Criterion, t: &Target<'_>) {
    let block = data(BLOCK_SIZE);
    let mut group = c.benchmark_group(format!("{}_write", t.name));
    group.sample_size(t.samples);
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut i = 0u64;
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            b.iter(|| {
                i += 1;
                let key = format!("w/{size}/block-{}", i % 8);
                t.store.write_block(&key, &block[..size]).expect("write")
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group(format!("{}_read", t.name));
    group.sample_size(t.samples);
    for size in SIZES {
        t.store
            .write_block(&format!("r/{size}"), &block[..size])
            .expect("seed");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            let key = format!("r/{size}");
            b.iter(|| {
                let got = t.store.read_block(&key).expect("read");
                assert_eq!(got.len(), size);
                got
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group(format!("{}_block_size", t.name));
    group.sample_size(t.samples);
    group.bench_function("4MiB", |b| {
        b.iter(|| {
            assert_eq!(
                t.store.block_size("r/4194304").expect("block_size"),
                BLOCK_SIZE as u64
            )
        })
    });
    group.finish();
}

fn ranges(c: &mut Criterion, t: &Target<'_>) {
    let key = "r/4194304";
    let mut group = c.benchmark_group(format!("{}_range", t.name));
    group.sample_size(t.samples);
    for len in [4usize << 10, 1 << 20] {
        let span = (BLOCK_SIZE - len) as u64;
        // Offsets that follow no pattern the page cache or a server could favour.
        let mut rng = fastrand::Rng::with_seed(0x1234_5678);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, &len| {
            b.iter(|| {
                let off = rng.u64(..span);
                let got = t
                    .store
                    .read_block_range(key, off, len as u64)
                    .expect("range");
                assert_eq!(got.len(), len);
                got
            })
        });
    }
    group.finish();
}

fn prefixes(c: &mut Criterion, t: &Target<'_>) {
    let keys = population();
    populate(t.loader, keys, t.load_threads);
    let shares = keys.div_ceil(MATCHES);
    let middle = shares / 2;
    let prefix = format!("pop/share-{middle:03}/");
    let label = format!("{MATCHES}_of_{keys}");

    let mut group = c.benchmark_group(format!("{}_prefix", t.name));
    group.sample_size(t.samples);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function(BenchmarkId::new("list", &label), |b| {
        b.iter(|| {
            let listed = t.store.list_by_prefix(&prefix).expect("list");
            assert_eq!(listed.len(), MATCHES);
            listed
        })
    });
    // Each deletion removes the middle share; the set-up (not timed) writes it back, so
    // the population stays the same.
    group.bench_function(BenchmarkId::new("delete", &label), |b| {
        b.iter_batched(
            || {
                write_many(t.loader, MATCHES, t.load_threads, &|f| {
                    listed_key(middle, f)
                })
            },
            |()| {
                assert_eq!(
                    t.store.delete_by_prefix(&prefix).expect("delete"),
                    MATCHES as u64
                )
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
    t.store.delete_by_prefix("pop/").expect("clean up");
}
