//! What the contract leaves to the filesystem backend: its layout on disk, the internal
//! area, links and odd files, opening, clean-up of empty directories, and a stress run.

mod support;

use std::collections::HashMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use blockstore::{BlockStore, ErrorKind, FsConfig, FsStore, BLOCK_SIZE};
use support::{temp_files, tree, tree_outside_internal};

fn open(path: &Path) -> FsStore {
    FsStore::open(FsConfig::new(path)).expect("open store")
}

fn kind<T>(r: blockstore::Result<T>) -> Option<ErrorKind> {
    r.err().map(|e| e.kind())
}

#[test]
fn block_is_the_file_at_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .write_block("export/f/chunk-0/block-3", b"abc")
        .unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("export/f/chunk-0/block-3")).unwrap(),
        b"abc"
    );
    let seg = "s".repeat(255);
    let key = format!("deep/{seg}");
    store.write_block(&key, b"long name").unwrap();
    assert_eq!(std::fs::read(dir.path().join(&key)).unwrap(), b"long name");
    assert!(
        temp_files(dir.path()).is_empty(),
        "{:?}",
        temp_files(dir.path())
    );
}

#[test]
fn symlinks_are_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("store");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    std::fs::write(outside.join("sub/file"), b"outside file").unwrap();
    let store = open(&base);
    store.write_block("real/block", b"inside").unwrap();
    symlink(&outside, base.join("dirlink")).unwrap();
    symlink(outside.join("secret"), base.join("filelink")).unwrap();
    symlink(outside.join("secret"), base.join("real/filelink")).unwrap();
    symlink("..", base.join("real/up")).unwrap();

    for key in [
        "dirlink/secret",
        "dirlink/sub/file",
        "filelink",
        "real/filelink",
        "real/up/real/block",
    ] {
        assert_eq!(
            kind(store.read_block(key)),
            Some(ErrorKind::NotFound),
            "read {key}"
        );
        assert_eq!(
            kind(store.read_block_range(key, 0, 1)),
            Some(ErrorKind::NotFound),
            "range {key}"
        );
        let mut buf = [0u8; 4];
        assert_eq!(
            kind(store.read_block_range_into(key, 0, &mut buf)),
            Some(ErrorKind::NotFound),
            "into {key}"
        );
        assert_eq!(
            kind(store.block_size(key)),
            Some(ErrorKind::NotFound),
            "size {key}"
        );
        assert_eq!(
            kind(store.write_block(key, b"evil")),
            Some(ErrorKind::Conflict),
            "write {key}"
        );
        store.delete_block(key).unwrap();
    }
    for key in [
        "dirlink/new",
        "dirlink/sub/new",
        "filelink/below",
        "real/up/new",
    ] {
        assert_eq!(
            kind(store.write_block(key, b"evil")),
            Some(ErrorKind::Conflict),
            "write {key}"
        );
    }
    assert_eq!(
        store.list_by_prefix("").unwrap(),
        vec!["real/block".to_string()]
    );
    assert_eq!(store.delete_by_prefix("").unwrap(), 1);
    // Nothing outside changed; the links themselves are left alone.
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
    assert_eq!(
        std::fs::read(outside.join("sub/file")).unwrap(),
        b"outside file"
    );
    assert_eq!(tree(&outside), vec!["secret", "sub", "sub/file"]);
    assert!(base.join("dirlink").symlink_metadata().is_ok());
    assert!(base.join("filelink").symlink_metadata().is_ok());
}

#[test]
fn odd_files_are_skipped_and_do_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.write_block("ok/a", b"a").unwrap();
    // A FIFO would block an open without O_NONBLOCK.
    let fifo = dir.path().join("ok/fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    assert_eq!(kind(store.read_block("ok/fifo")), Some(ErrorKind::NotFound));
    assert_eq!(
        kind(store.read_block_range("ok/fifo", 0, 10)),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(kind(store.block_size("ok/fifo")), Some(ErrorKind::NotFound));
    assert_eq!(
        kind(store.write_block("ok/fifo", b"x")),
        Some(ErrorKind::Conflict)
    );
    // Names that are not valid keys are skipped by listings.
    std::fs::write(dir.path().join("ok/bad\nname"), b"x").unwrap();
    std::fs::create_dir(dir.path().join("ok/bad\tdir")).unwrap();
    std::fs::write(dir.path().join("ok/bad\tdir/f"), b"x").unwrap();
    assert_eq!(store.list_by_prefix("").unwrap(), vec!["ok/a".to_string()]);
    assert_eq!(store.delete_by_prefix("ok/").unwrap(), 1);
    assert!(dir.path().join("ok/fifo").exists());
}

#[test]
fn foreign_file_larger_than_a_block_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    std::fs::create_dir(dir.path().join("f")).unwrap();
    std::fs::write(dir.path().join("f/huge"), vec![7u8; BLOCK_SIZE + 10]).unwrap();
    let e = store.read_block("f/huge").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend, "{e}");
    assert!(e.to_string().contains("BLOCK_SIZE"), "{e}");
    assert_eq!(kind(store.block_size("f/huge")), Some(ErrorKind::Backend));
    assert_eq!(
        kind(store.read_block_range("f/huge", 0, u64::MAX)),
        Some(ErrorKind::Backend)
    );
}

#[test]
fn open_refuses_missing_or_non_directory_base() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = FsConfig::new(dir.path().join("missing"));
    config.create_dir = false;
    let e = FsStore::open(config).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let e = FsStore::open(FsConfig::new(dir.path().join("file"))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("not a directory"), "{e}");
    // A base path that runs through a file is as much a configuration mistake, whether
    // or not the store may create directories; nothing is created.
    for create_dir in [false, true] {
        let mut config = FsConfig::new(dir.path().join("file/store"));
        config.create_dir = create_dir;
        let e = FsStore::open(config).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "create_dir {create_dir}: {e}");
        assert!(e.to_string().contains("not a directory"), "{e}");
    }
    assert_eq!(std::fs::read(dir.path().join("file")).unwrap(), b"x");
}

#[test]
fn open_creates_base_with_dir_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = FsConfig::new(dir.path().join("a/b/store"));
    config.dir_mode = 0o750;
    let store = FsStore::open(config).unwrap();
    let mode = std::fs::metadata(dir.path().join("a/b/store"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o750);
    store.health_check().unwrap();
}

#[test]
fn empty_directories_are_removed_up_to_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    symlink(&real, dir.path().join("via-link")).unwrap();
    let relative = {
        let cwd = std::env::current_dir().unwrap();
        pathdiff(&real, &cwd)
    };
    let bases = [
        real.clone(),
        format!("{}/", real.display()).into(),
        dir.path().join("via-link"),
        relative,
    ];
    for base in bases {
        let store = open(&base);
        store.write_block("a/b/c/d", b"1").unwrap();
        store.write_block("a/x", b"2").unwrap();
        store.delete_block("a/b/c/d").unwrap();
        assert_eq!(
            tree_outside_internal(&real),
            vec!["a", "a/x"],
            "base {}",
            base.display()
        );
        store.delete_block("a/x").unwrap();
        assert!(
            tree_outside_internal(&real).is_empty(),
            "base {}",
            base.display()
        );
        assert!(real.is_dir(), "the base itself is never removed");
        store.write_block("p/q/r", b"3").unwrap();
        assert_eq!(store.delete_by_prefix("").unwrap(), 1);
        assert!(tree_outside_internal(&real).is_empty());
        store.health_check().unwrap();
        store.write_block("p/q/r", b"again").unwrap();
        store.delete_block("p/q/r").unwrap();
    }
}

/// `target` relative to `from` (both absolute), with `..` steps.
fn pathdiff(target: &Path, from: &Path) -> std::path::PathBuf {
    let t: Vec<_> = target.components().collect();
    let f: Vec<_> = from.components().collect();
    let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut out = std::path::PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

#[test]
fn a_second_store_does_not_disturb_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    first.write_block("k/1", b"one").unwrap();
    let area_before: Vec<String> = tree(&dir.path().join(".blockstore"));
    let second = open(dir.path());
    // The first store's work directory and lock are still there and usable.
    let area_after = tree(&dir.path().join(".blockstore"));
    for entry in &area_before {
        assert!(
            area_after.contains(entry),
            "{entry} was removed by the second open"
        );
    }
    first.write_block("k/2", b"two").unwrap();
    second.write_block("k/3", b"three").unwrap();
    assert_eq!(second.list_by_prefix("k/").unwrap().len(), 3);
    drop(first);
    drop(second);
    assert!(
        tree(&dir.path().join(".blockstore")).is_empty(),
        "closed stores leave nothing"
    );
}

#[test]
fn abandoned_work_directories_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let area = dir.path().join(".blockstore");
    std::fs::create_dir_all(area.join("w-dead")).unwrap();
    std::fs::write(area.join("w-dead.lock"), b"").unwrap();
    std::fs::write(area.join("w-dead/t0"), b"half a block").unwrap();
    std::fs::create_dir_all(area.join("w-nolock")).unwrap();
    std::fs::write(area.join("w-nolock/t3"), b"x").unwrap();
    let store = open(dir.path());
    let left = tree(&area);
    assert!(
        !left
            .iter()
            .any(|p| p.contains("dead") || p.contains("nolock")),
        "{left:?}"
    );
    store.write_block("k", b"v").unwrap();
}

#[test]
fn write_over_existing_directory_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.write_block("a/b/c", b"c").unwrap();
    let before = tree_outside_internal(dir.path());
    assert_eq!(
        kind(store.write_block("a/b", b"x")),
        Some(ErrorKind::Conflict)
    );
    assert_eq!(
        kind(store.write_block("a/b/c/d", b"x")),
        Some(ErrorKind::Conflict)
    );
    assert_eq!(tree_outside_internal(dir.path()), before);
    assert!(temp_files(dir.path()).is_empty());
}

/// Eight threads mix writes, overwrites, reads, deletes and prefix deletes in shared
/// directories for a few seconds; each checks its own keys against a model.
#[test]
fn stress_mixed_operations_lose_nothing() {
    const THREADS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn BlockStore> = Arc::new(open(dir.path()));
    // A number of operations per thread, bounded in time only against a hang.
    let deadline = Instant::now() + Duration::from_secs(120);
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (store, start) = (store.clone(), start.clone());
            std::thread::spawn(move || {
                let mut model: HashMap<String, Vec<u8>> = HashMap::new();
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ t as u64;
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                start.wait();
                let mut ops = 0u64;
                while ops < 1000 && Instant::now() < deadline {
                    let r = next();
                    let d = r % 4;
                    let key = format!("s/{d}/{}/t{t}-{}", r % 3, (r >> 8) % 6);
                    match (r >> 16) % 10 {
                        0..=3 => {
                            let len = ((r >> 24) % 20_000) as usize;
                            let value: Vec<u8> = (0..len).map(|i| (i as u64 ^ r) as u8).collect();
                            store.write_block(&key, &value).expect("write");
                            model.insert(key, value);
                        }
                        4..=6 => match model.get(&key) {
                            Some(v) => {
                                assert_eq!(&store.read_block(&key).expect("read"), v, "{key}")
                            }
                            None => assert_eq!(
                                kind(store.read_block(&key)),
                                Some(ErrorKind::NotFound),
                                "{key}"
                            ),
                        },
                        7 | 8 => {
                            store.delete_block(&key).expect("delete");
                            model.remove(&key);
                        }
                        _ => {
                            let prefix = format!("s/{d}/{}/t{t}-", r % 3);
                            let expected =
                                model.keys().filter(|k| k.starts_with(&prefix)).count() as u64;
                            assert_eq!(
                                store.delete_by_prefix(&prefix).expect("delete prefix"),
                                expected
                            );
                            model.retain(|k, _| !k.starts_with(&prefix));
                        }
                    }
                    ops += 1;
                }
                for (key, value) in &model {
                    assert_eq!(&store.read_block(key).expect("final read"), value, "{key}");
                }
                (ops, model.len())
            })
        })
        .collect();
    let mut total_ops = 0;
    let mut kept = 0;
    for h in handles {
        let (ops, n) = h.join().expect("stress thread panicked");
        total_ops += ops;
        kept += n;
    }
    assert_eq!(
        total_ops,
        1000 * THREADS as u64,
        "only {total_ops} operations ran"
    );
    assert_eq!(store.list_by_prefix("s/").unwrap().len(), kept);
    assert_eq!(store.delete_by_prefix("").unwrap(), kept as u64);
    assert!(
        tree_outside_internal(dir.path()).is_empty(),
        "{:?}",
        tree_outside_internal(dir.path())
    );
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn health_reports_a_missing_or_replaced_base() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("store");
    let store = open(&base);
    store.health_check().unwrap();
    std::fs::remove_dir_all(&base).unwrap();
    let e = store.health_check().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("missing"), "{e}");
    std::fs::create_dir(&base).unwrap();
    let e = store.health_check().unwrap_err();
    assert!(e.to_string().contains("replaced"), "{e}");
}

/// The descriptors a newly started child process holds, as `ls -l /proc/self/fd` shows.
fn fds_of_a_child() -> String {
    let out = std::process::Command::new("ls")
        .args(["-l", "/proc/self/fd/"])
        .output()
        .expect("ls");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A daemon's child processes inherit none of a live store's descriptors: not the base,
/// the internal area, nor the lock that marks the store's work directory as in use.
#[test]
fn child_processes_inherit_no_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.write_block("d/k", b"x").unwrap();
    let listing = fds_of_a_child();
    let base = store.base_path().display().to_string();
    assert!(!listing.is_empty());
    assert!(
        !listing.contains(&base),
        "the child holds descriptors below {base}:\n{listing}"
    );
    // The check can see a leak: `dup` makes a descriptor without close-on-exec.
    let file = std::fs::File::open(dir.path().join("d/k")).unwrap();
    let leaked = rustix::io::dup(&file).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&leaked);
    let listing = fds_of_a_child();
    assert!(
        listing.contains(&format!("{fd} -> {base}/d/k")),
        "a deliberate leak of fd {fd} is not seen:\n{listing}"
    );
}

/// Some filesystems (ext4 without `filetype`, older XFS, some network filesystems) do not
/// say in a directory listing what kind each entry is; listings then ask each entry,
/// and still skip links and odd files.
#[test]
fn listing_works_where_directories_do_not_record_file_types() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("ext4.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(16 << 20))
        .unwrap();
    let mkfs = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "^filetype"])
        .arg(&image)
        .status()
        .expect("mkfs.ext4 (e2fsprogs) is needed");
    assert!(mkfs.success(), "mkfs.ext4 failed");
    let mnt = dir.path().join("mnt");
    let Some(_mount) = support::mount_or_explain(
        support::Mount::new(&mnt, &["-o", "loop", image.to_str().unwrap()]),
        "ext4 without file types",
    ) else {
        return;
    };
    let store = open(&mnt);
    store.write_block("a/b/k1", b"one").unwrap();
    store.write_block("a/k2", b"second").unwrap();
    symlink("b/k1", mnt.join("a/link")).unwrap();
    symlink("b", mnt.join("a/dirlink")).unwrap();
    // The premise: this directory's entries come without a type.
    let fd = rustix::fs::open(
        mnt.join("a"),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let mut entries = rustix::fs::Dir::read_from(&fd).unwrap();
    let mut seen = 0;
    while let Some(entry) = entries.read() {
        assert_eq!(
            entry.unwrap().file_type(),
            rustix::fs::FileType::Unknown,
            "ext4 without filetype reports entry types after all"
        );
        seen += 1;
    }
    assert_eq!(seen, 6, ". .. b k2 link dirlink");
    assert_eq!(store.list_by_prefix("").unwrap(), vec!["a/b/k1", "a/k2"]);
    let sizes: Vec<(String, u64)> = store
        .list_blocks("a/")
        .unwrap()
        .into_iter()
        .map(|b| (b.key, b.size))
        .collect();
    assert_eq!(sizes, vec![("a/b/k1".into(), 3), ("a/k2".into(), 6)]);
    assert_eq!(store.delete_by_prefix("a/").unwrap(), 2);
    assert!(mnt.join("a/link").symlink_metadata().is_ok());
}
