//! What checksums cost: each case runs with `checksums = "crc32c"` and with `"off"`,
//! side by side in one run, so the ratio off/on is the share of speed checksums keep.
//! - filesystem: 4 MiB writes (fsync on and off), 4 MiB reads from the page cache,
//!   4 KiB range reads at random offsets and at page-aligned ones;
//! - S3 (the server `BLOCKSTORE_S3_ENDPOINT` names, e.g. RGW; else moto): 4 MiB PUT
//!   and GET.
//!
//! Calls are paired: each timed call of one mode follows an untimed call of the other
//! (for reads, of the same block and range), so what drifts during a run (dirty pages
//! waiting for writeback, the server's load, the CPU's caches) weighs on both alike.
//! Ratios: `scripts/checksum-ratios.sh` reads them from criterion's estimates (medians).

#[path = "../tests/support/mod.rs"]
mod support;
mod workloads;

use blockstore::{BlockStore, Checksums, S3Store, BLOCK_SIZE};
use std::time::{Duration, Instant};
use workloads::checksums::{data, fs_stores, MODES};

use criterion::{
    criterion_group, criterion_main, measurement::WallTime, BenchmarkGroup, BenchmarkId, Criterion,
    Throughput,
};

/// Times `call(mode, i)` for each mode, each timed call right after an untimed call of
/// the other mode.
fn paired(group: &mut BenchmarkGroup<'_, WallTime>, mut call: impl FnMut(usize, u64)) {
    let mut i = 0u64;
    for (timed, mode) in MODES.iter().enumerate() {
        group.bench_function(BenchmarkId::from_parameter(mode.as_str()), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    i += 1;
                    call(1 - timed, i);
                    let start = Instant::now();
                    call(timed, i);
                    spent += start.elapsed();
                }
                spent
            })
        });
    }
}

fn filesystem(c: &mut Criterion) {
    let block = data(BLOCK_SIZE);
    for fsync in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let stores = fs_stores(dir.path(), fsync);
        let mut group = c.benchmark_group(format!(
            "checksums_fs_write_4MiB_fsync_{}",
            if fsync { "on" } else { "off" }
        ));
        group.throughput(Throughput::Bytes(BLOCK_SIZE as u64));
        group.sample_size(20);
        paired(&mut group, |mode, i| {
            stores[mode]
                .1
                .write_block(&format!("w/chunk-0/block-{}", i % 64), &block)
                .unwrap()
        });
        group.finish();
    }

    let dir = tempfile::tempdir().unwrap();
    let stores = fs_stores(dir.path(), false);
    for (_, store) in &stores {
        for i in 0..16 {
            store
                .write_block(&format!("r/chunk-0/block-{i}"), &block)
                .unwrap();
        }
        // Into the page cache before timing.
        for i in 0..16 {
            store.read_block(&format!("r/chunk-0/block-{i}")).unwrap();
        }
    }
    let mut group = c.benchmark_group("checksums_fs_read_4MiB");
    group.throughput(Throughput::Bytes(BLOCK_SIZE as u64));
    paired(&mut group, |mode, i| {
        stores[mode]
            .1
            .read_block(&format!("r/chunk-0/block-{}", i % 16))
            .unwrap();
    });
    group.finish();

    // Random offsets, mostly not aligned to pages or chunks; the same ones in each mode.
    let mut group = c.benchmark_group("checksums_fs_range_4KiB");
    group.throughput(Throughput::Bytes(4096));
    let mut buf = vec![0u8; 4096];
    paired(&mut group, |mode, i| {
        let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
        let offset = x % (BLOCK_SIZE as u64 - 4096);
        stores[mode]
            .1
            .read_block_range_into(&format!("r/chunk-0/block-{}", x % 16), offset, &mut buf)
            .unwrap();
    });
    group.finish();

    // Page-aligned offsets, as a kernel's page cache asks (FUSE, NFS).
    let mut group = c.benchmark_group("checksums_fs_range_4KiB_aligned");
    group.throughput(Throughput::Bytes(4096));
    paired(&mut group, |mode, i| {
        let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
        let offset = (x % (BLOCK_SIZE as u64 / 4096)) * 4096;
        stores[mode]
            .1
            .read_block_range_into(&format!("r/chunk-0/block-{}", x % 16), offset, &mut buf)
            .unwrap();
    });
    group.finish();
}

fn s3(c: &mut Criterion) {
    let block = data(BLOCK_SIZE);
    let base = support::s3::config();
    let _cleanup = support::s3::Cleanup(base.clone());
    let stores: Vec<(Checksums, S3Store)> = MODES
        .iter()
        .map(|&mode| {
            let mut config = base.clone();
            config.checksums = mode;
            (mode, S3Store::open(config).unwrap())
        })
        .collect();
    let mut group = c.benchmark_group("checksums_s3_put_4MiB");
    group.throughput(Throughput::Bytes(BLOCK_SIZE as u64));
    group.sample_size(10);
    paired(&mut group, |mode, i| {
        let (mode, store) = &stores[mode];
        store
            .write_block(
                &format!("{}/chunk-0/block-{}", mode.as_str(), i % 8),
                &block,
            )
            .unwrap()
    });
    group.finish();
    let mut group = c.benchmark_group("checksums_s3_get_4MiB");
    group.throughput(Throughput::Bytes(BLOCK_SIZE as u64));
    group.sample_size(10);
    for (mode, store) in &stores {
        store
            .write_block(&format!("{}/get", mode.as_str()), &block)
            .unwrap();
    }
    paired(&mut group, |mode, _| {
        let (mode, store) = &stores[mode];
        store.read_block(&format!("{}/get", mode.as_str())).unwrap();
    });
    group.finish();
}

criterion_group!(benches, filesystem, s3);
criterion_main!(benches);
