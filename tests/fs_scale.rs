//! A store as wide as a real share: 5,000 content ids, each a directory of its own, read
//! and deleted by a process allowed only 64 file descriptors (a child process, since
//! the limit is per process). Listings and prefix deletes hold one descriptor per
//! directory level, never one per sibling.

mod support;

use std::path::PathBuf;

use blockstore::{block_key, BlockStore, FsConfig, FsStore};
use support::{child_command, child_role};

const FILES: usize = 5000;

/// Child: with RLIMIT_NOFILE = 64, scans, lists and deletes the whole store.
#[test]
fn narrow_descriptor_child() {
    if child_role().as_deref() != Some("narrow") {
        return;
    }
    let base = PathBuf::from(std::env::var("SCALE_BASE").unwrap());
    let limit = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let store = FsStore::open(FsConfig::new(&base)).unwrap();
    let mut scanned = 0;
    for block in store.scan("", None).unwrap() {
        block.unwrap();
        scanned += 1;
    }
    println!("RESULT scanned {scanned}");
    println!("RESULT listed {}", store.list_by_prefix("").unwrap().len());
    // `f1` spans 1,111 content ids: f1, f10…f19, f100…f199, f1000…f1999.
    println!(
        "RESULT listed-f1 {}",
        store.list_blocks("f1").unwrap().len()
    );
    println!(
        "RESULT deleted-f1 {}",
        store.delete_by_prefix("f1").unwrap()
    );
    println!(
        "RESULT deleted-rest {}",
        store.delete_by_prefix("").unwrap()
    );
    println!("RESULT left {}", store.list_by_prefix("").unwrap().len());
}

#[test]
fn five_thousand_directories_within_64_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("store");
    let mut config = FsConfig::new(&base);
    config.fsync = false;
    let store = FsStore::open(config).unwrap();
    for i in 0..FILES {
        store
            .write_block(&block_key(&format!("f{i}"), 0, 0), b"b")
            .unwrap();
    }
    drop(store);
    let out = child_command("narrow_descriptor_child", "narrow")
        .env("SCALE_BASE", &base)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result = |what: &str| -> usize {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("RESULT {what} ")))
            .unwrap_or_else(|| panic!("no {what} in {stdout}"))
            .parse()
            .unwrap()
    };
    assert_eq!(result("scanned"), FILES);
    assert_eq!(result("listed"), FILES);
    assert_eq!(result("listed-f1"), 1111);
    assert_eq!(result("deleted-f1"), 1111);
    assert_eq!(result("deleted-rest"), FILES - 1111);
    assert_eq!(result("left"), 0);
    assert!(
        support::tree_outside_internal(&base).is_empty(),
        "every directory went with its blocks"
    );
}
