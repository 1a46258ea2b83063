//! Concurrent model check: threads run random operations on their own and on shared
//! keys. Every read, during the run and after, is one whole value that was written to
//! that key; listings taken during the run are sorted and never show a key twice.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Barrier, Mutex};

use blockstore::{BlockStore, ErrorKind, FsConfig, FsStore, MemoryStore, Pool, PoolConfig};

/// `[writer id u64][len u32][payload][checksum u64]`: a torn or blended value fails to
/// decode, and the id says which write it came from.
fn encode(id: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 20);
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&(len as u32).to_le_bytes());
    v.extend((0..len).map(|i| (i as u64 ^ id) as u8));
    let sum = v
        .iter()
        .fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

fn decode(v: &[u8]) -> Option<u64> {
    if v.len() < 20 {
        return None;
    }
    let (body, sum) = v.split_at(v.len() - 8);
    let expect = body
        .iter()
        .fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let len = u32::from_le_bytes(body[8..12].try_into().ok()?) as usize;
    (expect == u64::from_le_bytes(sum.try_into().ok()?) && body.len() == 12 + len)
        .then(|| u64::from_le_bytes(body[..8].try_into().unwrap()))
}

fn run(store: Arc<dyn BlockStore>, threads: usize, ops: usize) {
    // Every value ever written to each key, recorded before the write starts.
    let written: Arc<Mutex<HashMap<String, HashSet<u64>>>> = Arc::default();
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (store, written, start) = (store.clone(), written.clone(), start.clone());
            std::thread::spawn(move || {
                let mut rng = 0x9E37_79B9u64 * (t as u64 + 1);
                start.wait();
                for n in 0..ops {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let key = if rng.is_multiple_of(2) {
                        format!("shared/{}", rng % 4)
                    } else {
                        format!("own/{t}/{}", rng % 5)
                    };
                    match (rng >> 8) % 6 {
                        0 | 1 => {
                            let id = ((t as u64) << 32) | n as u64;
                            written
                                .lock()
                                .unwrap()
                                .entry(key.clone())
                                .or_default()
                                .insert(id);
                            store
                                .write_block(&key, &encode(id, ((rng >> 16) % 3000) as usize))
                                .expect("write");
                        }
                        2 | 3 => match store.read_block(&key) {
                            Ok(v) => {
                                let id = decode(&v)
                                    .unwrap_or_else(|| panic!("{key}: a partial or blended value"));
                                assert!(
                                    written.lock().unwrap()[&key].contains(&id),
                                    "{key}: value {id:x} never written there"
                                );
                            }
                            Err(e) => assert_eq!(e.kind(), ErrorKind::NotFound, "{key}: {e}"),
                        },
                        4 => store.delete_block(&key).expect("delete"),
                        _ => {
                            let listed = store.list_by_prefix("").expect("list");
                            let unique: HashSet<&String> = listed.iter().collect();
                            assert_eq!(
                                unique.len(),
                                listed.len(),
                                "a key listed twice: {listed:?}"
                            );
                            assert!(
                                listed.windows(2).all(|w| w[0] < w[1]),
                                "listing out of order: {listed:?}"
                            );
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a thread failed");
    }
    let written = written.lock().unwrap();
    for key in store.list_by_prefix("").unwrap() {
        let v = store.read_block(&key).unwrap();
        let id = decode(&v).unwrap_or_else(|| panic!("{key}: final value is not whole"));
        assert!(
            written[&key].contains(&id),
            "{key}: final value {id:x} never written there"
        );
    }
}

#[test]
fn memory_under_concurrency() {
    run(Arc::new(MemoryStore::new()), 6, 2000);
}

#[test]
fn filesystem_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    run(
        Arc::new(FsStore::open(FsConfig::new(dir.path())).unwrap()),
        6,
        600,
    );
}

#[test]
fn pool_over_filesystem_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(FsConfig::new(dir.path())).unwrap();
    run(
        Arc::new(
            Pool::new(
                Arc::new(store),
                PoolConfig {
                    workers: 4,
                    queue_capacity: 8,
                },
            )
            .unwrap(),
        ),
        6,
        400,
    );
}

#[cfg(feature = "s3")]
#[test]
fn s3_under_concurrency() {
    let config = support::s3::config();
    let _cleanup = support::s3::Cleanup(config.clone());
    run(Arc::new(blockstore::S3Store::open(config).unwrap()), 4, 60);
}
