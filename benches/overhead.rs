//! What instrumentation costs when nobody listens: the memory store's 4 KiB read, the
//! cheapest call there is. `scripts/overhead.sh` builds this bench with and without the
//! `tracing` feature in one run and prints the ratio.

use blockstore::{BlockStore, MemoryStore};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn read_4kib(c: &mut Criterion) {
    let store = MemoryStore::new();
    let block = vec![7u8; 4096];
    store.write_block("m/block", &block).unwrap();
    let mut group = c.benchmark_group("memory_4KiB");
    group.throughput(Throughput::Bytes(block.len() as u64));
    group.bench_function("read", |b| b.iter(|| store.read_block("m/block").unwrap()));
    group.bench_function("bare_copy", |b| b.iter(|| block.to_vec()));
    group.finish();
}

criterion_group!(benches, read_4kib);
criterion_main!(benches);
