//! The metrics a store records (feature `metrics`), counted exactly by the metrics
//! crate's debugging recorder after a known sequence of calls on each backend, through
//! the pool, and on S3 behind the fault proxy (attempts, retries by cause, throttling).
//! One test: the recorder is global to the process.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use blockstore::{BlockStore, FsConfig, FsStore, MemoryStore, Pool, PoolConfig};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;

/// The metrics since the last snapshot: `name{label=value,...}` → value (counters and
/// gauges as numbers, histograms as how many values they got).
fn take(snapshotter: &Snapshotter) -> HashMap<String, f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let mut labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.key().name(), labels.join(","));
            let value = match (key.kind(), value) {
                (MetricKind::Counter, DebugValue::Counter(n)) => n as f64,
                (MetricKind::Gauge, DebugValue::Gauge(g)) => g.into_inner(),
                (MetricKind::Histogram, DebugValue::Histogram(h)) => h.len() as f64,
                (kind, value) => panic!("{name}: {kind:?} {value:?}"),
            };
            (name, value)
        })
        .collect()
}

fn get(m: &HashMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

/// Three writes of 10 bytes, a read of one, a read of a missing block, a prefix delete.
fn sequence(store: &dyn BlockStore) {
    for i in 0..3 {
        store
            .write_block(&format!("m/{i}"), &[i as u8; 10])
            .unwrap();
    }
    store.read_block("m/0").unwrap();
    store.read_block("m/missing").unwrap_err();
    assert_eq!(store.delete_by_prefix("m/").unwrap(), 3);
}

fn check_sequence(m: &HashMap<String, f64>, backend: &str) {
    let at = |name: &str, labels: &str| get(m, &format!("{name}{{backend={backend},{labels}}}"));
    assert_eq!(at("blockstore_calls_total", "op=write"), 3.0, "{m:?}");
    assert_eq!(at("blockstore_calls_total", "op=read"), 2.0, "{m:?}");
    assert_eq!(at("blockstore_calls_total", "op=delete_prefix"), 1.0);
    assert_eq!(
        at("blockstore_errors_total", "kind=not_found,op=read"),
        1.0,
        "{m:?}"
    );
    assert_eq!(at("blockstore_bytes_written_total", "op=write"), 30.0);
    assert_eq!(at("blockstore_bytes_read_total", "op=read"), 10.0);
    assert_eq!(
        at("blockstore_call_seconds", "op=write"),
        3.0,
        "three timed writes"
    );
    assert_eq!(at("blockstore_call_seconds", "op=read"), 2.0);
    for op in ["write", "read", "delete_prefix"] {
        assert_eq!(at("blockstore_in_flight", &format!("op={op}")), 0.0, "{op}");
    }
}

#[test]
fn every_backend_and_the_pool_count_exactly() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    sequence(&MemoryStore::new());
    check_sequence(&take(&snapshotter), "memory");

    let dir = tempfile::tempdir().unwrap();
    sequence(&FsStore::open(FsConfig::new(dir.path())).unwrap());
    check_sequence(&take(&snapshotter), "filesystem");

    let pool = Pool::new(
        Arc::new(MemoryStore::new()),
        PoolConfig {
            workers: 2,
            queue_capacity: 8,
        },
    )
    .unwrap();
    sequence(&pool);
    let m = take(&snapshotter);
    check_sequence(&m, "memory");
    // Six jobs on the workers (the delete is one job), each timed in the queue.
    assert_eq!(get(&m, "blockstore_pool_wait_seconds{}"), 6.0, "{m:?}");
    assert_eq!(get(&m, "blockstore_pool_running{}"), 0.0);
    assert_eq!(get(&m, "blockstore_pool_queued{}"), 0.0);
    assert_eq!(
        get(&m, "blockstore_calls_total{backend=pool,op=write}"),
        3.0
    );
    assert_eq!(
        get(&m, "blockstore_bytes_written_total{backend=pool,op=write}"),
        30.0,
        "{m:?}"
    );
    assert_eq!(
        get(&m, "blockstore_bytes_read_total{backend=pool,op=read}"),
        10.0
    );
    pool.close().unwrap();

    #[cfg(feature = "s3")]
    {
        use support::proxy::Proxy;
        let proxy = Proxy::start(&support::s3::server().endpoint);
        let mut config = support::s3::config();
        let _cleanup = support::s3::Cleanup(config.clone());
        config.endpoint = proxy.endpoint();
        let store = blockstore::S3Store::open(config).unwrap();
        store.write_block("s/k", b"value").unwrap();
        take(&snapshotter);
        proxy.fail_next_method("GET", 1, 500, "InternalError");
        store.read_block("s/k").unwrap();
        proxy.fail_next_method("GET", 1, 503, "SlowDown");
        store.read_block("s/k").unwrap();
        let m = take(&snapshotter);
        assert_eq!(
            get(&m, "blockstore_calls_total{backend=s3,op=read}"),
            2.0,
            "{m:?}"
        );
        assert_eq!(
            get(&m, "blockstore_s3_attempts_total{method=GET}"),
            4.0,
            "{m:?}"
        );
        assert_eq!(
            get(&m, "blockstore_s3_retries_total{cause=http_500}"),
            1.0,
            "{m:?}"
        );
        assert_eq!(
            get(&m, "blockstore_s3_retries_total{cause=throttled}"),
            1.0,
            "{m:?}"
        );
        assert_eq!(get(&m, "blockstore_s3_throttled_total{}"), 1.0, "{m:?}");
        assert_eq!(
            get(&m, "blockstore_bytes_read_total{backend=s3,op=read}"),
            10.0
        );
    }
}
