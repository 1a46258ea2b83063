//! Real faults, each giving its typed error and leaving no trace: a full filesystem (a
//! small tmpfs), a read-only mount (a read-only bind mount), and a process without
//! permission (a child dropped to uid 65534 with setpriv). Tests and CI run as root,
//! which ignores mode bits, hence the mounts and the child.

mod support;

use std::process::{Command, Stdio};

use blockstore::{BlockStore, ErrorKind, FsConfig, FsStore, BLOCK_SIZE};
use support::{
    child_command, child_role, mount_or_explain, temp_files, tree_outside_internal, Mount,
};

/// Held by the tmpfs test and by every test here that starts a process. A process
/// forked while the tmpfs test has a block open keeps that file's pages until it runs
/// `exec`, so a failed write's space can look taken for a moment after it was removed,
/// and "deleting frees the space" would fail now and then (6 in 40 runs before this).
static FORKS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn no_forks() -> std::sync::MutexGuard<'static, ()> {
    FORKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn kind<T>(r: blockstore::Result<T>) -> Option<ErrorKind> {
    r.err().map(|e| e.kind())
}

#[test]
fn full_filesystem_is_no_space_and_leaves_no_trace() {
    let _alone = no_forks();
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    let Some(_mount) = mount_or_explain(
        Mount::new(&mnt, &["-t", "tmpfs", "-o", "size=1m", "tmpfs"]),
        "full filesystem",
    ) else {
        return;
    };
    let store = FsStore::open(FsConfig::new(&mnt)).unwrap();
    store.write_block("f/old", b"old value").unwrap();
    let before = tree_outside_internal(&mnt);
    let big = vec![1u8; BLOCK_SIZE];
    let e = store.write_block("f/new", &big).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    let e = store.write_block("f/old", &big).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    assert_eq!(
        store.read_block("f/old").unwrap(),
        b"old value",
        "old value intact"
    );
    assert_eq!(
        tree_outside_internal(&mnt),
        before,
        "nothing new outside the internal area"
    );
    assert!(
        temp_files(&mnt).is_empty(),
        "no temporary file left: {:?}",
        temp_files(&mnt)
    );
    // Fill the disk, then the health check says it is full.
    let mut i = 0;
    loop {
        match store.write_block(&format!("fill/{i}"), &[0u8; 64 * 1024]) {
            Ok(()) => i += 1,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
                break;
            }
        }
        assert!(i < 100, "a 1 MiB tmpfs never filled up");
    }
    // Also the last few pages.
    while store
        .write_block(&format!("fill/small{i}"), &[0u8; 1024])
        .is_ok()
    {
        i += 1;
    }
    let e = store.health_check().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    assert!(temp_files(&mnt).is_empty());
    store.delete_by_prefix("fill/").unwrap();
    store.health_check().unwrap();
}

#[test]
fn read_only_mount_is_read_only_and_leaves_no_trace() {
    let _alone = no_forks();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let mnt = dir.path().join("ro");
    std::fs::create_dir_all(&src).unwrap();
    let Some(mount) = mount_or_explain(
        Mount::new(&mnt, &["--bind", src.to_str().unwrap()]),
        "read-only mount",
    ) else {
        return;
    };
    // Opened while writable, then the mount turns read-only under it.
    let store = FsStore::open(FsConfig::new(&mnt)).unwrap();
    store.write_block("r/k", b"before").unwrap();
    mount.remount("remount,bind,ro").expect("remount read-only");
    let before = support::tree(&src);
    assert_eq!(
        kind(store.write_block("r/k", b"after")),
        Some(ErrorKind::ReadOnly)
    );
    assert_eq!(
        kind(store.write_block("r/new/k", b"x")),
        Some(ErrorKind::ReadOnly)
    );
    assert_eq!(kind(store.health_check()), Some(ErrorKind::ReadOnly));
    assert_eq!(store.read_block("r/k").unwrap(), b"before");
    assert_eq!(store.list_by_prefix("").unwrap(), vec!["r/k".to_string()]);
    assert_eq!(
        support::tree(&src),
        before,
        "nothing changed on the read-only mount"
    );
    drop(store);
    // Opened while read-only: reads work, writes say ReadOnly.
    let mut config = FsConfig::new(&mnt);
    config.create_dir = false;
    let store = FsStore::open(config).unwrap();
    assert_eq!(store.read_block("r/k").unwrap(), b"before");
    let e = store.write_block("r/k", b"x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ReadOnly, "{e}");
    assert_eq!(kind(store.delete_block("r/k")), Some(ErrorKind::ReadOnly));
    assert_eq!(kind(store.health_check()), Some(ErrorKind::ReadOnly));
    // A prefix delete that removes nothing is an error naming what failed, never Ok(0).
    let e = store.delete_by_prefix("r/").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ReadOnly, "{e}");
    assert!(
        e.to_string()
            .contains("deleted 0, failed 1: r/k (read-only storage)"),
        "{e}"
    );
    assert_eq!(store.read_block("r/k").unwrap(), b"before");
}

/// Runs as uid 65534 against a store owned by root with mode 0o755.
#[test]
fn permission_child() {
    if child_role().as_deref() != Some("unprivileged") {
        return;
    }
    let dir = std::env::var("PERM_DIR").unwrap();
    let mut config = FsConfig::new(&dir);
    config.create_dir = false;
    let store = FsStore::open(config).unwrap();
    let report = |what: &str, r: Option<ErrorKind>| println!("RESULT {what} {r:?}");
    report("write", kind(store.write_block("p/new", b"x")));
    report("overwrite", kind(store.write_block("p/k", b"x")));
    report("delete", kind(store.delete_block("p/k")));
    report("health", kind(store.health_check()));
    report("read", kind(store.read_block("p/k")));
    report("delete-shut", kind(store.delete_block("shut/k")));
    report("read-shut", kind(store.read_block("shut/k")));
    report("list-shut", kind(store.list_by_prefix("shut/")));
    report("list-all", kind(store.list_by_prefix("")));
    report("delete-unsearchable", kind(store.delete_block("look/k")));
}

#[test]
fn unprivileged_process_gets_permission_denied() {
    let _alone = no_forks();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("store");
    std::fs::create_dir(&base).unwrap();
    let store = FsStore::open(FsConfig::new(&base)).unwrap();
    store.write_block("p/k", b"root's block").unwrap();
    store
        .write_block("shut/k", b"behind a closed door")
        .unwrap();
    store.write_block("look/k", b"seen, not reached").unwrap();
    drop(store);
    // The temporary directory itself is 0o700; let the child in, but not into `shut`.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(base.join("shut"), std::fs::Permissions::from_mode(0o700)).unwrap();
    // `look` can be opened and read, but not searched: its entries cannot be looked at.
    std::fs::set_permissions(base.join("look"), std::fs::Permissions::from_mode(0o744)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let child = child_command("permission_child", "unprivileged");
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(child.get_program())
        .args(child.get_args())
        .env("PERM_DIR", &base)
        .stderr(Stdio::inherit());
    for (k, v) in child.get_envs() {
        cmd.env(k, v.unwrap());
    }
    let out = cmd.output().expect("setpriv (util-linux) is needed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the unprivileged child failed (is the test binary readable by uid 65534?): {stdout}"
    );
    let result = |what: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("RESULT {what} ")))
            .unwrap_or_else(|| panic!("no result for {what}: {stdout}"))
            .to_owned()
    };
    assert_eq!(result("write"), "Some(PermissionDenied)");
    assert_eq!(result("overwrite"), "Some(PermissionDenied)");
    assert_eq!(result("delete"), "Some(PermissionDenied)");
    assert_eq!(result("health"), "Some(PermissionDenied)");
    assert_eq!(result("read"), "None", "reading needs no write permission");
    // A directory the process may not enter hides nothing as "absent".
    assert_eq!(result("delete-shut"), "Some(PermissionDenied)");
    assert_eq!(result("read-shut"), "Some(PermissionDenied)");
    assert_eq!(result("list-shut"), "Some(PermissionDenied)");
    assert_eq!(result("delete-unsearchable"), "Some(PermissionDenied)");
    assert_eq!(
        result("list-all"),
        "Some(PermissionDenied)",
        "a listing that cannot see everything fails rather than leave blocks out"
    );
    let store = FsStore::open(FsConfig::new(&base)).unwrap();
    assert_eq!(store.read_block("p/k").unwrap(), b"root's block");
    assert_eq!(store.read_block("shut/k").unwrap(), b"behind a closed door");
    assert_eq!(store.read_block("look/k").unwrap(), b"seen, not reached");
    assert_eq!(
        tree_outside_internal(&base),
        vec!["look", "look/k", "p", "p/k", "shut", "shut/k"]
    );
    assert!(temp_files(&base).is_empty());
}
