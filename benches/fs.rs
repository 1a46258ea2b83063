//! FsStore against the bare system calls it is made of, in the same process:
//! - write 4 MiB, fsync on: temp file + write + fdatasync + rename + directory fsync;
//! - write 4 MiB, fsync off: temp file + write + rename;
//! - read 4 MiB: `std::fs::read`;
//! - range 4 KiB and 1 MiB at random offsets: open + pread + close.
//!
//! The ratio bare time / store time is the store's efficiency (1.0 = no overhead).
//! Then the shared workloads (`workloads/`) with fsync on.

mod workloads;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use blockstore::{BlockStore, FsConfig, FsStore, BLOCK_SIZE};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
}

/// The same steps the store takes for a durable write, done directly.
fn bare_write(dir: &Path, name: &str, data: &[u8], fsync: bool) {
    static N: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(".tmp-{}", N.fetch_add(1, Ordering::Relaxed)));
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .unwrap();
    f.write_all(data).unwrap();
    if fsync {
        f.sync_data().unwrap();
    }
    drop(f);
    std::fs::rename(&tmp, dir.join(name)).unwrap();
    if fsync {
        File::open(dir).unwrap().sync_all().unwrap();
    }
}

fn writes(c: &mut Criterion) {
    let block = data(BLOCK_SIZE);
    for fsync in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let bare_dir = dir.path().join("bare/chunk");
        std::fs::create_dir_all(&bare_dir).unwrap();
        let mut config = FsConfig::new(dir.path().join("store"));
        config.fsync = fsync;
        let store = FsStore::open(config).unwrap();
        let mut group = c.benchmark_group(format!(
            "fs_write_4MiB_fsync_{}",
            if fsync { "on" } else { "off" }
        ));
        group.throughput(Throughput::Bytes(BLOCK_SIZE as u64));
        group.sample_size(20);
        let mut i = 0u64;
        group.bench_function("store", |b| {
            b.iter(|| {
                i += 1;
                store
                    .write_block(&format!("chunk/block-{}", i % 8), &block)
                    .unwrap()
            })
        });
        group.bench_function("bare", |b| {
            b.iter(|| {
                i += 1;
                bare_write(&bare_dir, &format!("block-{}", i % 8), &block, fsync)
            })
        });
        group.finish();
    }
}

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(FsConfig::new(dir.path())).unwrap();
    let block = data(BLOCK_SIZE);
    store.write_block("r/block", &block).unwrap();
    let path = dir.path().join("r/block");

    let mut group = c.benchmark_group("fs_read_4MiB");
    group.throughput(Throughput::Bytes(BLOCK_SIZE as u64));
    group.bench_function("store", |b| b.iter(|| store.read_block("r/block").unwrap()));
    group.bench_function("bare", |b| b.iter(|| std::fs::read(&path).unwrap()));
    group.finish();

    for len in [4096usize, 1 << 20] {
        let mut group = c.benchmark_group("fs_range");
        group.throughput(Throughput::Bytes(len as u64));
        // Offsets that follow no pattern the page cache or a server could favour.
        let mut rng = fastrand::Rng::with_seed(0x1234_5678);
        let span = (BLOCK_SIZE - len) as u64;
        group.bench_function(BenchmarkId::new("store", len), |b| {
            b.iter(|| {
                let off = rng.u64(..span);
                store.read_block_range("r/block", off, len as u64).unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("bare", len), |b| {
            b.iter(|| {
                let off = rng.u64(..span);
                let f = File::open(&path).unwrap();
                let mut buf = vec![0u8; len];
                f.read_exact_at(&mut buf, off).unwrap();
                buf
            })
        });
        group.finish();
    }
}

fn shared(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(FsConfig::new(dir.path())).unwrap();
    // The listing population is written without fsync: set-up, not measured.
    let mut fast = FsConfig::new(dir.path());
    fast.fsync = false;
    let loader = FsStore::open(fast).unwrap();
    workloads::run_all(
        c,
        &workloads::Target {
            name: "fs",
            store: &store,
            loader: &loader,
            load_threads: 2,
            samples: 20,
        },
    );
}

criterion_group!(benches, writes, reads, shared);
criterion_main!(benches);
