//! The pool as a FUSE or NFS daemon uses it: jobs on one key in submission order,
//! writes that happen whether or not anyone waits, the pool from a configuration file,
//! shared buffers, results on a channel, and a pool that leaves a shared store open.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use blockstore::backend::{Backend, Checked, Fields, MemoryBackend};
use blockstore::pool::{Read, ReadAt, Write};
use blockstore::{
    BlockStore, Blocks, Config, ErrorKind, FsConfig, FsStore, Pool, PoolConfig, Result,
};
use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

fn pool_over(store: Arc<dyn BlockStore>) -> Pool {
    Pool::new(
        store,
        PoolConfig {
            workers: 16,
            queue_capacity: 64,
        },
    )
    .unwrap()
}

/// A large write then a small write of one key, then a read, all submitted without
/// waiting, `rounds` times over distinct keys: every read sees the small write, and
/// the small write is what stays.
fn later_jobs_on_a_key_see_earlier_ones(pool: &Pool, big: usize, rounds: usize) {
    let big_block = Bytes::from(vec![0xB1u8; big]);
    let small = |r: usize| Bytes::from(format!("small {r}").into_bytes());
    let mut reads = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let key = format!("order/{r}");
        pool.submit(Write::new(key.clone(), big_block.clone()))
            .unwrap()
            .detach();
        pool.submit(Write::new(key.clone(), small(r)))
            .unwrap()
            .detach();
        reads.push(pool.submit(Read { key }).unwrap());
    }
    let mut stale = 0;
    for (r, read) in reads.into_iter().enumerate() {
        if read.wait().unwrap() != small(r) {
            stale += 1;
        }
    }
    assert_eq!(stale, 0, "{stale} of {rounds} reads saw an older write");
    let mut lost = 0;
    for r in 0..rounds {
        if pool.read_block(&format!("order/{r}")).unwrap() != small(r) {
            lost += 1;
        }
    }
    assert_eq!(lost, 0, "the older write won {lost} of {rounds} times");
}

#[test]
fn jobs_on_one_key_take_effect_in_submission_order_on_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = FsConfig::new(dir.path());
    config.fsync = false;
    let pool = pool_over(Arc::new(FsStore::open(config).unwrap()));
    later_jobs_on_a_key_see_earlier_ones(&pool, 1 << 20, 1000);
}

#[cfg(feature = "s3")]
#[test]
fn jobs_on_one_key_take_effect_in_submission_order_on_s3() {
    let config = support::s3::config();
    let _cleanup = support::s3::Cleanup(config.clone());
    let pool = pool_over(Arc::new(blockstore::S3Store::open(config).unwrap()));
    later_jobs_on_a_key_see_earlier_ones(&pool, 64 << 10, 1000);
}

/// A memory backend that can hold every write and delete until released, and records
/// where the bytes of each write were. Reads are never held.
#[derive(Default)]
struct Gated {
    inner: MemoryBackend,
    held: Mutex<bool>,
    released: Condvar,
    write_ptrs: Mutex<Vec<usize>>,
    calls: AtomicUsize,
}

impl Gated {
    fn hold(&self) {
        *self.held.lock() = true;
    }
    fn release(&self) {
        *self.held.lock() = false;
        self.released.notify_all();
    }
    fn pass(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut held = self.held.lock();
        while *held {
            self.released.wait(&mut held);
        }
    }
}

impl Backend for Gated {
    fn name(&self) -> &'static str {
        "gated"
    }
    fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        self.pass();
        self.write_ptrs.lock().push(data.as_ptr() as usize);
        self.inner.write(key, data)
    }
    fn read(&self, key: &str) -> Result<Vec<u8>> {
        self.inner.read(key)
    }
    fn read_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.inner.read_range(key, offset, length)
    }
    fn size(&self, key: &str) -> Result<u64> {
        self.inner.size(key)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.pass();
        self.inner.delete(key)
    }
    fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        self.inner.delete_prefix(prefix)
    }
    fn scan(&self, prefix: &str, start_after: Option<&str>, fields: Fields) -> Result<Blocks<'_>> {
        self.inner.scan(prefix, start_after, fields)
    }
    fn health(&self) -> Result<()> {
        Ok(())
    }
}

/// A daemon keeps the handle of the latest flush of each block in a map and replaces it
/// when it flushes again: the replaced handles are dropped, and their writes still
/// happen (in order, so the latest wins). Only `cancel` cancels.
#[test]
fn dropping_a_handle_never_cancels_its_write() {
    let gated = Arc::new(Checked::from_backend(Gated::default()));
    gated.backend().hold();
    let pool = Pool::sharing(
        gated.clone(),
        PoolConfig {
            workers: 2,
            queue_capacity: 64,
        },
    )
    .unwrap();
    let mut latest = HashMap::new();
    for version in 0..10u8 {
        for block in 0..4 {
            let key = format!("file/chunk-0/block-{block}");
            let handle = pool
                .submit(Write::new(key.clone(), vec![version; 16]))
                .unwrap();
            // Replacing the entry drops the previous flush's handle.
            latest.insert(key, handle);
        }
    }
    let cancelled = pool.submit(Write::new("file/cancelled", vec![1])).unwrap();
    assert!(cancelled.cancel());
    gated.backend().release();
    for (_, handle) in latest {
        handle.wait().unwrap();
    }
    pool.close().unwrap();
    assert_eq!(
        gated.backend().calls.load(Ordering::SeqCst),
        40,
        "every write ran"
    );
    for block in 0..4 {
        assert_eq!(
            gated
                .read_block(&format!("file/chunk-0/block-{block}"))
                .unwrap(),
            vec![9u8; 16]
        );
    }
    assert_eq!(
        gated.read_block("file/cancelled").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

/// A `[pool]` section in the configuration gives the daemon the pool itself, with its
/// jobs and statistics; without one there is no pool.
#[test]
fn a_configured_pool_is_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[block_store]\ntype = \"filesystem\"\n[block_store.filesystem]\nbase_path = \"{}\"\n[pool]\nworkers = 3\nqueue_capacity = 8\n",
        dir.path().display()
    );
    let opened = Config::from_toml_str(&text).unwrap().open().unwrap();
    let pool = opened.pool().expect("the configured pool");
    assert_eq!(pool.config().workers, 3);
    let writes = (0..10).map(|i| Write::new(format!("cfg/{i}"), vec![i as u8; 8]));
    assert!(pool.batch(writes).in_order().iter().all(|r| r.is_ok()));
    assert_eq!(pool.stats().done, 10);
    assert_eq!(opened.store().list_by_prefix("cfg/").unwrap().len(), 10);
    let plain = Config::filesystem(dir.path()).open().unwrap();
    assert!(plain.pool().is_none());
    assert_eq!(plain.store().list_by_prefix("cfg/").unwrap().len(), 10);
}

/// A block the daemon keeps serving is handed to the pool as a shared buffer: the store
/// writes from the very same bytes, no copy made.
#[test]
fn writes_share_the_callers_buffer() {
    let gated = Arc::new(Checked::from_backend(Gated::default()));
    let pool = pool_over(gated.clone());
    let block = Bytes::from(vec![7u8; 1 << 20]);
    pool.submit(Write::new("shared/k", block.clone()))
        .unwrap()
        .wait()
        .unwrap();
    let arc: Arc<[u8]> = Arc::from(vec![8u8; 4096]);
    let owned = Bytes::from_owner(arc.clone());
    pool.submit(Write::new("shared/arc", owned))
        .unwrap()
        .wait()
        .unwrap();
    let ptrs = gated.backend().write_ptrs.lock().clone();
    assert_eq!(ptrs, [block.as_ptr() as usize, arc.as_ptr() as usize]);
    // And the caller's copy is still its own.
    assert_eq!(block.len(), 1 << 20);
    assert_eq!(pool.read_block("shared/k").unwrap(), block);
}

/// Results delivered to a channel: the daemon waits for whichever job finishes first,
/// here a read that overtakes a write on another key that the store holds.
#[test]
fn results_arrive_on_a_channel_as_jobs_finish() {
    let gated = Arc::new(Checked::from_backend(Gated::default()));
    let pool = pool_over(gated.clone());
    pool.write_block("c/ready", b"ready").unwrap();
    let (done, results) = crossbeam_channel::unbounded();
    gated.backend().hold();
    pool.submit_to(Write::new("c/slow", vec![1]), &done, |r| {
        ("slow write", r.map(|()| Vec::new()))
    })
    .unwrap();
    while gated.backend().calls.load(Ordering::SeqCst) < 2 {
        std::thread::yield_now();
    }
    pool.submit_to(
        Read {
            key: "c/ready".into(),
        },
        &done,
        |r| ("quick read", r),
    )
    .unwrap();
    let (tag, first) = results.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(tag, "quick read");
    assert_eq!(first.unwrap(), b"ready");
    assert!(
        results.try_recv().is_err(),
        "the held write has not finished"
    );
    gated.backend().release();
    let (tag, slow) = results.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(tag, "slow write");
    assert!(slow.unwrap().is_empty());
    // Many at once, each reported once, in whatever order they finish.
    let (done, results) = crossbeam_channel::unbounded();
    for i in 0..50 {
        pool.submit_to(
            Read {
                key: "c/ready".into(),
            },
            &done,
            move |r| (i, r),
        )
        .unwrap();
    }
    let mut seen: Vec<i32> = (0..50).map(|_| results.recv().unwrap().0).collect();
    seen.sort();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
}

/// A pool over a store the daemon also uses directly leaves it open when it closes (the
/// daemon's last manifest write must not fail with Closed); a pool that owns its store
/// closes it.
#[test]
fn a_sharing_pool_leaves_the_store_open() {
    let store = Arc::new(blockstore::MemoryStore::new());
    let pool = Pool::sharing(store.clone(), PoolConfig::default()).unwrap();
    pool.write_block("m/data", b"d").unwrap();
    pool.close().unwrap();
    store.write_block("m/manifest", b"final").unwrap();
    assert_eq!(store.read_block("m/data").unwrap(), b"d");
    let owning = Pool::new(store.clone(), PoolConfig::default()).unwrap();
    owning.close().unwrap();
    assert_eq!(
        store.read_block("m/data").unwrap_err().kind(),
        ErrorKind::Closed
    );
}

/// `read_at` through the pool, as a file read: 0 past the end, the bytes inside.
#[test]
fn positioned_reads_through_the_pool() {
    let pool = pool_over(Arc::new(blockstore::MemoryStore::new()));
    pool.write_block("r/k", b"0123456789").unwrap();
    let (buf, n) = pool
        .submit(ReadAt {
            key: "r/k".into(),
            offset: 8,
            buf: vec![0; 16],
        })
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(&buf[..n], b"89");
    let mut buf = [0u8; 4];
    assert_eq!(pool.read_at("r/k", 10, &mut buf).unwrap(), 0);
    assert_eq!(pool.read_at("r/k", 2, &mut buf).unwrap(), 4);
    assert_eq!(&buf, b"2345");
    assert_eq!(
        pool.read_at("r/absent", 0, &mut buf).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}
