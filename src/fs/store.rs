//! `FsStore`: one file per block below a base directory.

use std::collections::HashSet;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, ErrorKind, Result};
use crate::gate::Gate;
use crate::key::{check_key, check_prefix};
use crate::store::{
    check_block_len, check_range_len, clamp_range, offset_past_end, op, prefix_delete_outcome,
    BlockRef, BlockStore, BLOCK_SIZE,
};

use super::config::FsConfig;
use super::sys::{self, error, error_as, means_absent};
use super::walk::blocks_with_prefix;
use super::work::WorkDir;

/// Ranges up to this length are read without an `fstat` first: the buffer is sized from
/// the length, and a read of 0 bytes means the offset is past the end.
const SMALL_RANGE: u64 = 64 * 1024;

/// How often a write retries when a concurrent delete removed its parent directory.
const PARENT_RETRIES: usize = 16;

/// A store that keeps each block in the file `{base_path}/{key}`.
///
/// # Durability
///
/// A write goes to a new temporary file in the internal area, which is written in full,
/// synced, and renamed over the block's path; then the block's directory is synced, and
/// every directory on the path that this or another writer created and nobody has made
/// durable yet. With `fsync = true` a block survives a power cut once `write_block`
/// returns, and a delete once `delete_block` returns. With `fsync = false` writes are
/// still atomic (a reader never sees a partial block) but not durable.
///
/// # Internal area
///
/// The top-level directory `.blockstore` (rejected as a key by every backend) holds
/// temporary files and locks. Each open store works in its own subdirectory held with
/// `flock`; opening a store removes only abandoned ones, so opening the store of a
/// running process from another (e.g. the CLI) never disturbs it.
///
/// # Hierarchy
///
/// Keys are paths, so `a/b` and `a/b/c` cannot both exist: writing one while the other
/// exists fails with `Conflict` and changes nothing. Reading a directory is `NotFound`;
/// deleting below a file is `Ok`. Deleting a block removes the directories it left
/// empty, up to but never including the base directory.
///
/// # Symlinks
///
/// No operation follows a symbolic link inside the base directory, and no key reaches
/// outside it: every lookup is `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`
/// relative to a descriptor of the base, and every change an `*at` call. Links and other
/// non-regular files read as `NotFound`, cannot be written over (`Conflict`), are left
/// alone by deletes and are skipped by listings. The base path itself may be a link.
///
/// # Permissions
///
/// Directories get exactly `dir_mode` and files exactly `file_mode`, whatever the umask.
///
/// # Reads
///
/// Whole blocks are read into a buffer sized from the open file; ranges with positioned
/// reads straight into the result (or the caller's buffer). Nothing is memory-mapped, so
/// a file truncated by someone else cannot kill the process. A file larger than
/// `BLOCK_SIZE` (not written by this store) is refused rather than read.
pub struct FsStore {
    config: FsConfig,
    base_path: PathBuf,
    base: OwnedFd,
    /// `Err` when the internal area cannot be written (a read-only mount, no permission):
    /// the store still reads, and writes fail with this error's kind.
    work: std::result::Result<WorkDir, Errno>,
    /// Directories created by this store whose entry in their parent is not yet synced.
    unsynced: Mutex<HashSet<String>>,
    /// Directories being created or in `unsynced`; lets writes skip the lock when zero.
    unsynced_count: AtomicUsize,
    gate: Gate,
}

impl fmt::Debug for FsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsStore")
            .field("base_path", &self.base_path)
            .field("fsync", &self.config.fsync)
            .finish_non_exhaustive()
    }
}

const OPEN: &str = "open";

impl FsStore {
    /// Opens (and with `create_dir`, creates) the store at `config.base_path`.
    pub fn open(config: FsConfig) -> Result<FsStore> {
        config.validate()?;
        let shown = config.base_path.display().to_string();
        let config_error = |why: &str| {
            Error::new(ErrorKind::Config, OPEN)
                .with_key(&shown)
                .with_detail(why.to_owned())
        };
        match std::fs::metadata(&config.base_path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(config_error("base_path is not a directory")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !config.create_dir {
                    return Err(config_error(
                        "base_path does not exist (and create_dir is false)",
                    ));
                }
                create_base(&config.base_path, config.dir_mode).map_err(|e| {
                    Error::from_io(OPEN, e)
                        .with_key(&shown)
                        .with_detail("cannot create base_path")
                })?;
            }
            // A file on the way: the path cannot name a directory, now or once created.
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(config_error(
                    "base_path is not a directory: a file is on its path",
                ))
            }
            Err(e) => return Err(Error::from_io(OPEN, e).with_key(&shown)),
        }
        let base_path = std::fs::canonicalize(&config.base_path)
            .map_err(|e| Error::from_io(OPEN, e).with_key(&shown))?;
        let base = sys::open_base(&base_path).map_err(|e| error(OPEN, &shown, e))?;
        let work = WorkDir::create(base.as_fd(), config.dir_mode);
        if let Ok(work) = &work {
            if case_insensitive(work)? {
                return Err(config_error(
                    "the filesystem is case-insensitive ('A' and 'a' are one name); keys need a case-sensitive one",
                ));
            }
        }
        match &work {
            Ok(_)
            | Err(Errno::ROFS | Errno::ACCESS | Errno::PERM | Errno::NOSPC | Errno::DQUOT) => {}
            Err(e) => {
                return Err(error(OPEN, &shown, *e).with_detail("cannot set up the internal area"))
            }
        }
        Ok(FsStore {
            config,
            base_path,
            base,
            work,
            unsynced: Mutex::new(HashSet::new()),
            unsynced_count: AtomicUsize::new(0),
            gate: Gate::default(),
        })
    }

    /// The base directory, resolved.
    pub fn base_path(&self) -> &Path {
        &self.base_path
    }

    fn base(&self) -> BorrowedFd<'_> {
        self.base.as_fd()
    }

    fn work(&self, op: &'static str, key: &str) -> Result<&WorkDir> {
        self.work
            .as_ref()
            .map_err(|e| error(op, key, *e).with_detail("the internal area is not writable"))
    }

    /// Opens the directory `rel` for a write, creating what is missing with exactly
    /// `dir_mode`. `Ok(None)` means a concurrent delete removed a directory on the way:
    /// the caller starts over.
    fn parent_for_write(&self, key: &str, rel: &str) -> Result<Option<OwnedFd>> {
        match sys::open_dir(self.base(), rel) {
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(in_the_way(key, e)),
        }
        let mode = Mode::from_raw_mode(self.config.dir_mode);
        let mut current: Option<OwnedFd> = None;
        let mut path_len = 0;
        for part in rel.split('/') {
            path_len += if path_len == 0 {
                part.len()
            } else {
                part.len() + 1
            };
            let path = &rel[..path_len];
            let at = current.as_ref().map_or(self.base(), |fd| fd.as_fd());
            let created = self.make_dir(at, part, path, mode);
            let created = match created {
                Ok(created) => created,
                Err(Errno::NOENT) => return Ok(None),
                Err(e) => return Err(error(op::WRITE, key, e)),
            };
            let next = match sys::open_child_dir(at, part) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => return Ok(None),
                Err(e) => return Err(in_the_way(key, e)),
            };
            if created {
                // mkdir honours the umask; the directory gets exactly `dir_mode`.
                rustix::fs::fchmod(&next, mode).map_err(|e| error(op::WRITE, key, e))?;
            }
            current = Some(next);
        }
        Ok(current)
    }

    /// `mkdirat`, recording a new directory as not yet durable. The record is made in
    /// the same critical section as the creation, and counted before it, so a writer
    /// that finds the directory already there also finds the record.
    fn make_dir(
        &self,
        at: BorrowedFd<'_>,
        name: &str,
        path: &str,
        mode: Mode,
    ) -> std::result::Result<bool, Errno> {
        let mut unsynced = self.unsynced.lock();
        self.unsynced_count.fetch_add(1, Ordering::SeqCst);
        match rustix::fs::mkdirat(at, name, mode) {
            Ok(()) => {
                if !unsynced.insert(path.to_owned()) {
                    self.unsynced_count.fetch_sub(1, Ordering::SeqCst);
                }
                Ok(true)
            }
            Err(e) => {
                self.unsynced_count.fetch_sub(1, Ordering::SeqCst);
                match e {
                    Errno::EXIST => Ok(false),
                    e => Err(e),
                }
            }
        }
    }

    /// Syncs the parent of every directory on `rel`'s path that is recorded as not yet
    /// durable, then forgets it.
    fn sync_new_dirs(&self, key: &str, rel: &str) -> Result<()> {
        if self.unsynced_count.load(Ordering::SeqCst) == 0 || rel.is_empty() {
            return Ok(());
        }
        let mut dir = rel;
        loop {
            let recorded = self.unsynced.lock().contains(dir);
            let (parent, _) = sys::split_parent(dir);
            if recorded {
                let fd =
                    sys::open_dir(self.base(), parent).map_err(|e| error(op::WRITE, key, e))?;
                sys::sync_dir(fd.as_fd()).map_err(|e| error(op::WRITE, key, e))?;
                // Forget only after the sync: whoever no longer finds it knows it is durable.
                self.forget_dir(dir);
            }
            if parent.is_empty() {
                return Ok(());
            }
            dir = parent;
        }
    }

    fn forget_dir(&self, dir: &str) {
        if self.unsynced_count.load(Ordering::SeqCst) == 0 {
            return;
        }
        if self.unsynced.lock().remove(dir) {
            self.unsynced_count.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Moves a finished temporary file to `key`, creating directories as needed.
    fn install(&self, work: &WorkDir, temp: &str, key: &str) -> Result<OwnedFd> {
        let (parent_rel, leaf) = sys::split_parent(key);
        for _ in 0..PARENT_RETRIES {
            let Some(parent) = self.parent_for_write(key, parent_rel)? else {
                continue;
            };
            // Never replace a directory, a link or a device: only a block.
            match sys::stat_at(parent.as_fd(), leaf) {
                Ok(st) if !sys::is_regular(&st) => {
                    return Err(Error::new(ErrorKind::Conflict, op::WRITE)
                        .with_key(key)
                        .with_detail("a directory or another non-regular file has this name"))
                }
                Ok(_) | Err(Errno::NOENT) => {}
                Err(e) => return Err(error(op::WRITE, key, e)),
            }
            match rustix::fs::renameat(work.fd(), temp, &parent, leaf) {
                Ok(()) => return Ok(parent),
                // The parent was removed by a concurrent delete's clean-up.
                Err(Errno::NOENT) => continue,
                Err(e @ (Errno::ISDIR | Errno::NOTDIR | Errno::NOTEMPTY | Errno::EXIST)) => {
                    return Err(error_as(
                        ErrorKind::Conflict,
                        op::WRITE,
                        key,
                        e,
                        "a directory has this name",
                    ))
                }
                Err(e) => return Err(error(op::WRITE, key, e)),
            }
        }
        Err(Error::new(ErrorKind::Backend, op::WRITE)
            .with_key(key)
            .with_detail("its directory kept disappearing under concurrent deletes")
            .with_retryable(true))
    }

    /// Removes the block file `key`; `Ok(false)` when there was none.
    fn remove(&self, op: &'static str, key: &str) -> Result<bool> {
        let (parent_rel, leaf) = sys::split_parent(key);
        let parent = match sys::open_dir(self.base(), parent_rel) {
            Ok(fd) => fd,
            Err(e) if means_absent(e) => return Ok(false),
            Err(e) => return Err(error(op, key, e)),
        };
        match sys::stat_at(parent.as_fd(), leaf) {
            Ok(st) if sys::is_regular(&st) => {}
            Ok(_) => return Ok(false),
            Err(e) if means_absent(e) => return Ok(false),
            Err(e) => return Err(error(op, key, e)),
        }
        match rustix::fs::unlinkat(&parent, leaf, AtFlags::empty()) {
            Ok(()) => {}
            Err(e) if means_absent(e) => return Ok(false),
            Err(e) => return Err(error(op, key, e)),
        }
        if self.config.fsync {
            sys::sync_dir(parent.as_fd()).map_err(|e| error(op, key, e))?;
        }
        drop(parent);
        self.remove_empty_dirs(parent_rel);
        Ok(true)
    }

    /// Removes `rel` and its ancestors while they are empty, never the base. Best
    /// effort: a directory that is not empty (or cannot be removed) ends the walk.
    fn remove_empty_dirs(&self, mut rel: &str) {
        let mut last_parent = None;
        while !rel.is_empty() {
            let (parent_rel, name) = sys::split_parent(rel);
            let Ok(parent) = sys::open_dir(self.base(), parent_rel) else {
                break;
            };
            if rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR).is_err() {
                break;
            }
            self.forget_dir(rel);
            last_parent = Some(parent);
            rel = parent_rel;
        }
        if let (true, Some(parent)) = (self.config.fsync, last_parent) {
            let _ = sys::sync_dir(parent.as_fd());
        }
    }

    /// Opens a block for reading: anything that is not there as a file is NotFound.
    fn open_block(&self, op: &'static str, key: &str) -> Result<OwnedFd> {
        sys::open_file(self.base(), key).map_err(|e| {
            if means_absent(e) {
                error_as(ErrorKind::NotFound, op, key, e, "no block")
            } else {
                error(op, key, e)
            }
        })
    }

    /// The size of an open block, checking that it is a block this store could have
    /// written.
    fn block_len(&self, op: &'static str, key: &str, fd: BorrowedFd<'_>) -> Result<u64> {
        let st = rustix::fs::fstat(fd).map_err(|e| error(op, key, e))?;
        if !sys::is_regular(&st) {
            return Err(Error::new(ErrorKind::NotFound, op)
                .with_key(key)
                .with_detail("not a regular file"));
        }
        let size = st.st_size as u64;
        if size > BLOCK_SIZE as u64 {
            return Err(Error::new(ErrorKind::Backend, op)
                .with_key(key)
                .with_detail(format!(
                    "the file holds {size} bytes, more than BLOCK_SIZE: not a block of this store"
                )));
        }
        Ok(size)
    }

    /// A read error: a directory or other odd file read as NotFound.
    fn read_error(op: &'static str, key: &str, e: Errno) -> Error {
        match e {
            Errno::ISDIR | Errno::SPIPE => {
                error_as(ErrorKind::NotFound, op, key, e, "not a regular file")
            }
            e => error(op, key, e),
        }
    }
}

/// A failed lookup of a write's parent: a file or a link on the path is a Conflict.
fn in_the_way(key: &str, e: Errno) -> Error {
    match e {
        Errno::NOTDIR | Errno::LOOP | Errno::XDEV => error_as(
            ErrorKind::Conflict,
            op::WRITE,
            key,
            e,
            "a file or link is in the way",
        ),
        e => error(op::WRITE, key, e),
    }
}

fn create_base(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Whether names differing only in case name one file, probed in the work directory.
fn case_insensitive(work: &WorkDir) -> Result<bool> {
    let fail = |e| error(OPEN, "case probe", e);
    let upper = "Case-Probe";
    let fd = sys::create_new(work.fd(), upper, OFlags::WRONLY, 0o600).map_err(fail)?;
    drop(fd);
    let aliased = sys::stat_at(work.fd(), "case-probe").is_ok();
    work.remove(upper);
    Ok(aliased)
}

impl BlockStore for FsStore {
    fn write_block(&self, key: &str, data: &[u8]) -> Result<()> {
        let _pass = self.gate.enter(op::WRITE)?;
        check_key(op::WRITE, key)?;
        check_block_len(key, data.len())?;
        let work = self.work(op::WRITE, key)?;
        let (file, temp) = work
            .create_temp(self.config.file_mode)
            .map_err(|e| error(op::WRITE, key, e))?;
        let written = sys::write_all(file.as_fd(), data).and_then(|()| {
            if self.config.fsync {
                rustix::fs::fdatasync(&file)
            } else {
                Ok(())
            }
        });
        drop(file);
        if let Err(e) = written {
            work.remove(&temp);
            return Err(error(op::WRITE, key, e));
        }
        let parent = match self.install(work, &temp, key) {
            Ok(parent) => parent,
            Err(e) => {
                work.remove(&temp);
                return Err(e);
            }
        };
        if self.config.fsync {
            sys::sync_dir(parent.as_fd()).map_err(|e| error(op::WRITE, key, e))?;
            drop(parent);
            self.sync_new_dirs(key, sys::split_parent(key).0)?;
        }
        Ok(())
    }

    fn read_block(&self, key: &str) -> Result<Vec<u8>> {
        let _pass = self.gate.enter(op::READ)?;
        check_key(op::READ, key)?;
        let fd = self.open_block(op::READ, key)?;
        let size = self.block_len(op::READ, key, fd.as_fd())? as usize;
        let mut data = Vec::with_capacity(size);
        sys::pread_append(fd.as_fd(), &mut data, size, 0)
            .map_err(|e| Self::read_error(op::READ, key, e))?;
        Ok(data)
    }

    fn read_block_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let _pass = self.gate.enter(op::READ_RANGE)?;
        check_key(op::READ_RANGE, key)?;
        check_range_len(key, length)?;
        let fd = self.open_block(op::READ_RANGE, key)?;
        if offset >= BLOCK_SIZE as u64 {
            // No block reaches this far (and pread refuses offsets near i64::MAX).
            let size = self.block_len(op::READ_RANGE, key, fd.as_fd())?;
            return Err(offset_past_end(key, offset, size));
        }
        let want = if length <= SMALL_RANGE {
            length as usize
        } else {
            let size = self.block_len(op::READ_RANGE, key, fd.as_fd())?;
            clamp_range(key, size, offset, length)?.len()
        };
        let mut data = Vec::with_capacity(want);
        let n = sys::pread_append(fd.as_fd(), &mut data, want, offset)
            .map_err(|e| Self::read_error(op::READ_RANGE, key, e))?;
        if n == 0 {
            let size = self.block_len(op::READ_RANGE, key, fd.as_fd())?;
            return Err(offset_past_end(key, offset, size));
        }
        Ok(data)
    }

    fn read_block_range_into(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let _pass = self.gate.enter(op::READ_RANGE)?;
        check_key(op::READ_RANGE, key)?;
        check_range_len(key, buf.len() as u64)?;
        let fd = self.open_block(op::READ_RANGE, key)?;
        if offset >= BLOCK_SIZE as u64 {
            let size = self.block_len(op::READ_RANGE, key, fd.as_fd())?;
            return Err(offset_past_end(key, offset, size));
        }
        let n = sys::pread_full(fd.as_fd(), buf, offset)
            .map_err(|e| Self::read_error(op::READ_RANGE, key, e))?;
        if n == 0 {
            let size = self.block_len(op::READ_RANGE, key, fd.as_fd())?;
            return Err(offset_past_end(key, offset, size));
        }
        Ok(n)
    }

    fn block_size(&self, key: &str) -> Result<u64> {
        let _pass = self.gate.enter(op::SIZE)?;
        check_key(op::SIZE, key)?;
        let fd = sys::open_path(self.base(), key).map_err(|e| {
            if means_absent(e) {
                error_as(ErrorKind::NotFound, op::SIZE, key, e, "no block")
            } else {
                error(op::SIZE, key, e)
            }
        })?;
        self.block_len(op::SIZE, key, fd.as_fd())
    }

    fn delete_block(&self, key: &str) -> Result<()> {
        let _pass = self.gate.enter(op::DELETE)?;
        check_key(op::DELETE, key)?;
        self.remove(op::DELETE, key).map(|_| ())
    }

    fn delete_by_prefix(&self, prefix: &str) -> Result<u64> {
        let _pass = self.gate.enter(op::DELETE_PREFIX)?;
        check_prefix(op::DELETE_PREFIX, prefix)?;
        let blocks = blocks_with_prefix(self.base(), prefix, false)
            .map_err(|e| error(op::DELETE_PREFIX, prefix, e))?;
        let mut removed = 0u64;
        let mut failed: Vec<(String, Error)> = Vec::new();
        for block in blocks {
            match self.remove(op::DELETE_PREFIX, &block.key) {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(e) => failed.push((block.key, e)),
            }
        }
        prefix_delete_outcome(prefix, removed, &failed)
    }

    fn list_by_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let _pass = self.gate.enter(op::LIST)?;
        check_prefix(op::LIST, prefix)?;
        let blocks = blocks_with_prefix(self.base(), prefix, false)
            .map_err(|e| error(op::LIST, prefix, e))?;
        Ok(blocks.into_iter().map(|b| b.key).collect())
    }

    fn list_blocks(&self, prefix: &str) -> Result<Vec<BlockRef>> {
        let _pass = self.gate.enter(op::LIST)?;
        check_prefix(op::LIST, prefix)?;
        blocks_with_prefix(self.base(), prefix, true).map_err(|e| error(op::LIST, prefix, e))
    }

    fn health_check(&self) -> Result<()> {
        let _pass = self.gate.enter(op::HEALTH)?;
        let shown = self.base_path.display().to_string();
        let fail = |kind, why: &str| {
            Err(Error::new(kind, op::HEALTH)
                .with_key(&shown)
                .with_detail(why.to_owned()))
        };
        let held = rustix::fs::fstat(&self.base).map_err(|e| error(op::HEALTH, &shown, e))?;
        match rustix::fs::stat(&self.base_path) {
            Ok(st) if st.st_ino == held.st_ino && st.st_dev == held.st_dev => {}
            Ok(_) => {
                return fail(
                    ErrorKind::Config,
                    "base directory was replaced since the store was opened",
                )
            }
            Err(Errno::NOENT) => return fail(ErrorKind::Config, "base directory is missing"),
            Err(e) => return Err(error(op::HEALTH, &shown, e)),
        }
        let work = self.work(op::HEALTH, &shown)?;
        let (file, temp) = work
            .create_temp(self.config.file_mode)
            .map_err(|e| error(op::HEALTH, &shown, e).with_detail("write probe failed"))?;
        let written =
            sys::write_all(file.as_fd(), b"probe").and_then(|()| rustix::fs::fdatasync(&file));
        drop(file);
        work.remove(&temp);
        written.map_err(|e| error(op::HEALTH, &shown, e).with_detail("write probe failed"))
    }

    fn close(&self) -> Result<()> {
        self.gate.close();
        Ok(())
    }
}
