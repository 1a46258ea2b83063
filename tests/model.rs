//! Model-based property tests: random operation sequences over colliding keys, applied
//! to the reference model and to each backend, must give identical outcomes, error
//! kinds included. `BLOCKSTORE_PROPTEST_CASES` raises the number of sequences.

mod support;

use std::sync::Arc;

use blockstore::{BlockStore, FsConfig, FsStore, MemoryStore, Pool, PoolConfig};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use support::model::{apply_store, strategy, Model, Op};

fn cases(default: u32) -> u32 {
    std::env::var("BLOCKSTORE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs generated sequences against fresh stores from `make`.
fn check(
    cases: u32,
    max_len: usize,
    hierarchical: bool,
    make: impl Fn() -> (Arc<dyn BlockStore>, Box<dyn std::any::Any>),
) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(
        &proptest::collection::vec(strategy::op(), 1..max_len),
        |ops: Vec<Op>| {
            let (store, _guard) = make();
            let mut model = Model::new(hierarchical);
            for (i, op) in ops.iter().enumerate() {
                let got = apply_store(&*store, &model, op);
                let want = model.apply(op);
                if got != want {
                    return Err(TestCaseError::fail(format!(
                        "step {i}: {op:?}: store gave {got:?}, model {want:?}"
                    )));
                }
            }
            let _ = store.close();
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn memory_matches_the_model() {
    check(cases(256), 60, false, || {
        (Arc::new(MemoryStore::new()), Box::new(()))
    });
}

#[test]
fn filesystem_matches_the_hierarchical_model() {
    check(cases(128), 60, true, || {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(FsConfig::new(dir.path())).unwrap();
        (Arc::new(store), Box::new(dir))
    });
}

#[test]
fn pool_over_filesystem_matches_the_hierarchical_model() {
    check(cases(64), 60, true, || {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(FsConfig::new(dir.path())).unwrap();
        let pool = Pool::new(
            Arc::new(store),
            PoolConfig {
                workers: 3,
                queue_capacity: 4,
            },
        )
        .unwrap();
        (Arc::new(pool), Box::new(dir))
    });
}

#[cfg(feature = "s3")]
#[test]
fn s3_matches_the_model() {
    check(cases(12).min(24), 30, false, || {
        let config = support::s3::config();
        let store = blockstore::S3Store::open(config.clone()).unwrap();
        (Arc::new(store), Box::new(support::s3::Cleanup(config)))
    });
}
