//! Live heap while streaming 1,000 reads of 4 MiB through a 16-worker pool over the
//! filesystem: at most one block per worker is alive at once, so the peak stays under
//! 16 × 4 MiB + 16 MiB. Measured with a counting allocator (this binary's only test).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use blockstore::pool::Read;
use blockstore::{BlockStore, FsConfig, FsStore, Pool, PoolConfig, BLOCK_SIZE};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn streaming_reads_hold_at_most_one_block_per_worker() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(FsConfig::new(dir.path())).unwrap();
    let block = vec![7u8; BLOCK_SIZE];
    for i in 0..32 {
        store.write_block(&format!("heap/{i}"), &block).unwrap();
    }
    drop(block);
    let pool = Pool::new(
        Arc::new(store),
        PoolConfig {
            workers: 16,
            queue_capacity: 256,
        },
    )
    .unwrap();
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let mut bytes = 0u64;
    let reads = (0..1000).map(|i| Read {
        key: format!("heap/{}", i % 32),
    });
    for (_, block) in pool.batch(reads) {
        bytes += block.expect("read").len() as u64;
    }
    let peak = PEAK.load(Ordering::Relaxed) - baseline;
    assert_eq!(bytes, 1000 * BLOCK_SIZE as u64);
    let limit = 16 * BLOCK_SIZE + (16 << 20);
    eprintln!(
        "peak live heap above baseline: {:.1} MiB (limit {:.0} MiB)",
        peak as f64 / 1048576.0,
        limit as f64 / 1048576.0
    );
    assert!(
        peak <= limit,
        "peak live heap {peak} bytes above the {limit} limit"
    );
    pool.close().unwrap();
}
