//! Durability order, observed with strace: a write sets the checksum attribute on the
//! temporary file and syncs it (data and attribute: `fsync`), renames it,
//! then syncs its directory and every new directory's parent, before returning; a delete
//! syncs the directory after unlinking.

mod support;

use std::process::Command;

use blockstore::{BlockStore, FsConfig, FsStore};
use support::{child_command, child_role};

#[test]
fn durability_child() {
    let Some(role) = child_role() else { return };
    let dir = std::env::var("DUR_DIR").unwrap();
    let mut config = FsConfig::new(&dir);
    config.fsync = role == "fsync-on";
    let store = FsStore::open(config).unwrap();
    store.write_block("dur/a/b/block", &[42u8; 10_000]).unwrap();
    store.write_block("dur/a/b/second", &[7u8; 100]).unwrap();
    store.delete_block("dur/a/b/block").unwrap();
    store.delete_block("dur/a/b/second").unwrap();
}

/// The traced system calls of one child run, as lines `syscall(args) = ret`.
fn trace(role: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("strace.log");
    let store_dir = dir.path().join("store");
    let child = child_command("durability_child", role);
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-qq",
        "-e",
        "trace=openat,openat2,fdatasync,fsync,fsetxattr,renameat,renameat2,mkdirat,unlinkat",
        "-o",
    ])
    .arg(&log)
    .arg(child.get_program())
    .args(child.get_args())
    .env("DUR_DIR", &store_dir);
    for (k, v) in child.get_envs() {
        cmd.env(k, v.unwrap());
    }
    let status = cmd
        .status()
        .expect("strace must be installed (apt-get install strace)");
    assert!(status.success(), "traced child failed");
    let text = std::fs::read_to_string(&log).unwrap();
    // Strip the pid column; keep only the calls from the creation of the write's
    // temporary file on, so opening the store does not count.
    let calls: Vec<String> = text
        .lines()
        .map(|l| {
            l.split_once(' ')
                .map_or(l, |(_, rest)| rest)
                .trim()
                .to_owned()
        })
        .collect();
    let start = calls
        .iter()
        .position(|c| is_temp_create(c))
        .unwrap_or_else(|| panic!("no temporary file created:\n{text}"));
    calls[start..].to_vec()
}

fn is_temp_create(call: &str) -> bool {
    call.starts_with("openat(") && call.contains("O_CREAT") && call.contains("\"t0\"")
}

fn ret_fd(call: &str) -> String {
    call.rsplit("= ").next().unwrap().trim().to_owned()
}

fn first_arg(call: &str) -> String {
    call.split_once('(')
        .unwrap()
        .1
        .split([',', ')'])
        .next()
        .unwrap()
        .trim()
        .to_owned()
}

/// Where the first call naming `name` that starts with `syscall` is, from `from` on.
fn find(calls: &[String], from: usize, syscall: &str, name: &str) -> usize {
    calls[from..]
        .iter()
        .position(|c| c.starts_with(syscall) && c.contains(&format!("\"{name}\"")))
        .map(|i| from + i)
        .unwrap_or_else(|| panic!("no {syscall} of {name}:\n{}", calls.join("\n")))
}

fn fsyncs(calls: &[String]) -> usize {
    calls.iter().filter(|c| c.starts_with("fsync(")).count()
}

#[test]
fn write_syncs_file_then_renames_then_syncs_directories() {
    let calls = trace("fsync-on");
    let dump = calls.join("\n");
    let mkdirs = calls.iter().filter(|c| c.starts_with("mkdirat(")).count();
    assert_eq!(mkdirs, 3, "dur, a, b are created, once:\n{dump}");
    let temp_open = calls.iter().position(|c| is_temp_create(c)).unwrap();
    let temp_fd = ret_fd(&calls[temp_open]);
    // The checksum record is inode metadata, which fdatasync may leave unwritten: the
    // temporary file gets it first, then a full fsync.
    let sums = calls
        .iter()
        .position(|c| {
            c.starts_with("fsetxattr(")
                && first_arg(c) == temp_fd
                && c.contains("user.blockstore.sums")
        })
        .unwrap_or_else(|| panic!("temporary file fd {temp_fd} got no checksums:\n{dump}"));
    let data_sync = calls
        .iter()
        .position(|c| c.starts_with("fsync(") && first_arg(c) == temp_fd)
        .unwrap_or_else(|| panic!("temporary file fd {temp_fd} never synced:\n{dump}"));
    assert!(sums < data_sync, "checksums set before the sync:\n{dump}");
    let rename = find(&calls, 0, "rename", "block");
    let second = find(&calls, rename, "openat(", "t1");
    let second_rename = find(&calls, second, "rename", "second");
    let unlink = find(&calls, second_rename, "unlinkat(", "block");
    let unlink_second = find(&calls, unlink, "unlinkat(", "second");
    assert!(
        temp_open < data_sync && data_sync < rename,
        "file synced before the rename:\n{dump}"
    );
    // The block's directory, then the parents of the three new directories: b in a,
    // a in dur, dur in the base.
    assert_eq!(
        fsyncs(&calls[rename..second]),
        4,
        "directory syncs after the first write:\n{dump}"
    );
    // Those directories are durable now: the second write syncs only its own.
    assert_eq!(
        fsyncs(&calls[second_rename..unlink]),
        1,
        "directory syncs after the second write:\n{dump}"
    );
    // A delete syncs the directory; the last one also removes b, a and dur, and syncs
    // the base that held the last of them.
    assert_eq!(
        fsyncs(&calls[unlink..unlink_second]),
        1,
        "the first delete syncs b:\n{dump}"
    );
    assert_eq!(
        fsyncs(&calls[unlink_second..]),
        2,
        "the last delete syncs b and the base:\n{dump}"
    );
}

#[test]
fn without_fsync_nothing_is_synced() {
    let calls = trace("fsync-off");
    let syncs: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("fsync(") || c.starts_with("fdatasync("))
        .collect();
    assert!(syncs.is_empty(), "fsync = false must not sync: {syncs:?}");
    assert!(calls
        .iter()
        .any(|c| c.starts_with("rename") && c.contains("\"block\"")));
}
