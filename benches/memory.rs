//! MemoryStore against one `memcpy` of the same data, prefix listing in a large map, and
//! the shared workloads (`workloads/`).

mod workloads;

use blockstore::{BlockStore, MemoryStore, BLOCK_SIZE};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn copies(c: &mut Criterion) {
    let store = MemoryStore::new();
    let block = vec![5u8; BLOCK_SIZE];
    store.write_block("m/block", &block).unwrap();
    let mut group = c.benchmark_group("memory_4MiB");
    group.throughput(Throughput::Bytes(BLOCK_SIZE as u64));
    group.bench_function("write", |b| {
        b.iter(|| store.write_block("m/block", &block).unwrap())
    });
    group.bench_function("read", |b| b.iter(|| store.read_block("m/block").unwrap()));
    group.bench_function("bare_memcpy", |b| b.iter(|| block.to_vec()));
    group.finish();
}

fn listing(c: &mut Criterion) {
    let store = MemoryStore::new();
    // 1,000,000 keys, 1,000 of which share the prefix `share-0500/`.
    for s in 0..1000 {
        for f in 0..1000 {
            store
                .write_block(&format!("share-{s:04}/file-{f:04}"), b"")
                .unwrap();
        }
    }
    let mut group = c.benchmark_group("memory_list");
    group.bench_function("1000_of_1000000", |b| {
        b.iter(|| {
            let keys = store.list_by_prefix("share-0500/").unwrap();
            assert_eq!(keys.len(), 1000);
            keys
        })
    });
    group.finish();
}

fn shared(c: &mut Criterion) {
    let store = MemoryStore::new();
    workloads::run_all(
        c,
        &workloads::Target {
            name: "memory",
            store: &store,
            loader: &store,
            load_threads: 1,
            samples: 50,
        },
    );
}

criterion_group!(benches, copies, listing, shared);
criterion_main!(benches);
