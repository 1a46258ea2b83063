//! Stores as large as real shares, each figure next to its baseline in the same run:
//!
//! - memory: 1,000 keys listed out of 10,000,000; a streaming scan of 1,000,000 keys while
//!   another thread writes, and the longest that writer waited (the scan holds the lock
//!   for a page at a time, never for the scan);
//! - filesystem, 1,000,000 blocks as 200,000 content ids × 5 blocks: a full listing with
//!   sizes against a bare walk of the same tree (`read_dir` and the same `stat`s); the
//!   CLI's `ls` of all of them, with its peak memory, under a limit of 64 descriptors
//!   (if the CLI is built: `cargo build --release -p blockstore-cli`);
//! - filesystem: `delete_by_prefix` of 100,000 blocks against a bare walk that unlinks
//!   them with the same directory syncs.
//!
//! `cargo bench --bench scale` runs the full sizes (minutes, and about 2 GB of memory);
//! `cargo bench --bench scale -- --test` (as CI runs it) runs small ones and judges
//! nothing. `BLOCKSTORE_SCALE_MEMORY_KEYS`, `BLOCKSTORE_SCALE_FS_BLOCKS` and
//! `BLOCKSTORE_SCALE_DELETE_BLOCKS` set other sizes.

use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockstore::{block_key, BlockStore, FsConfig, FsStore, MemoryStore};

fn size(var: &str, full: usize, test: usize) -> usize {
    let quick = std::env::args().any(|a| a == "--test");
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { test } else { full })
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn memory() {
    let keys = size("BLOCKSTORE_SCALE_MEMORY_KEYS", 10_000_000, 100_000);
    let store = Arc::new(MemoryStore::new());
    let started = Instant::now();
    for i in 0..keys {
        store
            .write_block(&format!("share-{:05}/file-{:03}", i / 1000, i % 1000), b"")
            .unwrap();
    }
    println!(
        "memory: {keys} keys written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let share = format!("share-{:05}/", keys / 2000);
    let mut times = Vec::new();
    for _ in 0..101 {
        let t = Instant::now();
        let listed = store.list_by_prefix(&share).unwrap();
        times.push(t.elapsed());
        assert_eq!(listed.len(), 1000);
    }
    println!(
        "memory: list 1,000 of {keys} keys: median {:.1} µs",
        median(times).as_secs_f64() * 1e6
    );
    // A scan of up to 1,000,000 keys while a writer measures how long each write waits.
    let scanned_keys = keys.min(1_000_000);
    let last_share = format!("share-{:05}/", scanned_keys / 1000);
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(AtomicU64::new(0));
    let writer = {
        let (store, stop, worst) = (store.clone(), stop.clone(), worst.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                store
                    .write_block(&format!("zz-writer/{}", n % 100), b"w")
                    .unwrap();
                worst.fetch_max(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                n += 1;
            }
            n
        })
    };
    let t = Instant::now();
    let mut seen = 0usize;
    for block in store.scan("share-", None).unwrap() {
        let block = block.unwrap();
        if block.key.as_str() >= last_share.as_str() {
            break;
        }
        seen += 1;
    }
    let scan = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    let page = {
        let t = Instant::now();
        let mut it = store.scan("share-", None).unwrap();
        for _ in 0..1000 {
            it.next();
        }
        t.elapsed()
    };
    println!(
        "memory: scan of {seen} keys in {:.0} ms; a writer made {writes} writes meanwhile, the longest waited {:.0} µs (one page of 1,000 takes {:.0} µs; the whole scan {:.0} µs)",
        scan.as_secs_f64() * 1e3,
        worst.load(Ordering::Relaxed) as f64 / 1e3,
        page.as_secs_f64() * 1e6,
        scan.as_secs_f64() * 1e6,
    );
}

/// Writes `blocks` one-byte blocks as `blocks / 5` content ids under `prefix`, with
/// 4 threads and without syncs (set-up, not measured).
fn populate(base: &Path, prefix: &str, blocks: usize) {
    let mut config = FsConfig::new(base);
    config.fsync = false;
    let store = Arc::new(FsStore::open(config).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (store, prefix) = (store.clone(), prefix.to_owned());
            std::thread::spawn(move || {
                for c in (t..blocks / 5).step_by(4) {
                    for b in 0..5 {
                        store
                            .write_block(&block_key(&format!("{prefix}c{c}"), 0, b), b"x")
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// A bare walk of a tree: every directory read, every entry stat'ed. Returns how many
/// files it found.
fn bare_walk(dir: &Path) -> usize {
    let mut files = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == ".blockstore" {
            continue;
        }
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        if meta.is_dir() {
            files += bare_walk(&entry.path());
        } else {
            std::hint::black_box(meta.len());
            files += 1;
        }
    }
    files
}

/// A bare delete of a tree with the store's syncs: unlink through the directory's
/// descriptor, remove emptied subdirectories, sync each changed directory once.
fn bare_delete(dir: &Path) -> usize {
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let mut removed = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if entry.file_type().unwrap().is_dir() {
            removed += bare_delete(&entry.path());
            rustix::fs::unlinkat(&fd, name.as_os_str(), rustix::fs::AtFlags::REMOVEDIR).unwrap();
        } else {
            rustix::fs::unlinkat(&fd, name.as_os_str(), rustix::fs::AtFlags::empty()).unwrap();
            removed += 1;
        }
    }
    rustix::fs::fsync(fd.as_fd()).unwrap();
    removed
}

fn filesystem(root: &Path) {
    let blocks = size("BLOCKSTORE_SCALE_FS_BLOCKS", 1_000_000, 10_000);
    let base = root.join("listing");
    let t = Instant::now();
    populate(&base, "", blocks);
    println!(
        "filesystem: {blocks} blocks written in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let store = FsStore::open(FsConfig::new(&base)).unwrap();
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let mut measure_ours = || {
            let t = Instant::now();
            let mut n = 0;
            for block in store.scan("", None).unwrap() {
                std::hint::black_box(block.unwrap().size);
                n += 1;
            }
            assert_eq!(n, blocks);
            ours.push(t.elapsed());
        };
        let mut measure_bare = || {
            let t = Instant::now();
            assert_eq!(bare_walk(&base), blocks);
            bare.push(t.elapsed());
        };
        // Take turns going first: the page cache favours whoever comes second.
        if round % 2 == 0 {
            measure_ours();
            measure_bare();
        } else {
            measure_bare();
            measure_ours();
        }
    }
    let (o, b) = (median(ours), median(bare));
    println!(
        "filesystem: full listing with sizes of {blocks} blocks: store {:.2} s, bare walk {:.2} s: {:.2}x the bare walk's speed",
        o.as_secs_f64(),
        b.as_secs_f64(),
        b.as_secs_f64() / o.as_secs_f64()
    );
    cli_ls(root, &base, blocks);
    drop(store);
    let deletes = size("BLOCKSTORE_SCALE_DELETE_BLOCKS", 100_000, 2_000);
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for round in 0..2 {
        let base = root.join(format!("delete-{round}"));
        populate(&base, "ours/", deletes);
        populate(&base, "bare/", deletes);
        let store = FsStore::open(FsConfig::new(&base)).unwrap();
        let mut measure_ours = || {
            let t = Instant::now();
            assert_eq!(store.delete_by_prefix("ours/").unwrap(), deletes as u64);
            ours.push(t.elapsed());
        };
        let mut measure_bare = || {
            let t = Instant::now();
            assert_eq!(bare_delete(&base.join("bare")), deletes);
            bare.push(t.elapsed());
        };
        if round % 2 == 0 {
            measure_ours();
            measure_bare();
        } else {
            measure_bare();
            measure_ours();
        }
    }
    let (o, b) = (median(ours), median(bare));
    println!(
        "filesystem: delete_by_prefix of {deletes} blocks (fsync on): store {:.2} s, bare unlink walk {:.2} s: {:.2}x the bare walk's speed",
        o.as_secs_f64(),
        b.as_secs_f64(),
        b.as_secs_f64() / o.as_secs_f64()
    );
}

/// The release CLI's `ls ""` of the whole store, run under a limit of 64 descriptors:
/// its time, its peak memory (an upper bound: it includes what the child shared with
/// this process before `exec`), and that it listed every block.
fn cli_ls(root: &Path, base: &Path, blocks: usize) {
    let cli = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/blockstore");
    if !cli.exists() {
        println!("filesystem: CLI ls not measured: build it first (cargo build --release -p blockstore-cli)");
        return;
    }
    let config = root.join("ls.toml");
    fs::write(
        &config,
        format!(
            "[block_store]\ntype = \"filesystem\"\n[block_store.filesystem]\nbase_path = \"{}\"\n",
            base.display()
        ),
    )
    .unwrap();
    let t = Instant::now();
    let out = std::process::Command::new("prlimit")
        .arg("--nofile=64:64")
        .arg(&cli)
        .arg("--config")
        .arg(&config)
        .args(["ls", "--count", ""])
        .output()
        .expect("prlimit (util-linux)");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        blocks.to_string()
    );
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    println!(
        "filesystem: CLI `ls --count \"\"` of {blocks} blocks within 64 descriptors in {:.2} s, peak RSS {:.1} MiB",
        took.as_secs_f64(),
        usage.ru_maxrss as f64 / 1024.0
    );
}

fn main() {
    // The filesystem first: the CLI measured there is started from this process, and
    // a child's peak memory counts what it shared with its parent before `exec`.
    let dir = tempfile::tempdir().unwrap();
    filesystem(dir.path());
    memory();
}
