//! Memory of a long-running filesystem store stays flat (a daemon runs for months):
//! with `fsync = false`, 20,000 writes into new directories leave no per-directory
//! bookkeeping behind, and range reads of 6,000 blocks remember the checksum records
//! of at most 1,024. Measured with a counting allocator (this binary's only test).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use blockstore::{BlockStore, FsConfig, FsStore};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
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
fn writes_without_fsync_keep_no_per_directory_state() {
    let dir = tempfile::tempdir().unwrap();
    for fsync in [false, true] {
        let mut config = FsConfig::new(dir.path().join(format!("fsync-{fsync}")));
        config.fsync = fsync;
        let store = FsStore::open(config).unwrap();
        // Warm up whatever is allocated once.
        store.write_block("warm/k", b"x").unwrap();
        let before = LIVE.load(Ordering::Relaxed);
        let writes = if fsync { 500 } else { 20_000 };
        for i in 0..writes {
            store
                .write_block(&format!("d{}/{i}/chunk-0/block-0", i % 100), b"x")
                .unwrap();
        }
        let grown = LIVE.load(Ordering::Relaxed).saturating_sub(before);
        assert!(
            grown < 64 * 1024,
            "fsync = {fsync}: the live heap grew by {grown} bytes over {writes} writes into new directories"
        );
    }

    // Range reads remember checksum records, of a bounded number of blocks.
    let mut config = FsConfig::new(dir.path().join("ranges"));
    config.fsync = false;
    let store = FsStore::open(config).unwrap();
    let block = vec![7u8; 16 * 1024];
    let key = |i: usize| format!("export/some/longer/path/file-{i}/chunk-0/block-0");
    for i in 0..6_000 {
        store.write_block(&key(i), &block).unwrap();
    }
    // Records are remembered once their files have not changed for two seconds.
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    store.read_block_range(&key(0), 100, 10).unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    for round in 0..2 {
        for i in 0..6_000 {
            assert_eq!(
                store.read_block_range(&key(i), 100 + round, 10).unwrap(),
                [7u8; 10]
            );
        }
    }
    let grown = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    // About 200 bytes per remembered block: 1,024 of them stay well under 512 KiB,
    // 6,000 would not.
    assert!(
        grown < 512 * 1024,
        "the live heap grew by {grown} bytes over range reads of 6,000 blocks"
    );
}
