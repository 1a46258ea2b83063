//! The blockfs example mounted for real (root and /dev/fuse needed, as in CI), on the
//! filesystem backend and on S3 (moto, or the server BLOCKSTORE_S3_ENDPOINT names):
//! `cp` and `cmp` of a 64 MiB file, `tar` of 200 small files in and out, an unmount and
//! a remount that still show the same bytes, and no block left that the manifest does
//! not account for.
#![cfg(feature = "fuse")]

#[path = "../../tests/support/s3.rs"]
mod s3_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use blockstore::{parse_block_key, BlockStore, Config, BLOCK_SIZE};

/// The example's binary, built by `cargo test` next to this test's own.
fn blockfs_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(Path::parent).unwrap();
    let binary = debug.join("examples/blockfs");
    assert!(
        binary.exists(),
        "{} is not built (cargo test --features fuse builds it)",
        binary.display()
    );
    binary
}

fn mounted(mountpoint: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let shown = mountpoint.display().to_string();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(shown.as_str()))
}

/// A running blockfs; unmounted (and waited for) on drop.
struct Mounted {
    child: Child,
    mountpoint: PathBuf,
}

impl Mounted {
    fn new(config: &Path, mountpoint: &Path) -> Option<Mounted> {
        if !Path::new("/dev/fuse").exists() {
            if std::env::var("BLOCKSTORE_NO_MOUNT").as_deref() == Ok("1") {
                eprintln!("!!! blockfs: NOT RUN: no /dev/fuse (BLOCKSTORE_NO_MOUNT=1)");
                return None;
            }
            panic!("blockfs needs /dev/fuse and root; set BLOCKSTORE_NO_MOUNT=1 to skip");
        }
        std::fs::create_dir_all(mountpoint).unwrap();
        let child = Command::new(blockfs_binary())
            .arg(config)
            .arg(mountpoint)
            .spawn()
            .unwrap();
        let mut m = Mounted {
            child,
            mountpoint: mountpoint.to_owned(),
        };
        let started = Instant::now();
        while !mounted(mountpoint) {
            if let Ok(Some(status)) = m.child.try_wait() {
                panic!("blockfs exited before mounting: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "blockfs did not mount"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(m)
    }

    /// Unmounts and checks that blockfs ended cleanly.
    fn unmount(mut self) {
        let status = Command::new("umount")
            .arg(&self.mountpoint)
            .status()
            .unwrap();
        assert!(status.success(), "umount failed");
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "blockfs ended with {exit}");
        std::mem::forget(self);
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 200 small files in nested directories, each with its own bytes.
fn small_tree(root: &Path) {
    for i in 0..200 {
        let dir = root.join(format!("d{}/e{}", i % 7, i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        let body: Vec<u8> = (0..(i * 37 % 5000 + 1))
            .map(|j| (i * 31 + j) as u8)
            .collect();
        std::fs::write(dir.join(format!("f{i}.txt")), body).unwrap();
    }
}

/// Every block under blockfs/files belongs to a file of the manifest and lies within
/// its size.
fn no_orphans(store: &dyn BlockStore) {
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.read_block("blockfs/manifest").unwrap()).unwrap();
    let sizes: HashMap<String, u64> = manifest["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["dir"] == false)
        .map(|n| {
            (
                format!("blockfs/files/{}", n["ino"]),
                n["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let keys = store.list_by_prefix("blockfs/files/").unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        let parsed = parse_block_key(&key).unwrap();
        let size = sizes
            .get(parsed.content_id)
            .unwrap_or_else(|| panic!("{key} belongs to no file"));
        let blocks = size.div_ceil(BLOCK_SIZE as u64);
        assert!(
            parsed.block_idx < blocks,
            "{key} lies past the end of a {size}-byte file"
        );
    }
}

fn exercise(config_path: &Path, work: &Path) {
    let mnt = work.join("mnt");
    let big = work.join("big.bin");
    run(Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", big.display()))
        .args(["bs=1M", "count=64", "status=none"]));
    let src = work.join("src");
    small_tree(&src);
    let Some(fs) = Mounted::new(config_path, &mnt) else {
        return;
    };
    run(Command::new("cp").arg(&big).arg(mnt.join("big.bin")));
    run(Command::new("cmp").arg(&big).arg(mnt.join("big.bin")));
    std::fs::create_dir(mnt.join("t")).unwrap();
    run(Command::new("sh").arg("-c").arg(format!(
        "tar -C '{}' -cf - . | tar -C '{}' -xf -",
        src.display(),
        mnt.join("t").display()
    )));
    let out = work.join("out");
    std::fs::create_dir(&out).unwrap();
    run(Command::new("sh").arg("-c").arg(format!(
        "tar -C '{}' -cf - . | tar -C '{}' -xf -",
        mnt.join("t").display(),
        out.display()
    )));
    run(Command::new("diff").arg("-r").arg(&src).arg(&out));
    // A file overwritten in place and one deleted leave no stale block.
    std::fs::write(mnt.join("short.bin"), vec![1u8; 9 << 20]).unwrap();
    std::fs::write(mnt.join("short.bin"), b"now short").unwrap();
    std::fs::write(mnt.join("gone.bin"), vec![2u8; 5 << 20]).unwrap();
    std::fs::remove_file(mnt.join("gone.bin")).unwrap();
    fs.unmount();
    // Everything again from the store alone.
    let fs = Mounted::new(config_path, &mnt).unwrap();
    run(Command::new("cmp").arg(&big).arg(mnt.join("big.bin")));
    run(Command::new("diff").arg("-r").arg(&src).arg(mnt.join("t")));
    assert_eq!(std::fs::read(mnt.join("short.bin")).unwrap(), b"now short");
    assert!(!mnt.join("gone.bin").exists());
    fs.unmount();
    let config = Config::load(config_path).unwrap();
    let store = blockstore::open(&config).unwrap();
    no_orphans(&*store);
}

#[test]
fn blockfs_on_the_filesystem_backend() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("store.toml");
    std::fs::write(
        &config,
        format!(
            "[block_store]\ntype = \"filesystem\"\n[block_store.filesystem]\nbase_path = \"{}\"\n",
            work.path().join("blocks").display()
        ),
    )
    .unwrap();
    exercise(&config, work.path());
}

#[test]
fn blockfs_on_s3() {
    let work = tempfile::tempdir().unwrap();
    let c = s3_support::config();
    let _cleanup = s3_support::Cleanup(c.clone());
    let config = work.path().join("store.toml");
    std::fs::write(
        &config,
        format!(
            "[block_store]\ntype = \"s3\"\n[block_store.s3]\nbucket = \"{}\"\nendpoint = \"{}\"\nregion = \"{}\"\nforce_path_style = true\nkey_prefix = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
            c.bucket, c.endpoint, c.region, c.key_prefix, c.access_key_id, c.secret_access_key
        ),
    )
    .unwrap();
    exercise(&config, work.path());
}
