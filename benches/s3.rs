//! The shared workloads (`workloads/`) on `S3Store`, against the server the S3 tests use:
//! the one `BLOCKSTORE_S3_ENDPOINT` names (e.g. the Ceph RGW of `scripts/rgw.sh`; only
//! such a server gives meaningful figures), else a moto started for the run.
//!
//!   BLOCKSTORE_S3_ENDPOINT=http://127.0.0.1:7480 BLOCKSTORE_S3_ACCESS_KEY=test \
//!   BLOCKSTORE_S3_SECRET_KEY=testtesttest cargo bench --bench s3

#[path = "../tests/support/mod.rs"]
mod support;
mod workloads;

use blockstore::{BlockStore, S3Store};
use criterion::{criterion_group, criterion_main, Criterion};

fn shared(c: &mut Criterion) {
    let config = support::s3::config();
    let _cleanup = support::s3::Cleanup(config.clone());
    let store = S3Store::open(config).expect("open S3Store");
    store.health_check().expect("S3 server reachable");
    workloads::run_all(
        c,
        &workloads::Target {
            name: "s3",
            store: &store,
            loader: &store,
            load_threads: 16,
            samples: 10,
        },
    );
}

criterion_group!(benches, shared);
criterion_main!(benches);
