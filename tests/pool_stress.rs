//! Pool stress: 16 callers over the filesystem, then close. Its own test binary, so the
//! count of pool threads is not disturbed by other tests' pools.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blockstore::pool::THREAD_PREFIX;
use blockstore::pool::{Read, Write};
use blockstore::{BlockStore, FsConfig, FsStore, Pool, PoolConfig};

/// Threads of this process whose name starts with the pool's prefix (as the kernel
/// keeps it: at most 15 bytes).
fn pool_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .map(|name| {
                    name.trim()
                        .starts_with(THREAD_PREFIX.trim_end_matches('-').get(..15).unwrap_or(""))
                })
                .unwrap_or(false)
        })
        .count()
}

/// 16 callers submit batches for a few seconds over the filesystem; every acknowledged
/// write is readable afterwards, and no worker thread survives close.
#[test]
fn stress_sixteen_callers_over_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::open(FsConfig::new(dir.path())).unwrap());
    let before = pool_threads();
    let p = Arc::new(
        Pool::new(
            store,
            PoolConfig {
                workers: 8,
                queue_capacity: 16,
            },
        )
        .unwrap(),
    );
    // A thread names itself once it runs; give them a moment.
    let started = Instant::now();
    while pool_threads() < before + 8 && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(pool_threads(), before + 8, "eight named workers");
    let deadline = Instant::now() + Duration::from_secs(3);
    let callers: Vec<_> = (0..16)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut round = 0u32;
                while Instant::now() < deadline {
                    let batch: Vec<(String, Vec<u8>)> = (0..8)
                        .map(|i| {
                            (
                                format!("st/{t}/{}/{i}", round % 4),
                                vec![(round + i) as u8; 1000 + i as usize],
                            )
                        })
                        .collect();
                    let writes = batch
                        .iter()
                        .map(|(key, data)| Write::new(key.clone(), data.clone()));
                    let results = p.batch(writes).in_order();
                    for ((key, data), r) in batch.into_iter().zip(results) {
                        r.expect("write under stress");
                        acked.retain(|(k, _): &(String, Vec<u8>)| *k != key);
                        acked.push((key, data));
                    }
                    let reads = acked
                        .iter()
                        .rev()
                        .take(8)
                        .map(|(k, _)| Read { key: k.clone() });
                    for r in p.batch(reads).in_order() {
                        r.expect("read under stress");
                    }
                    round += 1;
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for c in callers {
        acked.extend(c.join().unwrap());
    }
    let reads = acked.iter().map(|(k, _)| Read { key: k.clone() });
    for ((key, data), r) in acked.iter().zip(p.batch(reads).in_order()) {
        assert_eq!(&r.unwrap(), data, "{key}");
    }
    p.close().unwrap();
    assert_eq!(pool_threads(), before, "worker threads left after close");
}
