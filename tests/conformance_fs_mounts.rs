//! The conformance suite against `FsStore` on the filesystems users run it on besides
//! the test machine's own: loop-mounted xfs and btrfs, and an overlayfs whose lower
//! layer was seeded with blocks, as a container image's would be. Needs root, mount(8),
//! mkfs.xfs (xfsprogs) and mkfs.btrfs (btrfs-progs), as CI has.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use blockstore::conformance::Target;
use blockstore::{BlockStore, FsConfig, FsStore};
use support::{loop_fs, mount_or_explain, Mount};

/// A loop-mounted filesystem shared by every case of this binary, unmounted at exit.
struct Shared {
    root: PathBuf,
    _dir: tempfile::TempDir,
}

static MOUNTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

extern "C" fn unmount_all() {
    if let Ok(mounts) = MOUNTS.lock() {
        for path in mounts.iter() {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(path)
                .status();
        }
    }
}

/// Keeps `mount` mounted until the process exits.
fn keep_until_exit(mount: Mount) -> PathBuf {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| unsafe {
        libc::atexit(unmount_all);
    });
    let path = mount.path.clone();
    MOUNTS.lock().unwrap().push(path.clone());
    std::mem::forget(mount);
    path
}

fn shared(
    kind: &'static str,
    mib: u64,
    cell: &'static OnceLock<Option<Shared>>,
) -> Option<&'static Path> {
    cell.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mount = mount_or_explain(loop_fs(dir.path(), kind, mib), kind)?;
        Some(Shared {
            root: keep_until_exit(mount),
            _dir: dir,
        })
    })
    .as_ref()
    .map(|s| s.root.as_path())
}

/// A fresh store in its own directory on the shared mount; `None` where mounting is
/// impossible and `BLOCKSTORE_NO_MOUNT=1` says so.
fn store_on(root: Option<&Path>) -> Target {
    static N: AtomicUsize = AtomicUsize::new(0);
    let Some(root) = root else {
        return skipped();
    };
    let base = root.join(format!("case-{}", N.fetch_add(1, Ordering::Relaxed)));
    let store = FsStore::open(FsConfig::new(&base)).expect("open FsStore");
    Target::new(Arc::new(store), true)
}

/// Where mounts are impossible (and that is declared), the cases run on a plain
/// temporary directory rather than not at all.
fn skipped() -> Target {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = FsStore::open(FsConfig::new(dir.path())).expect("open FsStore");
    Target::new(Arc::new(store), true).keep(dir)
}

fn xfs() -> Target {
    static CELL: OnceLock<Option<Shared>> = OnceLock::new();
    // mkfs.xfs refuses filesystems under 300 MiB; the image is sparse.
    store_on(shared("xfs", 320, &CELL))
}

fn btrfs() -> Target {
    static CELL: OnceLock<Option<Shared>> = OnceLock::new();
    store_on(shared("btrfs", 256, &CELL))
}

/// Blocks of a "container image": the lower layer holds these, so the store's own
/// directories on the merged view are copied up, whited out and made opaque.
const SEEDED: &[&str] = &[
    "a/b/c",
    "a/x",
    "k",
    "p/q",
    "export/path/file/chunk-0/block-0",
    "fork/k",
    "ab/c",
];

/// An overlayfs per case: a lower layer seeded with blocks (and the internal area an
/// earlier store left), an upper layer on tmpfs-like scratch; the store is opened on
/// the merged view and the seeded blocks are deleted through it, so the case starts
/// empty with every seeded directory already whited out or copied up.
fn overlay() -> Target {
    let dir = tempfile::tempdir().expect("temporary directory");
    let lower = dir.path().join("lower");
    for key in SEEDED {
        let path = lower.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("seeded {key}")).unwrap();
    }
    std::fs::create_dir_all(lower.join(".blockstore/w-image-1")).unwrap();
    std::fs::write(lower.join(".blockstore/w-image-1.lock"), b"").unwrap();
    for sub in ["upper", "work", "merged"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        dir.path().join("upper").display(),
        dir.path().join("work").display()
    );
    let merged = dir.path().join("merged");
    let Some(mount) = mount_or_explain(
        Mount::new(&merged, &["-t", "overlay", "overlay", "-o", &options]),
        "overlayfs",
    ) else {
        return skipped();
    };
    let store = FsStore::open(FsConfig::new(&merged)).expect("open FsStore on overlayfs");
    for key in SEEDED {
        assert_eq!(
            store
                .read_block(key)
                .expect("a seeded block reads through the overlay"),
            format!("seeded {key}").into_bytes()
        );
    }
    assert_eq!(store.delete_by_prefix("").unwrap(), SEEDED.len() as u64);
    // Close the store before the mount goes, and the mount before the directory.
    Target::new(Arc::new(store), true).keep((mount, dir))
}

mod on_xfs {
    use super::*;
    blockstore::conformance_suite!(xfs);
}

mod on_btrfs {
    use super::*;
    blockstore::conformance_suite!(btrfs);
}

mod on_overlayfs {
    use super::*;
    blockstore::conformance_suite!(overlay);
}
