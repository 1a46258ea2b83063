//! Test support shared by the integration tests: child processes that re-run the test
//! binary, mounts that unmount themselves, and tree inspection.
#![allow(dead_code)]

pub mod damage;
#[cfg(feature = "s3")]
pub mod metadata;
pub mod model;
#[cfg(feature = "s3")]
pub mod proxy;
#[cfg(feature = "s3")]
pub mod s3;
#[cfg(feature = "s3")]
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The environment variable that tells a re-run test binary which child role to play.
pub const CHILD_ROLE: &str = "BLOCKSTORE_TEST_CHILD";

/// A command that runs the single test `entry` of this test binary as a child process,
/// with `role` set so the entry does its child work instead of returning at once.
pub fn child_command(entry: &str, role: &str) -> Command {
    let exe = std::env::current_exe().expect("current test binary");
    let mut cmd = Command::new(exe);
    cmd.args([entry, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_ROLE, role)
        .stdin(Stdio::null());
    cmd
}

/// The child role this process was started with, if any.
pub fn child_role() -> Option<String> {
    std::env::var(CHILD_ROLE).ok()
}

/// A mount that is unmounted (lazily, so a failing test cannot leave it busy) on drop.
pub struct Mount {
    pub path: PathBuf,
}

impl Mount {
    /// Runs `mount args… path`; `Err` says why mounting is not possible here.
    pub fn new(path: &Path, args: &[&str]) -> Result<Mount, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(args)
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mount {
            path: path.to_owned(),
        })
    }

    /// Remounts with extra options (e.g. `remount,bind,ro`).
    pub fn remount(&self, options: &str) -> Result<(), String> {
        let out = Command::new("mount")
            .args(["-o", options])
            .arg(&self.path)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fails loudly when a test cannot set up a mount, unless the environment says mounts
/// are impossible here (`BLOCKSTORE_NO_MOUNT=1`), in which case it says so on stderr.
pub fn mount_or_explain(result: Result<Mount, String>, test: &str) -> Option<Mount> {
    match result {
        Ok(m) => Some(m),
        Err(why) if std::env::var("BLOCKSTORE_NO_MOUNT").as_deref() == Ok("1") => {
            eprintln!("!!! {test}: NOT RUN: mounting is impossible here ({why}); BLOCKSTORE_NO_MOUNT=1 is set");
            None
        }
        Err(why) => panic!(
            "{test}: cannot mount ({why}). These tests need root and mount(8); \
             set BLOCKSTORE_NO_MOUNT=1 to skip them explicitly"
        ),
    }
}

/// Every path below `root` (files, directories and links), relative, sorted.
pub fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            out.push(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Paths below `root` outside the internal area.
pub fn tree_outside_internal(root: &Path) -> Vec<String> {
    tree(root)
        .into_iter()
        .filter(|p| p != ".blockstore" && !p.starts_with(".blockstore/"))
        .collect()
}

/// The temporary files in the internal area (anything but locks and work directories).
pub fn temp_files(root: &Path) -> Vec<String> {
    tree(root)
        .into_iter()
        .filter(|p| p.starts_with(".blockstore/") && p.matches('/').count() == 2)
        .collect()
}

/// A filesystem of type `kind` (`ext4`, `xfs`, `btrfs`), made in a sparse image of
/// `mib` MiB inside `dir` and loop-mounted at `dir/mnt`; unmounted (and its loop device
/// released) on drop. `Err` says why it could not be made here.
pub fn loop_fs(dir: &Path, kind: &str, mib: u64) -> Result<Mount, String> {
    loop_fs_with(dir, kind, mib, &[])
}

/// As [`loop_fs`], with more `mkfs` options (e.g. `-I 128` for ext4 inodes whose
/// times move once a second).
pub fn loop_fs_with(dir: &Path, kind: &str, mib: u64, options: &[&str]) -> Result<Mount, String> {
    let image = dir.join(format!("{kind}.img"));
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(mib << 20))
        .map_err(|e| format!("cannot make the image: {e}"))?;
    let mkfs = format!("mkfs.{kind}");
    let mut cmd = Command::new(&mkfs);
    match kind {
        // No blocks reserved for root: "full" means full for every process.
        "ext4" => cmd.args(["-q", "-F", "-m", "0", "-b", "4096"]),
        "xfs" => cmd.args(["-q", "-f"]),
        _ => cmd.args(["-q", "-f"]),
    };
    let out = cmd
        .args(options)
        .arg(&image)
        .output()
        .map_err(|e| format!("cannot run {mkfs} (install its package): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{mkfs} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Mount::new(&dir.join("mnt"), &["-o", "loop", image.to_str().unwrap()])
}

/// One loop-mounted filesystem of each of `kinds`, `mib` MiB each, made in folders of
/// `dir` named after them; `None` (with the reason printed) when any cannot be made.
pub fn loop_mounts(
    dir: &Path,
    kinds: &[&'static str],
    mib: u64,
) -> Option<Vec<(&'static str, Mount)>> {
    let mut mounts = Vec::new();
    for &kind in kinds {
        let sub = dir.join(kind);
        std::fs::create_dir_all(&sub).ok()?;
        mounts.push((kind, mount_or_explain(loop_fs(&sub, kind, mib), kind)?));
    }
    Some(mounts)
}

/// Runs `f` on another thread and waits at most `secs` seconds for it: a call that
/// hangs fails the test instead of hanging it.
pub fn within<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what} did not return within {secs} s"))
}
