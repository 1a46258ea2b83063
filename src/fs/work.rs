//! The internal area: `{base}/.blockstore/`, where each open store keeps its temporary
//! files in a directory of its own, held by a lock.
//!
//! Layout: `.blockstore/w-{id}.lock` (a file held with `flock` while the store is open)
//! and `.blockstore/w-{id}/` (its temporary files, named `t{n}`, never after a key).
//!
//! Rules that keep several processes on one tree out of each other's way:
//! - a store creates its lock file, locks it, checks the file it locked is still the one
//!   at that name, and only then creates its directory; a lock file it finds locked by
//!   someone else while it sweeps is simply passed over;
//! - a sweep (once per store, after its own lock is in place) reads the whole area
//!   first, then removes a work directory only when its lock file can be locked, or,
//!   for a directory listed without a lock file, when the lock file is still missing
//!   at the moment of removal (a store makes its lock before its directory);
//! - only the process that created a work directory removes it: a forked child that
//!   drops its copy of the store leaves the parent's area alone;
//! - nothing found in the area is opened in a way that can block (a planted FIFO).
//!
//! [`Area`] hands the current work directory to writes, and makes a new one when the
//! old one vanished (a tmp cleaner removed the area) or could not be made at open (a
//! full disk, a read-only mount that has since been remounted).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use crate::key::RESERVED_NAME;

use super::sys;

/// How many names a store tries before it gives up making its work directory.
const ATTEMPTS: u32 = 64;

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
    /// The process that made it; only that one removes it.
    pid: u32,
}

impl WorkDir {
    /// Creates the internal area if needed, and creates and locks this store's own
    /// directory in it.
    fn create(base: BorrowedFd<'_>, dir_mode: u32) -> Result<WorkDir, Errno> {
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
        for attempt in 0..ATTEMPTS {
            let id = unique_id(attempt);
            let lock_name = format!("{id}.lock");
            let lock = match sys::create_new(area.as_fd(), &lock_name, OFlags::RDONLY, 0o600) {
                Ok(fd) => fd,
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e),
            };
            match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                // Another store's sweep holds it for a moment and will remove it.
                Err(Errno::WOULDBLOCK) => continue,
                Err(e) => {
                    let _ = rustix::fs::unlinkat(&area, lock_name.as_str(), AtFlags::empty());
                    return Err(e);
                }
            }
            // Another store's sweep may have locked and removed the file between our
            // create and our flock: then the lock guards nothing.
            let still_ours = sys::stat_at(area.as_fd(), &lock_name)
                .ok()
                .zip(rustix::fs::fstat(&lock).ok())
                .is_some_and(|(path, held)| {
                    path.st_ino == held.st_ino && path.st_dev == held.st_dev
                });
            if !still_ours {
                continue;
            }
            let made = rustix::fs::mkdirat(&area, id.as_str(), Mode::from_raw_mode(0o700))
                .and_then(|()| sys::open_dir(area.as_fd(), &id));
            let dir = match made {
                Ok(dir) => dir,
                Err(e) => {
                    let _ = rustix::fs::unlinkat(&area, id.as_str(), AtFlags::REMOVEDIR);
                    let _ = rustix::fs::unlinkat(&area, lock_name.as_str(), AtFlags::empty());
                    return Err(e);
                }
            };
            return Ok(WorkDir {
                area,
                dir,
                id,
                _lock: lock,
                next: AtomicU64::new(0),
                pid: std::process::id(),
            });
        }
        Err(Errno::EXIST)
    }

    /// The directory that holds this store's temporary files.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// This work directory's id, which also names temporary files made outside it.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// A number no other temporary file of this store has used.
    pub(crate) fn next_number(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Creates a new, empty temporary file with exactly `mode` and returns it with its
    /// name. `ENOENT` means the work directory is gone (see [`Area::renew`]).
    pub(crate) fn create_temp(&self, mode: u32) -> Result<(OwnedFd, String), Errno> {
        loop {
            let name = format!("t{}", self.next_number());
            match create_exact(self.dir.as_fd(), name.as_bytes(), mode) {
                Ok(fd) => return Ok((fd, name)),
                // A forked child shares the counter's past values: take the next one.
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the temporary file `name` is still there.
    pub(crate) fn has(&self, name: &str) -> bool {
        sys::stat_at(self.dir.as_fd(), name).is_ok()
    }

    /// Removes a temporary file; a failure leaves it for the next open's clean-up.
    pub(crate) fn remove(&self, name: &str) {
        let _ = rustix::fs::unlinkat(&self.dir, name, AtFlags::empty());
    }
}

/// Creates the new file `name` in `dir` with exactly `mode`, whatever the umask.
pub(crate) fn create_exact(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> Result<OwnedFd, Errno> {
    let fd = sys::create_new(dir, name, OFlags::WRONLY, mode)?;
    if let Err(e) = rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)) {
        let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
        return Err(e);
    }
    Ok(fd)
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::process::id() != self.pid {
            // A forked child's copy: the directory and lock are the parent's.
            return;
        }
        remove_tree(self.area.as_fd(), &self.id);
        let _ = rustix::fs::unlinkat(
            &self.area,
            format!("{}.lock", self.id).as_str(),
            AtFlags::empty(),
        );
    }
}

/// The store's handle on its work directory: made at open when possible, made again
/// when it vanished or could not be made before.
#[derive(Debug)]
pub(crate) struct Area {
    dir_mode: u32,
    current: RwLock<Result<Arc<WorkDir>, Errno>>,
    swept: AtomicBool,
}

impl Area {
    /// Makes the work directory now; a failure is kept and tried again at next use.
    pub(crate) fn open(base: BorrowedFd<'_>, dir_mode: u32) -> Area {
        let area = Area {
            dir_mode,
            current: RwLock::new(Err(Errno::NOENT)),
            swept: AtomicBool::new(false),
        };
        let first = area.make(base);
        *area.current.write() = first;
        area
    }

    /// The error that kept the work directory from being made at open, if any.
    pub(crate) fn open_error(&self) -> Option<Errno> {
        self.current.read().as_ref().err().copied()
    }

    /// The current work directory, made now if there is none.
    pub(crate) fn get(&self, base: BorrowedFd<'_>) -> Result<Arc<WorkDir>, Errno> {
        if let Ok(work) = &*self.current.read() {
            return Ok(work.clone());
        }
        let mut current = self.current.write();
        if let Ok(work) = &*current {
            return Ok(work.clone());
        }
        let made = self.make(base);
        *current = made.clone();
        made
    }

    /// Replaces `stale` (whose directory is gone) with a new work directory, unless
    /// another thread already did.
    pub(crate) fn renew(
        &self,
        base: BorrowedFd<'_>,
        stale: &Arc<WorkDir>,
    ) -> Result<Arc<WorkDir>, Errno> {
        let mut current = self.current.write();
        if let Ok(work) = &*current {
            if !Arc::ptr_eq(work, stale) {
                return Ok(work.clone());
            }
        }
        let made = self.make(base);
        *current = made.clone();
        made
    }

    fn make(&self, base: BorrowedFd<'_>) -> Result<Arc<WorkDir>, Errno> {
        let work = WorkDir::create(base, self.dir_mode)?;
        if !self.swept.swap(true, Ordering::Relaxed) {
            remove_abandoned(work.area.as_fd());
        }
        Ok(Arc::new(work))
    }
}

fn unique_id(attempt: u32) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("w-{}-{nanos:x}-{attempt}", std::process::id())
}

/// Whether the lock file `name` in the area is held by a live store. A lock file that
/// is not a regular file (planted) guards nothing.
fn lock_state(area: BorrowedFd<'_>, name: &str) -> LockState {
    let lock = match sys::open_existing(area, name) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return LockState::Missing,
        Err(_) => return LockState::Held,
    };
    match rustix::fs::fstat(&lock) {
        Ok(st) if sys::is_regular(&st) => {}
        _ => return LockState::Free(None),
    }
    match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => LockState::Free(Some(lock)),
        Err(_) => LockState::Held,
    }
}

enum LockState {
    Missing,
    Held,
    /// Nobody holds it; the descriptor keeps it locked while its directory goes.
    Free(Option<OwnedFd>),
}

/// Removes the work directories whose lock nobody holds, and their lock files.
fn remove_abandoned(area: BorrowedFd<'_>) {
    // The whole area is read before anything is judged.
    let Ok(entries) = list_names(area) else {
        return;
    };
    let names: std::collections::HashSet<&str> = entries.iter().map(String::as_str).collect();
    for name in &entries {
        if !name.starts_with("w-") {
            continue;
        }
        if let Some(id) = name.strip_suffix(".lock") {
            if let LockState::Free(_held) = lock_state(area, name) {
                remove_tree(area, id);
                let _ = rustix::fs::unlinkat(area, name.as_str(), AtFlags::empty());
            }
        } else if !names.contains(format!("{name}.lock").as_str()) {
            // Listed without its lock: a store makes its lock before its directory, so
            // only a lock still missing now means nobody owns the directory.
            if let LockState::Missing = lock_state(area, &format!("{name}.lock")) {
                remove_tree(area, name);
            }
        }
    }
}

/// Removes the flat directory `name` in `parent` and the files in it; anything that is
/// not a directory is left alone. An empty directory goes even when it cannot be
/// opened (out of descriptors).
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

/// Whether the work directory `id` (named in a temporary file made outside the area)
/// belongs to a store that is gone.
pub(crate) fn abandoned(base: BorrowedFd<'_>, id: &str) -> bool {
    let Ok(area) = sys::open_dir(base, RESERVED_NAME) else {
        return true;
    };
    matches!(
        lock_state(area.as_fd(), &format!("{id}.lock")),
        LockState::Missing | LockState::Free(_)
    )
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
