//! The filesystem backend as the field runs it: another process deleting next to a
//! writer, a forked child, a cleaner that removes the internal area, a disk that fills
//! up at open and is freed later, many opens at once, other filesystems mounted below
//! the base, planted FIFOs, devices and sockets, oversized foreign files, and a process
//! out of file descriptors. Multi-process cases run real child processes; disks are
//! real loop-mounted filesystems or tmpfs (root and mount(8) needed, as in CI).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockstore::{BlockStore, ErrorKind, FsConfig, FsStore, BLOCK_SIZE};
use support::{
    child_command, child_role, loop_fs, mount_or_explain, temp_files, tree, tree_outside_internal,
    within, Mount,
};

fn open(path: &Path) -> FsStore {
    FsStore::open(FsConfig::new(path)).unwrap()
}

fn kind<T>(r: blockstore::Result<T>) -> Option<ErrorKind> {
    r.err().map(|e| e.kind())
}

/// The value of `RESULT {what} …` in a child's output.
fn result_of(stdout: &str, what: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("RESULT {what} ")))
        .unwrap_or_else(|| panic!("no result for {what} in: {stdout}"))
        .to_owned()
}

/// Child: deletes `r/` by prefix in a loop until the file `STOP` appears in the store's
/// parent directory, then reports how many blocks its calls removed, and any error.
#[test]
fn prefix_deleter_child() {
    if child_role().as_deref() != Some("prefix-deleter") {
        return;
    }
    let base = PathBuf::from(std::env::var("FIELD_BASE").unwrap());
    let stop = base.parent().unwrap().join("STOP");
    let store = open(&base);
    let (mut deleted, mut failures) = (0u64, Vec::new());
    println!("READY");
    while !stop.exists() {
        match store.delete_by_prefix("r/") {
            Ok(n) => deleted += n,
            Err(e) => failures.push(e.to_string()),
        }
    }
    // One last pass after the writer stopped, so no block written is left behind.
    deleted += store.delete_by_prefix("r/").unwrap();
    println!("RESULT deleted {deleted}");
    println!("RESULT failures {}", failures.len());
    for f in failures.iter().take(5) {
        println!("FAILURE {f}");
    }
}

/// A write racing another process's prefix delete either succeeds or tells the truth:
/// the other process removing the write's new directories is never NotFound. Every
/// block written is accounted for: deleted by the other process, or still there.
#[test]
fn writes_next_to_another_process_deleting_by_prefix_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("store");
    let store = open(&base);
    let child = child_command("prefix_deleter_child", "prefix-deleter")
        .env("FIELD_BASE", &base)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut written = 0u64;
    let mut failures = Vec::new();
    // A number of writes, bounded in time only against a hang: how long they take
    // depends on the machine's load.
    while written < 300 && started.elapsed() < Duration::from_secs(60) {
        match store.write_block(&format!("r/{written}/x/k"), b"block") {
            Ok(()) => written += 1,
            Err(e) => failures.push(format!("{:?}: {e}", e.kind())),
        }
        if failures.len() > 50 {
            break;
        }
    }
    std::fs::write(dir.path().join("STOP"), b"").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "deleter failed: {stdout}");
    assert!(
        failures.is_empty(),
        "{} of {} writes failed, e.g. {:?}",
        failures.len(),
        written as usize + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(result_of(&stdout, "failures"), "0", "{stdout}");
    let deleted: u64 = result_of(&stdout, "deleted").parse().unwrap();
    assert_eq!(written, 300, "only {written} writes in a minute");
    assert_eq!(
        deleted, written,
        "every block written was deleted once by the other process"
    );
    assert!(store.list_by_prefix("r/").unwrap().is_empty());
}

/// The same race inside one process: writers creating directories while another thread
/// of the same store deletes them by prefix (the window between "is this directory
/// recorded as new" and forgetting it).
#[test]
fn writes_next_to_prefix_deletes_in_one_process_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let stop = Arc::new(AtomicBool::new(false));
    let deleted = Arc::new(AtomicU64::new(0));
    let deleters: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop, deleted) = (store.clone(), stop.clone(), deleted.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    deleted.fetch_add(store.delete_by_prefix("r/").unwrap(), Ordering::Relaxed);
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let (mut written, mut failures) = (0u64, Vec::new());
                while written < 100 && started.elapsed() < Duration::from_secs(60) {
                    let key = format!("r/{}/{w}/x/k", written % 7);
                    match store.write_block(&key, b"v") {
                        Ok(()) => written += 1,
                        Err(e) => failures.push(format!("{key}: {e}")),
                    }
                }
                (written, failures)
            })
        })
        .collect();
    let mut total = 0;
    for w in writers {
        let (written, failures) = w.join().unwrap();
        assert!(
            failures.is_empty(),
            "{:?}",
            &failures[..failures.len().min(5)]
        );
        total += written;
    }
    stop.store(true, Ordering::Relaxed);
    for d in deleters {
        d.join().unwrap();
    }
    assert_eq!(total, 300, "only {total} writes in a minute");
    let left = store.list_by_prefix("r/").unwrap().len() as u64;
    assert!(deleted.load(Ordering::Relaxed) + left <= total);
}

/// A forked child that drops its copy of the store (as a daemon's helper child does
/// when it exits) leaves the parent's internal area, lock and writes alone.
#[test]
fn a_forked_child_dropping_the_store_leaves_the_parent_working() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.write_block("f/1", b"before").unwrap();
    let area = dir.path().join(".blockstore");
    let before = tree(&area);
    // SAFETY: the child only drops the store and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        unsafe { libc::alarm(10) };
        drop(store);
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    assert_eq!(tree(&area), before, "the child changed the parent's area");
    store.write_block("f/2", b"after").unwrap();
    store.health_check().unwrap();
    assert_eq!(store.read_block("f/2").unwrap(), b"after");
    drop(store);
    assert!(tree(&area).is_empty(), "the parent cleans up after itself");
}

/// A cleaner (tmpwatch, systemd-tmpfiles, an operator's `rm -rf`) removes the internal
/// area under a live store: the store makes a new one, lock included, and goes on.
#[test]
fn a_removed_internal_area_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let area = dir.path().join(".blockstore");
    store.write_block("a/1", b"one").unwrap();
    std::fs::remove_dir_all(&area).unwrap();
    store.write_block("a/2", b"two").unwrap();
    store.health_check().unwrap();
    assert!(
        tree(&area).iter().any(|p| p.ends_with(".lock")),
        "the new area has a lock: {:?}",
        tree(&area)
    );
    // A second store now opening must not take the new area for abandoned.
    let other = open(dir.path());
    store.write_block("a/3", b"three").unwrap();
    drop(other);
    // And while writers are busy.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = store.write_block(&format!("w/{w}/{i}"), b"x") {
                        failures.push(e.to_string());
                    }
                    i += 1;
                }
                failures
            })
        })
        .collect();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(20));
        let _ = std::fs::remove_dir_all(&area);
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let failures = w.join().unwrap();
        assert!(
            failures.is_empty(),
            "{:?}",
            &failures[..failures.len().min(5)]
        );
    }
    store.health_check().unwrap();
    drop(store);
    assert!(tree(&area).is_empty(), "{:?}", tree(&area));
}

/// Fills a filesystem with one file until it is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // The last partial chunk's pages.
    while f.write_all(&chunk[..512]).is_ok() {}
}

/// A store opened while the disk is full opens for reads, answers NoSpace to writes,
/// and writes again once space is freed, without being reopened.
#[test]
fn a_store_opened_on_a_full_disk_recovers_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = mount_or_explain(loop_fs(dir.path(), "ext4", 16), "full ext4") else {
        return;
    };
    let base = mount.path.join("store");
    open(&base).write_block("old/k", b"old").unwrap();
    fill(&mount.path.join("filler"));
    let store = open(&base);
    assert_eq!(store.read_block("old/k").unwrap(), b"old");
    assert_eq!(
        kind(store.write_block("new/k", &[1u8; 8192])),
        Some(ErrorKind::NoSpace)
    );
    assert_eq!(kind(store.health_check()), Some(ErrorKind::NoSpace));
    std::fs::remove_file(mount.path.join("filler")).unwrap();
    store.write_block("new/k", &[1u8; 8192]).unwrap();
    store.health_check().unwrap();
    assert_eq!(store.read_block("new/k").unwrap(), vec![1u8; 8192]);
}

/// Four threads open and drop stores on one base while two live stores write and 3,000
/// other entries make the internal directory span many `getdents` calls: every open
/// succeeds, and no sweep removes a live store's area.
#[test]
fn opens_next_to_each_other_all_succeed_and_spare_live_stores() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_owned();
    let live: Vec<Arc<FsStore>> = (0..2).map(|_| Arc::new(open(&base))).collect();
    let area = base.join(".blockstore");
    for i in 0..3000 {
        std::fs::write(area.join(format!("other-{i:04}-{}", "x".repeat(40))), b"").unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = live
        .iter()
        .enumerate()
        .map(|(n, store)| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut i, mut failures) = (0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = store.write_block(&format!("live/{n}/{}", i % 50), b"x") {
                        failures.push(e.to_string());
                    }
                    i += 1;
                }
                failures
            })
        })
        .collect();
    let openers: Vec<_> = (0..4)
        .map(|_| {
            let base = base.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let (mut opens, mut failures) = (0, Vec::new());
                while opens < 100 && started.elapsed() < Duration::from_secs(60) {
                    match FsStore::open(FsConfig::new(&base)) {
                        Ok(store) => drop(store),
                        Err(e) => failures.push(e.to_string()),
                    }
                    opens += 1;
                }
                (opens, failures)
            })
        })
        .collect();
    let mut opens = 0;
    for o in openers {
        let (n, failures) = o.join().unwrap();
        assert!(
            failures.is_empty(),
            "{} of {n} opens failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        opens += n;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let failures = w.join().unwrap();
        assert!(
            failures.is_empty(),
            "a live store failed: {:?}",
            &failures[..failures.len().min(5)]
        );
    }
    assert_eq!(opens, 400, "only {opens} opens in a minute");
    for store in &live {
        store.health_check().unwrap();
    }
}

/// Fills a tmpfs's inodes, then frees `free` of them.
fn use_up_inodes(mnt: &Path, free: usize) {
    let junk = mnt.join("junk");
    std::fs::create_dir(&junk).unwrap();
    let mut n = 0;
    while std::fs::write(junk.join(n.to_string()), b"").is_ok() {
        n += 1;
        assert!(n < 100_000, "the tmpfs never ran out of inodes");
    }
    for i in 0..free {
        std::fs::remove_file(junk.join((n - 1 - i).to_string())).unwrap();
    }
}

/// A write that fails part-way (here: out of inodes after its first new directory)
/// leaves no new directory behind; and empty directories that an earlier failure or
/// another tool left are removed by a later prefix delete.
#[test]
fn a_failed_write_leaves_no_directories_and_prefix_deletes_remove_empty_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    let Some(_mount) = mount_or_explain(
        Mount::new(
            &mnt,
            &["-t", "tmpfs", "-o", "size=4m,nr_inodes=400", "tmpfs"],
        ),
        "inode-limited tmpfs",
    ) else {
        return;
    };
    let store = open(&mnt);
    store.write_block("keep/k", b"kept").unwrap();
    let before = tree_outside_internal(&mnt);
    // Room for the temporary file and one directory: `a` is made, `a/b` is not.
    use_up_inodes(&mnt, 2);
    let e = store.write_block("a/b/c/k", b"block").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    let after: Vec<String> = tree_outside_internal(&mnt)
        .into_iter()
        .filter(|p| !p.starts_with("junk"))
        .collect();
    assert_eq!(after, before, "the failed write left something");
    assert!(temp_files(&mnt).is_empty(), "{:?}", temp_files(&mnt));
    std::fs::remove_dir_all(mnt.join("junk")).unwrap();
    // Empty directories someone left behind go with the next delete of their prefix.
    std::fs::create_dir_all(mnt.join("p/q/r")).unwrap();
    std::fs::create_dir_all(mnt.join("p/s")).unwrap();
    store.write_block("p/s/k", b"x").unwrap();
    assert_eq!(store.delete_by_prefix("p/").unwrap(), 1);
    assert!(!mnt.join("p").exists(), "{:?}", tree_outside_internal(&mnt));
    std::fs::create_dir_all(mnt.join("e/f")).unwrap();
    assert_eq!(store.delete_by_prefix("").unwrap(), 1);
    assert_eq!(tree_outside_internal(&mnt), Vec::<String>::new());
}

/// Writes work into another filesystem mounted below the base (a btrfs subvolume, a
/// bind mount: a NAS's per-share layout), where a rename from the internal area would
/// cross devices; reads, listings and deletes too, and nothing is left behind.
#[test]
fn writes_into_a_subvolume_or_bind_mount_below_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = mount_or_explain(loop_fs(dir.path(), "btrfs", 256), "btrfs") else {
        return;
    };
    let base = mount.path.clone();
    let made = Command::new("btrfs")
        .args(["subvolume", "create"])
        .arg(base.join("share"))
        .output()
        .expect("btrfs (btrfs-progs) is needed");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::create_dir(base.join("bound")).unwrap();
    let Some(_bind) = mount_or_explain(
        Mount::new(
            &base.join("bound"),
            &["--bind", elsewhere.to_str().unwrap()],
        ),
        "bind mount",
    ) else {
        return;
    };
    let store = open(&base);
    for key in [
        "share/f/chunk-0/block-0",
        "bound/f/chunk-0/block-0",
        "top/k",
    ] {
        store
            .write_block(key, &[9u8; 10_000])
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        store
            .write_block(key, &[8u8; 5_000])
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(store.read_block(key).unwrap(), vec![8u8; 5_000]);
    }
    assert!(elsewhere.join("f/chunk-0/block-0").exists());
    assert_eq!(
        store.list_by_prefix("").unwrap(),
        vec![
            "bound/f/chunk-0/block-0",
            "share/f/chunk-0/block-0",
            "top/k"
        ]
    );
    // Only blocks: no temporary file anywhere, in the area or beside the blocks.
    let files: Vec<String> = tree_outside_internal(&base)
        .into_iter()
        .filter(|p| base.join(p).is_file())
        .collect();
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(temp_files(&base).is_empty());
    assert_eq!(store.delete_by_prefix("").unwrap(), 3);
    assert!(
        base.join("share").exists() && base.join("bound").exists(),
        "mount points stay"
    );
}

/// A FIFO planted where the internal area keeps a lock file does not make `open` hang.
#[test]
fn a_fifo_in_the_internal_area_does_not_hang_open() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_owned();
    drop(open(&base));
    let area = base.join(".blockstore");
    for name in ["w-planted.lock", "w-planted2"] {
        let c = std::ffi::CString::new(area.join(name).to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }
    let b = base.clone();
    let store = within(10, "open next to a FIFO", move || {
        FsStore::open(FsConfig::new(b))
    });
    let store = store.unwrap();
    store.write_block("k", b"v").unwrap();
    store.health_check().unwrap();
}

/// Character devices and sockets at a key's path are NotFound for every read, like any
/// other non-regular file; deletes leave them; listings skip them; writes conflict.
#[test]
fn devices_and_sockets_at_a_key_are_not_found_for_every_operation() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_owned();
    let store = open(&base);
    store.write_block("odd/real", b"block").unwrap();
    let dev = std::ffi::CString::new(base.join("odd/zero").to_str().unwrap()).unwrap();
    // A character device like /dev/zero (1, 5).
    let made = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 5)) };
    assert_eq!(made, 0, "mknod needs root");
    let _socket = std::os::unix::net::UnixListener::bind(base.join("odd/sock")).unwrap();
    for key in ["odd/zero", "odd/sock"] {
        let mut buf = [0u8; 16];
        assert_eq!(
            kind(store.read_block(key)),
            Some(ErrorKind::NotFound),
            "{key}"
        );
        assert_eq!(
            kind(store.read_block_range(key, 0, 16)),
            Some(ErrorKind::NotFound),
            "{key}"
        );
        assert_eq!(
            kind(store.read_block_range(key, 0, u64::MAX)),
            Some(ErrorKind::NotFound),
            "{key}"
        );
        assert_eq!(
            kind(store.read_block_range_into(key, 0, &mut buf)),
            Some(ErrorKind::NotFound),
            "{key}"
        );
        assert_eq!(
            kind(store.block_size(key)),
            Some(ErrorKind::NotFound),
            "{key}"
        );
        assert_eq!(
            kind(store.write_block(key, b"x")),
            Some(ErrorKind::Conflict),
            "{key}"
        );
        store.delete_block(key).unwrap();
        assert!(
            base.join(key).symlink_metadata().is_ok(),
            "{key} was removed"
        );
    }
    assert_eq!(store.list_by_prefix("odd/").unwrap(), vec!["odd/real"]);
    assert_eq!(store.delete_by_prefix("odd/").unwrap(), 1);
}

/// A regular file larger than a block, put at a key by someone else, is refused by
/// every read and by `block_size` alike (small ranges included), with an error naming
/// its size; listings show it with its size, and deletes remove it.
#[test]
fn an_oversized_foreign_file_is_refused_by_every_read() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_owned();
    let store = open(&base);
    std::fs::create_dir(base.join("f")).unwrap();
    std::fs::write(base.join("f/huge"), vec![7u8; BLOCK_SIZE + 10]).unwrap();
    let size = (BLOCK_SIZE + 10).to_string();
    let mut buf = [0u8; 16];
    let errors = [
        store.read_block("f/huge").map(|_| ()),
        store.read_block_range("f/huge", 0, 16).map(|_| ()),
        store
            .read_block_range("f/huge", BLOCK_SIZE as u64 + 2, 4)
            .map(|_| ()),
        store.read_block_range("f/huge", 0, u64::MAX).map(|_| ()),
        store
            .read_block_range_into("f/huge", 0, &mut buf)
            .map(|_| ()),
        store.block_size("f/huge").map(|_| ()),
    ];
    for (i, r) in errors.into_iter().enumerate() {
        let e = r.expect_err(&format!("call {i} returned data"));
        assert_eq!(e.kind(), ErrorKind::Backend, "call {i}: {e}");
        assert!(e.to_string().contains(&size), "call {i}: {e}");
    }
    let listed = store.list_blocks("f/").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, BLOCK_SIZE as u64 + 10);
    assert_eq!(store.delete_by_prefix("f/").unwrap(), 1);
}

/// Child: with a limit of 64 descriptors, all of them taken, a read fails with a
/// retryable error that says the process ran out of descriptors.
#[test]
fn descriptor_child() {
    if child_role().as_deref() != Some("no-descriptors") {
        return;
    }
    let base = PathBuf::from(std::env::var("FIELD_BASE").unwrap());
    let store = open(&base);
    store.write_block("d/k", b"block").unwrap();
    let limit = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let mut held = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        held.push(f);
    }
    let e = store.read_block("d/k").unwrap_err();
    println!("RESULT retryable {}", e.is_retryable());
    println!("RESULT message {e}");
    drop(held);
    println!(
        "RESULT after {:?}",
        store.read_block("d/k").map(|b| b.len())
    );
}

#[test]
fn out_of_descriptors_is_retryable_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = child_command("descriptor_child", "no-descriptors")
        .env("FIELD_BASE", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(result_of(&stdout, "retryable"), "true", "{stdout}");
    assert!(
        result_of(&stdout, "message").contains("out of file descriptors"),
        "{stdout}"
    );
    assert_eq!(result_of(&stdout, "after"), "Ok(5)");
}

/// A crash in the middle of a write into another mount can leave its temporary file
/// beside the block: never listed (its name is not UTF-8, so never a key), removed by
/// a prefix delete once the store that made it is gone, kept while that store lives.
#[test]
fn temporary_files_beside_blocks_go_with_their_dead_store() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_owned();
    let store = open(&base);
    store.write_block("d/k", b"block").unwrap();
    let live_id = tree(&base.join(".blockstore"))
        .into_iter()
        .find_map(|p| p.strip_suffix(".lock").map(str::to_owned))
        .expect("the live store's lock");
    let planted = |id: &str| {
        let mut name = b".blockstore\xfft-".to_vec();
        name.extend_from_slice(format!("{id}-7").as_bytes());
        base.join("d").join(std::ffi::OsStr::from_bytes(&name))
    };
    let (dead, live) = (planted("w-1-dead-0"), planted(&live_id));
    std::fs::write(&dead, b"half a block").unwrap();
    std::fs::write(&live, b"a write in flight").unwrap();
    assert_eq!(store.list_by_prefix("").unwrap(), vec!["d/k"]);
    assert_eq!(store.delete_by_prefix("d/").unwrap(), 1);
    assert!(
        !dead.exists(),
        "the dead store's temporary file is still there"
    );
    assert!(live.exists(), "a live store's temporary file was removed");
}

/// Writes into a btrfs subvolume (temporary files made beside the blocks) next to a
/// prefix delete that removes their directories start over like any other write, and
/// write each block once: the store notices the subvolume (its own device) and makes
/// the temporary file there from the start.
#[test]
fn writes_into_a_subvolume_next_to_prefix_deletes_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = mount_or_explain(loop_fs(dir.path(), "btrfs", 256), "btrfs") else {
        return;
    };
    let base = mount.path.clone();
    let made = Command::new("btrfs")
        .args(["subvolume", "create"])
        .arg(base.join("sv"))
        .output()
        .expect("btrfs (btrfs-progs) is needed");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let store = Arc::new(open(&base));
    let stop = Arc::new(AtomicBool::new(false));
    let deleter = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut deleted = 0;
            while !stop.load(Ordering::Relaxed) {
                deleted += store.delete_by_prefix("sv/").unwrap();
            }
            deleted
        })
    };
    // A number of writes, not a time: under load (CI, fsync on a loop device) two
    // seconds were once only 46 writes.
    let started = Instant::now();
    let (mut written, mut failures) = (0u64, Vec::new());
    while written < 200 && started.elapsed() < Duration::from_secs(60) {
        match store.write_block(&format!("sv/{}/d/b", written % 50), b"block") {
            Ok(()) => written += 1,
            Err(e) => failures.push(e.to_string()),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let deleted = deleter.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert_eq!(written, 200, "only {written} writes in a minute");
    let left = store.list_by_prefix("sv/").unwrap().len() as u64;
    assert!(deleted + left <= written);
    // Each block is written once: after the first cross-device rename, a write into
    // the subvolume makes its temporary file there directly.
    let log = dir.path().join("strace.log");
    let child = support::child_command("subvolume_writer_child", "subvolume-writer");
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-qq",
        "-e",
        "trace=fdatasync,renameat,renameat2",
        "-o",
    ])
    .arg(&log)
    .arg(child.get_program())
    .args(child.get_args())
    .env("FIELD_BASE", &base);
    for (k, v) in child.get_envs() {
        cmd.env(k, v.unwrap());
    }
    let status = cmd.status().expect("strace must be installed");
    assert!(status.success(), "the traced child failed");
    let trace = std::fs::read_to_string(&log).unwrap();
    let syncs = trace.lines().filter(|l| l.contains("fdatasync(")).count();
    let crossed = trace.lines().filter(|l| l.contains("EXDEV")).count();
    assert!(crossed <= 1, "{crossed} renames crossed devices:\n{trace}");
    assert!(syncs <= 21, "{syncs} data syncs for 20 blocks:\n{trace}");
}

/// Child: 20 writes into the subvolume `sv` under `FIELD_BASE`, counting the data syncs
/// the store makes with strace from outside (see the test above).
#[test]
fn subvolume_writer_child() {
    if child_role().as_deref() != Some("subvolume-writer") {
        return;
    }
    let base = PathBuf::from(std::env::var("FIELD_BASE").unwrap());
    let store = open(&base);
    for i in 0..20 {
        store
            .write_block(&format!("sv/once/{i}"), &[7u8; 4096])
            .unwrap();
    }
}

/// A FIFO at a key is never opened for reading, so a process waiting to write into it
/// stays waiting (opening it would let that writer on, and it would die of SIGPIPE when
/// the store closed it): the type is looked at before anything is opened.
#[test]
fn reading_a_fifo_key_does_not_open_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.write_block("f/real", b"x").unwrap();
    let fifo = dir.path().join("f/pipe");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let writer = {
        let fifo = fifo.clone();
        // Blocks in open(O_WRONLY) until someone opens the FIFO for reading.
        std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(fifo).is_ok())
    };
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(kind(store.read_block("f/pipe")), Some(ErrorKind::NotFound));
    assert_eq!(
        kind(store.read_block_range("f/pipe", 0, 8)),
        Some(ErrorKind::NotFound)
    );
    let mut buf = [0u8; 8];
    assert_eq!(
        kind(store.read_block_range_into("f/pipe", 0, &mut buf)),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(kind(store.block_size("f/pipe")), Some(ErrorKind::NotFound));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !writer.is_finished(),
        "a read opened the FIFO and let its writer on"
    );
    // Let the writer go.
    let _reader = std::fs::File::open(&fifo).unwrap();
    assert!(writer.join().unwrap());
}

/// Child: a fresh process whose threads start their first large checked reads; it
/// forks `FIELD_DELAY_US` after the first starts, and the forked child opens its own
/// store and reads the same block. Prints whether the child read it, hung (killed by
/// its alarm) or read wrong bytes.
#[test]
fn fork_during_first_reads_child() {
    if child_role().as_deref() != Some("fork-during-first-reads") {
        return;
    }
    let base = PathBuf::from(std::env::var("FIELD_BASE").unwrap());
    let delay = Duration::from_micros(std::env::var("FIELD_DELAY_US").unwrap().parse().unwrap());
    let store = Arc::new(open(&base));
    let data: Arc<Vec<u8>> = Arc::new(
        (0..BLOCK_SIZE / 4)
            .map(|i| (i * 13 + i / 4099) as u8)
            .collect(),
    );
    store.write_block("big/chunk-0/block-0", &data).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (store, stop, data, started) =
                (store.clone(), stop.clone(), data.clone(), started.clone());
            std::thread::spawn(move || {
                started.store(true, Ordering::Release);
                while !stop.load(Ordering::Relaxed) {
                    assert!(store.read_block("big/chunk-0/block-0").unwrap() == *data);
                }
            })
        })
        .collect();
    while !started.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let at = Instant::now();
    while at.elapsed() < delay {
        std::hint::spin_loop();
    }
    // SAFETY: the child opens a store, reads and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        unsafe { libc::alarm(3) };
        let code = match FsStore::open(FsConfig::new(&base)) {
            Ok(store) => match store.read_block("big/chunk-0/block-0") {
                Ok(read) if read == *data => 0,
                _ => 2,
            },
            Err(_) => 3,
        };
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }
    let outcome = if libc::WIFSIGNALED(status) {
        "hung"
    } else if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        "ok"
    } else {
        "wrong"
    };
    println!("RESULT child {outcome}");
}

/// A daemon forking (to run a helper program) while its threads make their first
/// large checked reads: every forked child that opens its own store reads its block,
/// none waits for ever on state a parent thread was setting up at the fork. Each try
/// is a fresh process, so the reads really are its first.
#[test]
fn a_child_forked_during_the_first_large_reads_reads_its_block() {
    let dir = tempfile::tempdir().unwrap();
    let mut outcomes = std::collections::BTreeMap::<String, Vec<u64>>::new();
    for attempt in 0..30u64 {
        let base = dir.path().join(format!("s{attempt}"));
        let delay = attempt * 7 % 150;
        let out = child_command("fork_during_first_reads_child", "fork-during-first-reads")
            .env("FIELD_BASE", &base)
            .env("FIELD_DELAY_US", delay.to_string())
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "the forking process failed: {stdout}");
        outcomes
            .entry(result_of(&stdout, "child"))
            .or_default()
            .push(delay);
    }
    assert_eq!(
        outcomes.keys().collect::<Vec<_>>(),
        ["ok"],
        "children forked that many µs into the first reads: {outcomes:?}"
    );
}
