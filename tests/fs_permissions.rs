//! Directories get exactly `dir_mode` and files exactly `file_mode`, whatever the umask.
//! One test in its own binary: the umask is process-wide.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use blockstore::{BlockStore, FsConfig, FsStore};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn exact_modes_under_restrictive_and_permissive_umask() {
    for (umask, dir_mode, file_mode) in [
        (0o077, 0o755, 0o644),
        (0o000, 0o750, 0o640),
        (0o022, 0o775, 0o664),
    ] {
        let old = unsafe { libc::umask(umask) };
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("store");
        let mut config = FsConfig::new(&base);
        config.dir_mode = dir_mode;
        config.file_mode = file_mode;
        let store = FsStore::open(config).unwrap();
        store.write_block("a/b/c/block", b"x").unwrap();
        store.write_block("a/b/c/block", b"overwritten").unwrap();
        store.write_block("top", b"y").unwrap();
        unsafe { libc::umask(old) };
        let what = format!("umask {umask:o}");
        assert_eq!(mode(&base), dir_mode, "{what}: base");
        for d in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&base.join(d)), dir_mode, "{what}: {d}");
        }
        assert_eq!(mode(&base.join("a/b/c/block")), file_mode, "{what}: block");
        assert_eq!(mode(&base.join("top")), file_mode, "{what}: top");
    }
}
