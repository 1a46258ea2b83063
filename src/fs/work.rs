//! The internal area: `{base}/.blockstore/`, where each open store keeps its temporary
//! files in a directory of its own, held by a lock.
//!
//! Layout: `.blockstore/w-{id}.lock` (a file held with `flock` while the store is open)
//! and `.blockstore/w-{id}/` (its temporary files, named `t{n}`, never after a key). A
//! store that opens removes only the directories whose lock nobody holds, so a CLI that
//! opens the store of a running daemon never touches the daemon's files.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use crate::key::RESERVED_NAME;

use super::sys;

/// This store's own directory in the internal area.
#[derive(Debug)]
pub(crate) struct WorkDir {
    area: OwnedFd,
    dir: OwnedFd,
    id: String,
    /// Held with `flock` as long as the store lives; opened read-only, so a read-only
    /// remount of a live store is possible.
    _lock: OwnedFd,
    next: AtomicU64,
}

impl WorkDir {
    /// Creates the internal area if needed, removes abandoned work directories, and
    /// creates and locks this store's own.
    pub(crate) fn create(base: BorrowedFd<'_>, dir_mode: u32) -> Result<WorkDir, Errno> {
        let mode = Mode::from_raw_mode(dir_mode);
        match rustix::fs::mkdirat(base, RESERVED_NAME, mode) {
            Ok(()) => {
                let area = sys::open_dir(base, RESERVED_NAME)?;
                rustix::fs::fchmod(&area, mode)?;
                sys::sync_dir(base)?;
            }
            Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        let area = sys::open_dir(base, RESERVED_NAME)?;
        remove_abandoned(area.as_fd());
        for attempt in 0..16u32 {
            let id = unique_id(attempt);
            let lock_name = format!("{id}.lock");
            let lock = sys::create_new(area.as_fd(), &lock_name, OFlags::RDONLY, 0o600);
            let lock = match lock {
                Ok(fd) => fd,
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e),
            };
            rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive)?;
            // Another store's clean-up may have taken the lock and removed the file
            // between our create and our flock: then the lock guards nothing.
            let still_ours = sys::stat_at(area.as_fd(), &lock_name)
                .ok()
                .zip(rustix::fs::fstat(&lock).ok())
                .is_some_and(|(path, held)| {
                    path.st_ino == held.st_ino && path.st_dev == held.st_dev
                });
            if !still_ours {
                continue;
            }
            rustix::fs::mkdirat(&area, id.as_str(), Mode::from_raw_mode(0o700))?;
            let dir = sys::open_dir(area.as_fd(), &id)?;
            return Ok(WorkDir {
                area,
                dir,
                id,
                _lock: lock,
                next: AtomicU64::new(0),
            });
        }
        Err(Errno::EXIST)
    }

    /// The directory that holds this store's temporary files.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// Creates a new, empty temporary file with exactly `mode` and returns it with its
    /// name.
    pub(crate) fn create_temp(&self, mode: u32) -> Result<(OwnedFd, String), Errno> {
        loop {
            let name = format!("t{}", self.next.fetch_add(1, Ordering::Relaxed));
            let created = sys::create_new(self.dir.as_fd(), &name, OFlags::WRONLY, mode);
            match created {
                Ok(fd) => {
                    // The umask may have removed bits; the file gets exactly `mode`.
                    if let Err(e) = rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)) {
                        self.remove(&name);
                        return Err(e);
                    }
                    return Ok((fd, name));
                }
                // A forked child shares the counter's past values: take the next one.
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Removes a temporary file; a failure leaves it for the next open's clean-up.
    pub(crate) fn remove(&self, name: &str) {
        let _ = rustix::fs::unlinkat(&self.dir, name, AtFlags::empty());
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        remove_tree(self.area.as_fd(), &self.id);
        let _ = rustix::fs::unlinkat(
            &self.area,
            format!("{}.lock", self.id).as_str(),
            AtFlags::empty(),
        );
    }
}

fn unique_id(attempt: u32) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("w-{}-{nanos:x}-{attempt}", std::process::id())
}

/// Removes the work directories whose lock nobody holds, and their lock files.
fn remove_abandoned(area: BorrowedFd<'_>) {
    let Ok(entries) = list_names(area) else {
        return;
    };
    for name in &entries {
        if let Some(id) = name.strip_suffix(".lock") {
            let Ok(lock) = sys::open_existing(area, name) else {
                continue;
            };
            if rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).is_ok() {
                remove_tree(area, id);
                let _ = rustix::fs::unlinkat(area, name.as_str(), AtFlags::empty());
            }
        }
    }
    // A work directory without its lock file belongs to nobody: a store creates the
    // lock first and removes it last.
    for name in &entries {
        if name.starts_with("w-")
            && !name.ends_with(".lock")
            && !entries.contains(&format!("{name}.lock"))
        {
            remove_tree(area, name);
        }
    }
}

/// Removes the flat directory `name` in `parent` and the files in it.
fn remove_tree(parent: BorrowedFd<'_>, name: &str) {
    if let Ok(dir) = sys::open_dir(parent, name) {
        if let Ok(files) = list_names(dir.as_fd()) {
            for file in files {
                let _ = rustix::fs::unlinkat(&dir, file.as_str(), AtFlags::empty());
            }
        }
    }
    let _ = rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR);
}

/// The names in a directory, without `.` and `..`; names that are not UTF-8 are skipped.
pub(crate) fn list_names(dir: BorrowedFd<'_>) -> Result<Vec<String>, Errno> {
    let mut reader = rustix::fs::Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let bytes = entry.file_name().to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        if let Ok(name) = std::str::from_utf8(bytes) {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}
