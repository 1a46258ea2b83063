//! `FsStore`: one file per block below a base directory.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::backend::{record_chunk, widen, Backend, Fields, Seal, Sealed};
use crate::checked::Checked;
use crate::error::{Error, ErrorKind, Result};
use crate::integrity::Checksums;
use crate::integrity::{Summing, Sums};
use crate::op::Op;
use crate::store::{clamp_range, offset_past_end, Blocks, DeleteTally, BLOCK_SIZE};
use std::cell::OnceCell;

use super::config::FsConfig;
use super::durable::NewDirs;
use super::overlap;
use super::records::{Records, Stamp};
use super::sys::{self, error, error_as, means_absent};
use super::walk::{join, read_dir, Walk};
use super::work::{self, create_exact, Area, WorkDir};

/// How often a write starts over when a concurrent delete removed its directory, or a
/// cleaner removed the internal area, under it. From the fifth time on it first waits,
/// 0.25 ms and twice as long each time up to 16 ms (about 0.11 s in all).
const RETRIES: usize = 16;

/// Temporary files made beside a block (when the block's directory is on another mount
/// than the internal area) start with these bytes. They are not UTF-8, so no such name
/// is ever a key: listings never show them and no key can collide with them.
const BESIDE: &[u8] = b".blockstore\xfft-";

/// The extended attribute that holds a block's checksum record.
const SUMS_XATTR: &str = "user.blockstore.sums";

/// The chunk of the filesystem's checksums: 8 KiB, so a 4 KiB page read reads 8 KiB,
/// and the record of a 4 MiB block (2,072 bytes) fits the one block of attributes
/// ext4 gives a file.
const FS_CHUNK: u64 = 8 * 1024;

/// A store that keeps each block in the file `{base_path}/{key}`.
///
/// # Durability
///
/// A write goes to a new temporary file, which is written in full, synced, and renamed
/// over the block's path; then the block's directory is synced, and every directory on
/// the path that this or another writer created and nobody has made durable yet. With
/// `fsync = true` a block survives a power cut once `write_block` returns, and a delete
/// once `delete_block` returns. With `fsync = false` writes are still atomic (a reader
/// never sees a partial block) but not durable, and the store keeps no record of new
/// directories at all.
///
/// Across processes the store cannot know which directories another process created
/// and has not synced yet: a write into a directory that another process made a
/// moment before may return before that process has made the directory's own entry
/// durable. Once the creating write returns, the directory is durable for everyone.
///
/// # Internal area
///
/// The top-level directory `.blockstore` (rejected as a key by every backend) holds
/// temporary files and locks. Each open store works in its own subdirectory held with
/// `flock`; opening a store removes only abandoned ones, so opening the store of a
/// running process from another (e.g. the CLI) never disturbs it. Only the process
/// that made a subdirectory removes it: a child forked from a daemon that drops its copy
/// of the store leaves the daemon's area alone. If the area is removed under a live
/// store (a tmp cleaner), the store makes a new one at its next write. If it cannot be
/// made at open (a full disk, a read-only mount), the store opens for reads, writes
/// fail with that condition's kind, and every later write tries again, so the store
/// recovers once the condition clears.
///
/// # Several processes
///
/// Any number of processes may open one base directory at once, and each may delete
/// what another writes: a write whose new directories another process's clean-up
/// removes starts over (a bounded number of times) instead of failing, and a write
/// either succeeds or fails with a kind that tells the truth.
///
/// # Mounts below the base
///
/// A directory below the base may be another filesystem (a btrfs subvolume, a bind
/// mount, a per-share dataset). A rename from the internal area cannot cross into it,
/// so there the temporary file is made beside the block instead, under a name that is
/// not valid UTF-8 (never a key, never listed) and names the work directory that made
/// it; the same write, sync, rename and directory sync keep the crash guarantees. A
/// crash can leave such a file behind: a prefix delete that meets one whose store is
/// gone removes it.
///
/// # Hierarchy
///
/// Keys are paths, so `a/b` and `a/b/c` cannot both exist: writing one while the other
/// exists fails with `Conflict` and changes nothing. Reading a directory is `NotFound`;
/// deleting below a file is `Ok`. Deleting a block removes the directories it left
/// empty, up to but never including the base directory. A failed write removes the
/// directories it made; a prefix delete removes every empty directory below its prefix,
/// whoever left it.
///
/// # Symlinks and other files
///
/// No operation follows a symbolic link inside the base directory, and no key reaches
/// outside it: every lookup is `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`
/// relative to a descriptor of the base, and every change an `*at` call. Anything at a
/// key's path that is not a regular file (a link, FIFO, socket or device) is `NotFound`
/// for every read and for `block_size`, cannot be written over (`Conflict`), is left
/// alone by deletes and skipped by listings. Files are opened with `O_NONBLOCK` and
/// `O_NOCTTY`, and their type is checked before anything is read, so a planted FIFO or
/// terminal can neither block the store nor change the process. The base path itself
/// may be a link.
///
/// # Checksums
///
/// With `checksums = "crc32c"` (the default) each block file carries its checksum
/// record (a CRC32C per 8 KiB chunk, [`crate::integrity`]) in the extended attribute
/// `user.blockstore.sums`, set on the temporary file before it is synced (with `fsync`,
/// a full `fsync`: the attribute is metadata) and renamed, so the block and its record
/// appear together. Reads check it; a file changed behind the store's back is
/// `Corrupt`. Where the filesystem refuses user attributes the store writes without
/// them and says so in `report().about`. Copy a store with its attributes (`cp -a`,
/// `rsync -X`).
///
/// Range reads remember the records of up to 1,024 recently read blocks (about 2 KiB
/// each), reused while `fstat` shows the same file (inode, size, change and
/// modification times), so a small range of a hot block reads no attribute: only on
/// local filesystems, only once a file has not changed for two seconds (a file's times
/// move only when the clock has), and a range that fails its check with a remembered
/// record is checked again with the stored one before it is `Corrupt`; whole reads and
/// `verify_block` always read the stored one.
///
/// Beside each remembered record the store keeps the CRC32C of every 1 KiB piece of
/// the chunks that ranges have verified ([`Granules`](crate::integrity::Granules),
/// 16.5 KiB for a 4 MiB block: 19 MiB at most with the records): a later range whose
/// pieces are all known reads and checks only them, so a 4 KiB range of a hot block
/// reads 4 or 5 KiB instead of its 8 or 16 KiB of chunks. A range that shares a chunk
/// with damage but not its piece may then still read; one that touches the damage
/// never does.
///
/// A read of a block's bytes that fails with `EIO` (a device that cannot read them,
/// or btrfs's and ZFS's own checksums refusing them) is `Corrupt`, like damage our
/// checksums find.
///
/// # Permissions
///
/// Directories get exactly `dir_mode` and files exactly `file_mode`, whatever the umask.
///
/// # Reads
///
/// Whole blocks and ranges are read with positioned reads straight into a buffer sized
/// from the open file (or into the caller's buffer). Nothing is memory-mapped, so a
/// file truncated by someone else cannot kill the process. A regular file larger than
/// `BLOCK_SIZE` (not written by this store) is refused by every read and by
/// `block_size` alike, with a `Backend` error naming its size; listings show it with
/// its size, and deletes remove it.
///
/// # Fork
///
/// A store used in a child process forked after it was opened fails with `Backend`
/// (open a new store in the child); a child that drops or closes its copy leaves the
/// parent's store, its work directory and its lock alone.
///
/// ```
/// use blockstore::{BlockStore, ErrorKind, FsConfig, FsStore};
///
/// let dir = tempfile::tempdir()?;
/// let store = FsStore::open(FsConfig::new(dir.path().join("blocks")))?;
/// store.write_block("export/f/chunk-0/block-0", b"block")?;
/// // The block is the file at its key.
/// assert!(store.base_path().join("export/f/chunk-0/block-0").is_file());
/// // The hierarchy: a block cannot sit where a directory is.
/// let e = store.write_block("export/f", b"x").unwrap_err();
/// assert_eq!(e.kind(), ErrorKind::Conflict);
/// store.delete_block("export/f/chunk-0/block-0")?;
/// assert!(!store.base_path().join("export").exists(), "empty directories go too");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type FsStore = Checked<FsBackend>;

/// The filesystem backend's mechanism; use it as [`FsStore`].
pub struct FsBackend {
    config: FsConfig,
    base_path: PathBuf,
    base: OwnedFd,
    area: Area,
    /// New directories whose entry is not yet durable (only with `fsync`).
    new_dirs: NewDirs,
    /// Set once a rename crossed into another mount: from then on each write first
    /// checks which mount its directory is on.
    mounts_below: AtomicBool,
    /// The checksums this store writes: `config.checksums`, or `Off` where the
    /// filesystem keeps no user extended attributes.
    checksums: Checksums,
    /// The chunk of new checksum records: [`FS_CHUNK`], or larger where the filesystem
    /// gives a file less room for attributes (ext4 with 1 or 2 KiB blocks): probed at
    /// open, and raised when a record written on the base's filesystem did not fit
    /// (a store opened where it could not probe: a full disk, a read-only mount).
    chunk: AtomicU64,
    /// Checksum records of recently read blocks, for range reads.
    records: Records,
    /// Whether records may be remembered: the base is on a local filesystem whose file
    /// times come from this machine's clock ([`remembers_records`]); then only for
    /// files on `base_dev`.
    remember: bool,
    base_dev: u64,
}

impl fmt::Debug for FsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsBackend")
            .field("base_path", &self.base_path)
            .field("fsync", &self.config.fsync)
            .finish_non_exhaustive()
    }
}

/// Why a write's install step did not finish.
enum Retry {
    /// The temporary file vanished with the internal area: write it again.
    AreaGone,
    /// The block's directory vanished (a concurrent delete's clean-up): start over.
    ParentGone,
    /// Give up with this error.
    Fail(Error),
}

impl From<Error> for Retry {
    fn from(e: Error) -> Self {
        Retry::Fail(e)
    }
}

impl Checked<FsBackend> {
    /// Opens (and with `create_dir`, creates) the store at `config.base_path`.
    pub fn open(config: FsConfig) -> Result<FsStore> {
        FsBackend::open(config).map(Checked::from_backend)
    }

    /// The base directory, resolved.
    pub fn base_path(&self) -> &Path {
        self.backend().base_path()
    }
}

impl FsBackend {
    /// Opens (and with `create_dir`, creates) the backend at `config.base_path`.
    pub fn open(config: FsConfig) -> Result<FsBackend> {
        config.validate()?;
        let shown = config.base_path.display().to_string();
        let config_error = |why: &str| {
            Error::new(ErrorKind::Config, Op::Open)
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
                    Error::from_io(Op::Open, e)
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
            Err(e) => return Err(Error::from_io(Op::Open, e).with_key(&shown)),
        }
        let base_path = std::fs::canonicalize(&config.base_path)
            .map_err(|e| Error::from_io(Op::Open, e).with_key(&shown))?;
        let base = sys::open_base(&base_path).map_err(|e| error(Op::Open, &shown, e))?;
        let area = Area::open(base.as_fd(), config.dir_mode);
        let mut checksums = config.checksums;
        let mut chunk = config.checksum_chunk_kib * 1024;
        match area.open_error() {
            None => {
                let work = area
                    .get(base.as_fd())
                    .map_err(|e| error(Op::Open, &shown, e))?;
                if case_insensitive(&work)? == Some(true) {
                    return Err(config_error(
                        "the filesystem is case-insensitive ('A' and 'a' are one name); keys need a case-sensitive one",
                    ));
                }
                if config.checksums != Checksums::Off {
                    match record_room(&work, chunk) {
                        Room::Chunk(fits) => chunk = fits,
                        Room::Unknown => {}
                        Room::None if config.checksums == Checksums::Require => {
                            return Err(config_error(
                                "checksums = \"require\", but the filesystem keeps no user extended attributes for them",
                            ));
                        }
                        Room::None => {
                            checksums = Checksums::Off;
                            #[cfg(feature = "tracing")]
                            tracing::warn!(
                                backend = "filesystem",
                                path = %shown,
                                "the filesystem keeps no user extended attributes: blocks are written without checksums"
                            );
                        }
                    }
                }
            }
            // Conditions that may clear: the store opens for reads and tries again later.
            Some(Errno::ROFS | Errno::ACCESS | Errno::PERM | Errno::NOSPC | Errno::DQUOT) => {}
            Some(e) => {
                return Err(
                    error(Op::Open, &shown, e).with_detail("cannot set up the internal area")
                )
            }
        }
        let remember = remembers_records(base.as_fd());
        let base_dev = rustix::fs::fstat(&base).map_or(u64::MAX, |st| st.st_dev);
        Ok(FsBackend {
            config,
            base_path,
            base,
            area,
            new_dirs: NewDirs::default(),
            mounts_below: AtomicBool::new(false),
            checksums,
            chunk: AtomicU64::new(chunk),
            records: Records::default(),
            remember,
            base_dev,
        })
    }

    /// The base directory, resolved.
    pub fn base_path(&self) -> &Path {
        &self.base_path
    }

    fn base(&self) -> BorrowedFd<'_> {
        self.base.as_fd()
    }

    /// The current work directory (made now if there is none). A cleaner removing the
    /// area while it is being made only means trying again.
    fn work(&self, op: Op, key: &str) -> Result<Arc<WorkDir>> {
        let mut last = Errno::NOENT;
        for _ in 0..RETRIES {
            match self.area.get(self.base()) {
                Ok(work) => return Ok(work),
                Err(Errno::NOENT) => last = Errno::NOENT,
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        Err(vanished_or(
            op,
            key,
            last,
            "the internal area is not writable",
        ))
    }

    /// A new temporary file in the work directory, making the directory again if a
    /// cleaner removed it.
    fn temp_file(&self, op: Op, key: &str, work: &mut Arc<WorkDir>) -> Result<(OwnedFd, String)> {
        for _ in 0..RETRIES {
            match work.create_temp(self.config.file_mode) {
                Ok(made) => return Ok(made),
                Err(Errno::NOENT) => match self.area.renew(self.base(), work) {
                    Ok(renewed) => *work = renewed,
                    Err(Errno::NOENT) => {}
                    Err(e) => {
                        return Err(
                            error(op, key, e).with_detail("cannot make the internal area again")
                        )
                    }
                },
                Err(e) => return Err(error(op, key, e)),
            }
        }
        Err(vanished_or(
            op,
            key,
            Errno::NOENT,
            "the internal area kept disappearing",
        ))
    }

    /// Opens the directory `rel` for a write, creating what is missing with exactly
    /// `dir_mode` and adding each directory it made to `created`. `Ok(None)` means a
    /// concurrent delete removed a directory on the way: the caller starts over.
    fn parent_for_write(
        &self,
        key: &str,
        rel: &str,
        created: &mut Vec<String>,
    ) -> Result<Option<OwnedFd>> {
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
            let made = match self.make_dir(at, part, path, mode) {
                Ok(made) => made,
                Err(Errno::NOENT) => return Ok(None),
                Err(e) => return Err(error(Op::Write, key, e)),
            };
            if made {
                created.push(path.to_owned());
            }
            let next = match sys::open_child_dir(at, part) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => return Ok(None),
                Err(e) => return Err(in_the_way(key, e)),
            };
            if made {
                // mkdir honours the umask; the directory gets exactly `dir_mode`.
                rustix::fs::fchmod(&next, mode).map_err(|e| error(Op::Write, key, e))?;
            }
            current = Some(next);
        }
        Ok(current)
    }

    /// `mkdirat`, recording a new directory as not yet durable (with `fsync`) before it
    /// is made, so a writer that finds it already there also finds the record.
    fn make_dir(
        &self,
        at: BorrowedFd<'_>,
        name: &str,
        path: &str,
        mode: Mode,
    ) -> std::result::Result<bool, Errno> {
        let record = if self.config.fsync {
            self.new_dirs.begin(path)
        } else {
            None
        };
        match rustix::fs::mkdirat(at, name, mode) {
            Ok(()) => {
                if let Some(generation) = record {
                    self.new_dirs.created(path, generation);
                }
                Ok(true)
            }
            Err(e) => {
                if let Some(generation) = record {
                    self.new_dirs.forget(path, generation);
                }
                match e {
                    Errno::EXIST => Ok(false),
                    e => Err(e),
                }
            }
        }
    }

    /// Syncs the parent of every directory on `rel`'s path that is recorded as not yet
    /// durable, then forgets it (when its creation has finished). A directory that is
    /// gone took this write's block with it (a directory is removed only when empty):
    /// there is nothing left to make durable.
    fn sync_new_dirs(&self, key: &str, rel: &str) -> Result<()> {
        if self.new_dirs.is_empty() || rel.is_empty() {
            return Ok(());
        }
        let mut dir = rel;
        loop {
            let (parent, _) = sys::split_parent(dir);
            if let Some(record) = self.new_dirs.get(dir) {
                match sys::open_dir(self.base(), parent) {
                    Ok(fd) => {
                        sys::sync_dir(fd.as_fd()).map_err(|e| error(Op::Write, key, e))?;
                        // Forget only after the sync: whoever no longer finds it knows it
                        // is durable. A pending record is its creator's to forget.
                        if record.created {
                            self.new_dirs.forget(dir, record.generation);
                        }
                    }
                    Err(e) if means_absent(e) => {
                        if record.created {
                            self.new_dirs.forget(dir, record.generation);
                        }
                    }
                    Err(e) => return Err(error(Op::Write, key, e)),
                }
            }
            if parent.is_empty() {
                return Ok(());
            }
            dir = parent;
        }
    }

    /// A write, starting over when the area or the block's directory vanished under it.
    fn write_with_retries(
        &self,
        key: &str,
        data: &[u8],
        record: Option<&Sealing<'_>>,
    ) -> Result<()> {
        let mut work = self.work(Op::Write, key)?;
        if self.mounts_below.load(Ordering::Relaxed) && self.on_other_mount(key, &work) {
            // No point writing the block into the area: it cannot be renamed from there.
            return self
                .install(&work, None, key, data, record)
                .map_err(|r| match r {
                    Retry::Fail(e) => e,
                    Retry::AreaGone | Retry::ParentGone => vanished_or(
                        Op::Write,
                        key,
                        Errno::NOENT,
                        "the block's directory kept vanishing",
                    ),
                });
        }
        for _ in 0..RETRIES {
            let (file, temp) = self.temp_file(Op::Write, key, &mut work)?;
            let written = fill(file.as_fd(), data, record, self.config.fsync)
                .map(|larger| self.learn_chunk(file.as_fd(), larger));
            drop(file);
            if let Err(e) = written {
                work.remove(&temp);
                let refused = record.is_some() && e == Errno::NOTSUP;
                let e = error(Op::Write, key, e);
                return Err(if refused {
                    e.with_detail("the filesystem keeps no extended attributes for the checksums: set checksums = \"off\"")
                } else {
                    e
                });
            }
            match self.install(&work, Some(&temp), key, data, record) {
                Ok(()) => return Ok(()),
                // A cleaner took the temporary file with the area: write it again.
                Err(Retry::AreaGone | Retry::ParentGone) => continue,
                Err(Retry::Fail(e)) => {
                    work.remove(&temp);
                    return Err(e);
                }
            }
        }
        Err(Error::new(ErrorKind::Backend, Op::Write)
            .with_key(key)
            .with_detail("the internal area kept disappearing")
            .with_retryable(true))
    }

    /// Writes `data` under `key` through the temporary file `temp` (already written and
    /// synced in `work`; `None` to write it beside the block), creating directories as
    /// needed; the directories it made are removed again when it fails.
    fn install(
        &self,
        work: &WorkDir,
        temp: Option<&str>,
        key: &str,
        data: &[u8],
        record: Option<&Sealing<'_>>,
    ) -> Result<(), Retry> {
        let mut created = Vec::new();
        let result = self.install_into(work, temp, key, data, record, &mut created);
        if result.is_err() {
            for dir in created.iter().rev() {
                self.remove_dir(dir);
            }
        }
        result
    }

    fn install_into(
        &self,
        work: &WorkDir,
        temp: Option<&str>,
        key: &str,
        data: &[u8],
        record: Option<&Sealing<'_>>,
        created: &mut Vec<String>,
    ) -> Result<(), Retry> {
        let (parent_rel, leaf) = sys::split_parent(key);
        for attempt in 0..RETRIES {
            if attempt >= 4 {
                // A deleter that keeps removing the directory: let it finish first.
                std::thread::sleep(std::time::Duration::from_micros(
                    250 << (attempt - 4).min(6),
                ));
            }
            let Some(parent) = self.parent_for_write(key, parent_rel, created)? else {
                continue;
            };
            // Never replace a directory, a link or a device: only a block.
            match sys::stat_at(parent.as_fd(), leaf) {
                Ok(st) if !sys::is_regular(&st) => {
                    return Err(Error::new(ErrorKind::Conflict, Op::Write)
                        .with_key(key)
                        .with_detail("a directory or another non-regular file has this name")
                        .into())
                }
                Ok(_) | Err(Errno::NOENT) => {}
                Err(e) => return Err(error(Op::Write, key, e).into()),
            }
            let renamed = match temp {
                Some(temp) => rustix::fs::renameat(work.fd(), temp, &parent, leaf),
                None => Err(Errno::XDEV),
            };
            match renamed {
                Ok(()) => {}
                Err(Errno::NOENT) if temp.is_some_and(|t| !work.has(t)) => {
                    return Err(Retry::AreaGone)
                }
                // The parent was removed by a concurrent delete's clean-up.
                Err(Errno::NOENT) => continue,
                // The block's directory is on another mount: write it there.
                Err(Errno::XDEV) => {
                    self.mounts_below.store(true, Ordering::Relaxed);
                    match self.write_beside(work, key, &parent, leaf, data, record) {
                        Ok(()) => {}
                        Err(Retry::ParentGone) => continue,
                        Err(other) => return Err(other),
                    }
                    if let Some(temp) = temp {
                        work.remove(temp);
                    }
                }
                Err(e) => return Err(rename_error(key, e).into()),
            }
            return self
                .make_durable(key, parent_rel, parent)
                .map_err(Retry::Fail);
        }
        Err(Error::new(ErrorKind::Backend, Op::Write)
            .with_key(key)
            .with_detail("its directory kept disappearing under concurrent deletes")
            .with_retryable(true)
            .into())
    }

    /// Whether the block's directory (when it exists) is on another mount, or another
    /// btrfs subvolume (same mount, its own device), than the work directory.
    fn on_other_mount(&self, key: &str, work: &WorkDir) -> bool {
        let (parent_rel, _) = sys::split_parent(key);
        sys::open_dir(self.base(), parent_rel)
            .is_ok_and(|parent| sys::filesystem_of(parent.as_fd()) != sys::filesystem_of(work.fd()))
    }

    /// Writes the block through a temporary file in its own directory (which is on
    /// another mount than the internal area).
    fn write_beside(
        &self,
        work: &WorkDir,
        key: &str,
        parent: &OwnedFd,
        leaf: &str,
        data: &[u8],
        record: Option<&Sealing<'_>>,
    ) -> Result<(), Retry> {
        let mut name = BESIDE.to_vec();
        name.extend_from_slice(format!("{}-{}", work.id(), work.next_number()).as_bytes());
        let name = name.as_slice();
        let file = match create_exact(parent.as_fd(), name, self.config.file_mode) {
            Ok(file) => file,
            // The directory was removed since it was opened.
            Err(Errno::NOENT) => return Err(Retry::ParentGone),
            Err(e) => return Err(error(Op::Write, key, e).into()),
        };
        let written = fill(file.as_fd(), data, record, self.config.fsync)
            .map(|larger| self.learn_chunk(file.as_fd(), larger));
        drop(file);
        let renamed = written.and_then(|()| rustix::fs::renameat(parent, name, parent, leaf));
        if let Err(e) = renamed {
            let _ = rustix::fs::unlinkat(parent, name, AtFlags::empty());
            return Err(rename_error(key, e).into());
        }
        Ok(())
    }

    /// Takes `larger`, the chunk a record written to `file` needed to fit
    /// ([`set_record`]), as the store's from now on when `file` is on the base's
    /// filesystem; a directory below the base on another filesystem keeps finding it.
    fn learn_chunk(&self, file: BorrowedFd<'_>, larger: Option<u64>) {
        let Some(larger) = larger else {
            return;
        };
        // A record also fails to fit when the disk is full (ext4 answers "no space" for
        // both): only a filesystem with room to spare teaches the store its chunk.
        let roomy = rustix::fs::fstatvfs(file)
            .is_ok_and(|vfs| vfs.f_bavail.saturating_mul(vfs.f_frsize) >= ROOMY);
        if roomy && rustix::fs::fstat(file).is_ok_and(|st| st.st_dev == self.base_dev) {
            let before = self.chunk.fetch_max(larger, Ordering::Relaxed);
            #[cfg(feature = "tracing")]
            if before < larger {
                tracing::info!(
                    backend = "filesystem",
                    path = %self.base_path.display(),
                    chunk = larger,
                    "checksum records of {before}-byte chunks do not fit this filesystem: taking {larger}-byte chunks"
                );
            }
            let _ = before;
        }
    }

    /// With `fsync`: syncs the block's directory and the new directories on its path.
    fn make_durable(&self, key: &str, parent_rel: &str, parent: OwnedFd) -> Result<()> {
        if !self.config.fsync {
            return Ok(());
        }
        sys::sync_dir(parent.as_fd()).map_err(|e| error(Op::Write, key, e))?;
        drop(parent);
        self.sync_new_dirs(key, parent_rel)
    }

    /// Removes the block file `key`; `Ok(false)` when there was none.
    fn remove(&self, op: Op, key: &str) -> Result<bool> {
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

    /// Removes the directory `rel` if it is empty; whether it did.
    fn remove_dir(&self, rel: &str) -> bool {
        let (parent_rel, name) = sys::split_parent(rel);
        let Ok(parent) = sys::open_dir(self.base(), parent_rel) else {
            return false;
        };
        self.remove_child_dir(parent.as_fd(), name, rel)
    }

    /// Removes the directory `name` (key path `rel`) in `parent` if it is empty and on
    /// the same filesystem: an empty btrfs subvolume or dataset below the base is an
    /// operator's, not garbage.
    fn remove_child_dir(&self, parent: BorrowedFd<'_>, name: &str, rel: &str) -> bool {
        let same_device = rustix::fs::fstat(parent)
            .ok()
            .zip(sys::stat_at(parent, name).ok())
            .is_some_and(|(p, c)| p.st_dev == c.st_dev);
        if !same_device {
            return false;
        }
        // The record read before the removal is the one of the directory removed: no
        // directory of that name can be made while it exists.
        let record = self.new_dirs.get(rel);
        match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
            Ok(()) => {}
            // Not empty (a block or another writer's file arrived), already gone, a
            // mount point: the directory is not garbage.
            Err(Errno::NOTEMPTY | Errno::EXIST | Errno::NOENT | Errno::BUSY) => return false,
            Err(e) => {
                gave_up("removing an empty directory", rel, e);
                return false;
            }
        }
        if let Some(record) = record {
            self.new_dirs.forget(rel, record.generation);
        }
        true
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
            if !self.remove_child_dir(parent.as_fd(), name, rel) {
                break;
            }
            last_parent = Some(parent);
            rel = parent_rel;
        }
        if let (true, Some(parent)) = (self.config.fsync, last_parent) {
            let _ = sys::sync_dir(parent.as_fd());
        }
    }

    /// Deletes the blocks in the directory `fd` (key path `path`) whose names start with
    /// `filter`, and everything below its matching subdirectories, one directory at a
    /// time: unlinks through the directory's descriptor, removes the subdirectories
    /// left empty, and syncs each directory it changed once.
    fn delete_in(
        &self,
        fd: BorrowedFd<'_>,
        path: &str,
        filter: &str,
        tally: &mut DeleteTally,
    ) -> Result<()> {
        let listing = read_dir(fd, path, filter, None).map_err(|e| {
            error(
                Op::DeletePrefix,
                if path.is_empty() { "(base)" } else { path },
                e,
            )
        })?;
        let mut changed = false;
        for name in &listing.foreign {
            changed |= self.remove_stale_beside(fd, name);
        }
        for entry in listing.entries {
            let key = join(path, &entry.name);
            if entry.dir {
                let child = match sys::open_child_dir(fd, &entry.name) {
                    Ok(child) => child,
                    Err(e) if means_absent(e) => continue,
                    Err(e) => {
                        tally.failed(key.clone(), error(Op::DeletePrefix, &key, e));
                        continue;
                    }
                };
                if let Err(e) = self.delete_in(child.as_fd(), &key, "", tally) {
                    tally.failed(key.clone(), e);
                }
                drop(child);
                changed |= self.remove_child_dir(fd, &entry.name, &key);
                continue;
            }
            match rustix::fs::unlinkat(fd, entry.name.as_str(), AtFlags::empty()) {
                Ok(()) => {
                    tally.removed(1);
                    changed = true;
                }
                Err(e) if means_absent(e) => {}
                Err(e) => tally.failed(key.clone(), error(Op::DeletePrefix, &key, e)),
            }
        }
        if changed && self.config.fsync {
            let shown = if path.is_empty() { "(base)" } else { path };
            sys::sync_dir(fd).map_err(|e| error(Op::DeletePrefix, shown, e))?;
        }
        Ok(())
    }

    /// Removes a temporary file made beside a block by a store that is gone (a crash
    /// in the middle of a write); whether it did.
    fn remove_stale_beside(&self, dir: BorrowedFd<'_>, name: &[u8]) -> bool {
        let Some(rest) = name.strip_prefix(BESIDE) else {
            return false;
        };
        let Ok(rest) = std::str::from_utf8(rest) else {
            return false;
        };
        // `{work id}-{n}`; the work id itself holds dashes.
        let Some((id, _)) = rest.rsplit_once('-') else {
            return false;
        };
        if !work::abandoned(self.base(), id) {
            return false;
        }
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) => true,
            Err(e) => {
                gave_up(
                    "removing a temporary file a dead store left beside a block",
                    id,
                    e,
                );
                false
            }
        }
    }

    /// A write, with the checksum record when there is one.
    fn write_checked(&self, key: &str, data: &[u8], record: Option<&Sealing<'_>>) -> Result<()> {
        self.write_with_retries(key, data, record).map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                // A directory vanished under the write however often it started over.
                Error::new(ErrorKind::Backend, Op::Write)
                    .with_key(key)
                    .with_detail(format!("the block's directory kept vanishing: {e}"))
                    .with_retryable(true)
            } else {
                e
            }
        })
    }

    /// Opens the block `key` for reading: its descriptor and size. What is at the path
    /// is looked at first, so a FIFO or a device is never opened (opening a FIFO lets a
    /// writer waiting on it go on; opening a device can start a driver's action).
    fn open_block(&self, op: Op, key: &str) -> Result<(OwnedFd, u64)> {
        let (fd, st) = self.open_file_block(op, key)?;
        let size = st.st_size as u64;
        if size > BLOCK_SIZE as u64 {
            return Err(too_large(op, key, size));
        }
        Ok((fd, size))
    }

    /// As [`FsBackend::open_block`], but a regular file of any size (with a checksum
    /// record, a file longer than a block is a damaged block), and all `fstat` says.
    fn open_file_block(&self, op: Op, key: &str) -> Result<(OwnedFd, Stat)> {
        match sys::stat_at(self.base(), key) {
            Ok(st) if !sys::is_regular(&st) => {
                return Err(Error::new(ErrorKind::NotFound, op)
                    .with_key(key)
                    .with_detail("not a regular file"))
            }
            // A regular file, or nothing that a lookup without links can reach: the
            // open below decides (it refuses links on the way).
            _ => {}
        }
        let fd = match sys::open_file(self.base(), key) {
            Ok(fd) => fd,
            Err(e) if means_absent(e) => {
                return Err(error_as(ErrorKind::NotFound, op, key, e, "no block"))
            }
            // A socket (ENXIO), a device without a driver, or one that refuses: if the
            // path is not a regular file, there is no block.
            Err(e) => {
                return Err(match self.stat_block(op, key) {
                    Err(not_found) if not_found.kind() == ErrorKind::NotFound => not_found,
                    _ => error(op, key, e),
                })
            }
        };
        let st = self.file_stat(op, key, fd.as_fd())?;
        Ok((fd, st))
    }

    /// The size of the block `key`, looked at without opening it for reading.
    fn stat_block(&self, op: Op, key: &str) -> Result<u64> {
        let fd = sys::open_path(self.base(), key).map_err(|e| {
            if means_absent(e) {
                error_as(ErrorKind::NotFound, op, key, e, "no block")
            } else {
                error(op, key, e)
            }
        })?;
        self.block_len(op, key, fd.as_fd())
    }

    /// The size of an open block, checking that it is a block this store could have
    /// written: a regular file of at most `BLOCK_SIZE` bytes.
    fn block_len(&self, op: Op, key: &str, fd: BorrowedFd<'_>) -> Result<u64> {
        let size = self.file_len(op, key, fd)?;
        if size > BLOCK_SIZE as u64 {
            return Err(too_large(op, key, size));
        }
        Ok(size)
    }

    /// The size of an open file, checking that it is a regular file.
    fn file_len(&self, op: Op, key: &str, fd: BorrowedFd<'_>) -> Result<u64> {
        Ok(self.file_stat(op, key, fd)?.st_size as u64)
    }

    /// What `fstat` says of an open file, checking that it is a regular file.
    fn file_stat(&self, op: Op, key: &str, fd: BorrowedFd<'_>) -> Result<Stat> {
        let st = rustix::fs::fstat(fd).map_err(|e| error(op, key, e))?;
        if !sys::is_regular(&st) {
            return Err(Error::new(ErrorKind::NotFound, op)
                .with_key(key)
                .with_detail("not a regular file"));
        }
        Ok(st)
    }
}

/// Whether the filesystem at `base` is one whose file times this machine's kernel sets
/// from its own clock, so a file's change time always moves past an earlier one
/// ([`Records`]): ext4, XFS, btrfs, tmpfs, overlayfs, F2FS, ZFS, bcachefs. Not network
/// or FUSE filesystems, whose times come from another clock (or are cached).
fn remembers_records(base: BorrowedFd<'_>) -> bool {
    const LOCAL: [u32; 8] = [
        0xEF53,      // ext2/3/4
        0x5846_5342, // XFS
        0x9123_683E, // btrfs
        0x0102_1994, // tmpfs
        0x794C_7630, // overlayfs
        0xF2F5_2010, // F2FS
        0x2FC1_2FC1, // ZFS
        0xCA45_1A4E, // bcachefs
    ];
    // Magic numbers are 32 bits; `f_type` is a signed word of the platform's width.
    rustix::fs::fstatfs(base).is_ok_and(|fs| LOCAL.contains(&(fs.f_type as u32)))
}

/// The time since the Unix epoch, as file times count it.
fn now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// A failed read of a block's bytes `start..end`. `EIO` there means the bytes are
/// damaged where they rest: the device could not read them, or the filesystem's own
/// checksums (btrfs, ZFS) refused them before ours could. That block is `Corrupt`, like
/// one our checksums refuse, so a scrub counts it and a copy repairs it.
fn read_error(op: Op, key: &str, e: Errno, start: u64, end: u64) -> Error {
    if e != Errno::IO {
        return error(op, key, e);
    }
    Error::new(ErrorKind::Corrupt, op)
        .with_key(key)
        .with_detail(format!(
            "reading bytes {start}..{end} failed with an I/O error: the device or the filesystem's own checksums found them damaged"
        ))
}

/// A file too long to be a block.
fn too_large(op: Op, key: &str, size: u64) -> Error {
    Error::new(ErrorKind::Backend, op)
        .with_key(key)
        .with_detail(format!(
            "the file holds {size} bytes, more than BLOCK_SIZE ({BLOCK_SIZE}): not a block of this store"
        ))
}

/// The checksum record of an open block, `None` when it has none. A record too long
/// to be one comes back empty, which the checks call corrupt.
fn read_record(fd: BorrowedFd<'_>) -> std::result::Result<Option<Arc<[u8]>>, Errno> {
    let mut buf = [0u8; crate::integrity::MAX_RECORD];
    match rustix::fs::fgetxattr(fd, SUMS_XATTR, &mut buf[..]) {
        Ok(n) => Ok(Some(Arc::from(&buf[..n]))),
        Err(Errno::NODATA | Errno::NOTSUP) => Ok(None),
        Err(Errno::RANGE) => Ok(Some(Arc::from(&[][..]))),
        Err(e) => Err(e),
    }
}

/// A clean-up that could not be done and is left for later, at `warn`.
fn gave_up(what: &str, path: &str, e: Errno) {
    #[cfg(feature = "tracing")]
    tracing::warn!(backend = "filesystem", path, error = %e, "clean-up gave up: {what}");
    #[cfg(not(feature = "tracing"))]
    let _ = (what, path, e);
}

/// The error for `errno` after retries; an absent directory after all of them is a
/// store that keeps being cleaned up under the call, never "no such block".
fn vanished_or(op: Op, key: &str, errno: Errno, why: &str) -> Error {
    if errno == Errno::NOENT {
        error_as(ErrorKind::Backend, op, key, errno, why).with_retryable(true)
    } else {
        error(op, key, errno).with_detail(why.to_owned())
    }
}

/// A failed rename of a finished temporary file onto a block's path.
fn rename_error(key: &str, e: Errno) -> Error {
    match e {
        Errno::ISDIR | Errno::NOTDIR | Errno::NOTEMPTY | Errno::EXIST => error_as(
            ErrorKind::Conflict,
            Op::Write,
            key,
            e,
            "a directory has this name",
        ),
        e => error(Op::Write, key, e),
    }
}

/// A failed lookup of a write's parent: a file or a link on the path is a Conflict.
fn in_the_way(key: &str, e: Errno) -> Error {
    match e {
        Errno::NOTDIR | Errno::LOOP | Errno::XDEV => error_as(
            ErrorKind::Conflict,
            Op::Write,
            key,
            e,
            "a file or link is in the way",
        ),
        e => error(Op::Write, key, e),
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

/// What room a filesystem gives a file for the checksum record.
enum Room {
    /// The smallest chunk whose record for a full block fits.
    Chunk(u64),
    /// The probe could not be made now (no space or inodes): keep the default.
    Unknown,
    /// No user extended attributes at all (ramfs, some network filesystems).
    None,
}

/// Probes, on a file in the work directory, the smallest chunk (from `from`, the one
/// configured, up) whose record for a 4 MiB block the filesystem accepts: ext4 holds a
/// file's attributes in one block, so with 1 KiB blocks the 2,072-byte record of 8 KiB
/// chunks does not fit, where the 536 bytes of 32 KiB chunks do.
fn record_room(work: &WorkDir, from: u64) -> Room {
    let name = "Xattr-Probe";
    let Ok(fd) = sys::create_new(work.fd(), name, OFlags::WRONLY, 0o600) else {
        return Room::Unknown;
    };
    let mut room = Room::None;
    let mut chunk = from;
    while chunk <= 1024 * 1024 {
        let record = vec![0u8; 24 + 4 * (BLOCK_SIZE as u64).div_ceil(chunk) as usize];
        match rustix::fs::fsetxattr(&fd, SUMS_XATTR, &record, rustix::fs::XattrFlags::empty()) {
            Ok(()) => {
                room = Room::Chunk(chunk);
                break;
            }
            Err(Errno::NOTSUP | Errno::PERM) => break,
            // Too large for this filesystem: try larger chunks, a smaller record.
            Err(Errno::NOSPC | Errno::TOOBIG | Errno::RANGE | Errno::DQUOT) => chunk *= 2,
            Err(_) => {
                room = Room::Unknown;
                break;
            }
        }
    }
    drop(fd);
    work.remove(name);
    room
}

/// The checksum record a write stores: given, or taken as the data is first written
/// (then kept for the write's retries).
pub(super) enum Sealing<'a> {
    Given(&'a [u8]),
    Taken {
        chunk: u64,
        record: OnceCell<Vec<u8>>,
    },
}

impl Sealing<'_> {
    /// The record, once there is one.
    fn record(&self) -> Option<&[u8]> {
        match self {
            Sealing::Given(record) => Some(record),
            Sealing::Taken { record, .. } => record.get().map(Vec::as_slice),
        }
    }
}

/// Free space (16 blocks) that shows a record failed to fit for want of attribute room
/// in its file, not of space ([`FsBackend::learn_chunk`]).
const ROOMY: u64 = 16 * BLOCK_SIZE as u64;

/// Bytes written per `write` call when the checksums are taken on the way (a multiple
/// of every chunk up to it; a larger chunk is its own part).
const WRITE_PART: u64 = 512 * 1024;

/// Writes `data`, then the checksum record, to a new file and (with `fsync`) makes both
/// durable: a record is file metadata, which `fdatasync` may leave behind. Returns the
/// chunk of the record stored when the one given had to be taken again with larger
/// chunks to fit ([`set_record`]).
fn fill(
    file: BorrowedFd<'_>,
    data: &[u8],
    record: Option<&Sealing<'_>>,
    fsync: bool,
) -> std::result::Result<Option<u64>, Errno> {
    match record {
        Some(Sealing::Taken { chunk, record }) if record.get().is_none() => {
            // Each part's checksums just before the part is written: the kernel then
            // copies bytes the CPU's caches still hold (checksums first, then one
            // `write`, read 4 MiB from memory twice: 0.90 of an unchecked write).
            let mut sums = Summing::new(*chunk, data.len());
            let part = (*chunk).max(WRITE_PART) as usize;
            for part in data.chunks(part) {
                sums.add(part);
                sys::write_all(file, part)?;
            }
            let _ = record.set(sums.finish().encode());
        }
        _ => sys::write_all(file, data)?,
    }
    let larger = match record.and_then(Sealing::record) {
        Some(record) => set_record(file, data, record)?,
        None => None,
    };
    match (fsync, record) {
        (false, _) => Ok(()),
        (true, Some(_)) => rustix::fs::fsync(file),
        (true, None) => rustix::fs::fdatasync(file),
    }?;
    Ok(larger)
}

/// Stores `record`, the checksums of `data`, on `file`. Where the filesystem has no room
/// for it (ext4 keeps all of a file's attributes in one block of the filesystem's: a
/// directory below the base on another filesystem, or a store that could not probe at
/// open), the checksums of `data` are taken again with twice the chunk, and again, up
/// to 1 MiB chunks (a 40-byte record). Returns that chunk when it was needed.
fn set_record(
    file: BorrowedFd<'_>,
    data: &[u8],
    record: &[u8],
) -> std::result::Result<Option<u64>, Errno> {
    let set = |record: &[u8]| {
        rustix::fs::fsetxattr(file, SUMS_XATTR, record, rustix::fs::XattrFlags::empty())
    };
    let mut failed = match set(record) {
        Ok(()) => return Ok(None),
        Err(e) => e,
    };
    let mut chunk = crate::integrity::record_chunk(record).unwrap_or(FS_CHUNK);
    while matches!(failed, Errno::NOSPC | Errno::TOOBIG | Errno::RANGE) && chunk < 1024 * 1024 {
        chunk *= 2;
        let sums = Sums::of(data, chunk);
        // The record given must be of these bytes: never bless other bytes.
        if record.get(20..24) != Some(&sums.whole().to_le_bytes()[..]) {
            break;
        }
        match set(&sums.encode()) {
            Ok(()) => return Ok(Some(chunk)),
            Err(e) => failed = e,
        }
    }
    Err(failed)
}

/// Whether names differing only in case name one file, probed in the work directory;
/// `None` when the probe cannot be made now (no inode or space left, a read-only
/// mount): a store that opens on a full disk must still open, for reads and deletes.
fn case_insensitive(work: &WorkDir) -> Result<Option<bool>> {
    let upper = "Case-Probe";
    let fd = match sys::create_new(work.fd(), upper, OFlags::WRONLY, 0o600) {
        Ok(fd) => fd,
        Err(Errno::NOSPC | Errno::DQUOT | Errno::ROFS | Errno::ACCESS | Errno::PERM) => {
            return Ok(None)
        }
        Err(e) => return Err(error(Op::Open, "case probe", e)),
    };
    drop(fd);
    let aliased = sys::stat_at(work.fd(), "case-probe").is_ok();
    work.remove(upper);
    Ok(Some(aliased))
}

impl Backend for FsBackend {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        self.write_checked(key, data, None)
    }

    fn checksums(&self) -> Checksums {
        self.checksums
    }

    fn checksum_chunk(&self) -> u64 {
        self.chunk.load(Ordering::Relaxed)
    }

    fn write_sealed(&self, key: &str, data: &[u8], seal: &Seal) -> Result<()> {
        self.write_checked(key, data, Some(&Sealing::Given(seal.record())))
    }

    fn write_chunked(&self, key: &str, data: &[u8], chunk: u64) -> Result<()> {
        let sealing = Sealing::Taken {
            chunk,
            record: OnceCell::new(),
        };
        self.write_checked(key, data, Some(&sealing))
    }

    fn read_sealed(&self, key: &str, range: Option<(u64, u64)>) -> Result<Sealed> {
        let op = if range.is_some() {
            Op::ReadRange
        } else {
            Op::Read
        };
        let (fd, st) = self.open_file_block(op, key)?;
        let size = st.st_size as u64;
        // Ranges of a block read before reuse its record while its file is unchanged.
        let stamp = Stamp::of(&st);
        let remembered = match range {
            Some(_) => self.records.get(key, &stamp),
            None => None,
        };
        let mut granules = remembered.as_ref().and_then(|r| r.granules.clone());
        let record = match &remembered {
            Some(remembered) => Some(remembered.record.clone()),
            None => {
                let record = read_record(fd.as_fd()).map_err(|e| error(op, key, e))?;
                if let (Some(record), Some(_)) = (&record, range) {
                    if self.remember && st.st_dev == self.base_dev && stamp.settled(now()) {
                        granules = self.records.put(key, stamp, record.clone());
                    }
                }
                record
            }
        };
        if record.is_none() && size > BLOCK_SIZE as u64 {
            return Err(too_large(op, key, size));
        }
        let (start, end) = match range {
            // A file longer than any block with a record: corrupt, whatever it holds.
            _ if size > BLOCK_SIZE as u64 => (0, 0),
            None => (0, size),
            Some((offset, length)) if record.is_some() => {
                let chunk = record.as_deref().and_then(record_chunk).unwrap_or(FS_CHUNK);
                // Only the pieces around the range, where all were verified before.
                let wide = granules
                    .as_ref()
                    .and_then(|g| g.around(offset, length, chunk))
                    .unwrap_or_else(|| widen(offset, length, chunk));
                (wide.start.min(size), wide.end.min(size))
            }
            Some((offset, length)) => {
                let r = clamp_range(key, size, offset, length)?;
                (r.start as u64, r.end as u64)
            }
        };
        let mut data = Vec::with_capacity((end - start) as usize);
        let crc32c = if range.is_none() && record.is_some() {
            // A large block's CRC is taken while it is read (`overlap`).
            overlap::read_whole(fd.as_fd(), &mut data, (end - start) as usize)
        } else {
            sys::pread_append(fd.as_fd(), &mut data, (end - start) as usize, start).map(|_| None)
        }
        .map_err(|e| read_error(op, key, e, start, end))?;
        // Truncated since it was opened: what is there now is what was read.
        let size = if (data.len() as u64) < end - start {
            start + data.len() as u64
        } else {
            size
        };
        if record.is_none() && range.is_some_and(|(offset, _)| offset >= size) {
            return Err(offset_past_end(key, range.map_or(0, |r| r.0), size));
        }
        Ok(Sealed {
            data,
            start,
            size,
            record,
            remembered: remembered.is_some(),
            crc32c,
            granules,
        })
    }

    /// A range checked with a remembered record is read again with the stored one.
    fn reread_corrupt(&self, key: &str, sealed: &Sealed) -> bool {
        if sealed.remembered {
            self.records.forget(key);
        }
        sealed.remembered
    }

    fn read(&self, key: &str) -> Result<Vec<u8>> {
        let (fd, size) = self.open_block(Op::Read, key)?;
        let mut data = Vec::with_capacity(size as usize);
        sys::pread_append(fd.as_fd(), &mut data, size as usize, 0)
            .map_err(|e| read_error(Op::Read, key, e, 0, size))?;
        Ok(data)
    }

    fn read_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let (fd, size) = self.open_block(Op::ReadRange, key)?;
        let range = clamp_range(key, size, offset, length)?;
        let mut data = Vec::with_capacity(range.len());
        let n = sys::pread_append(fd.as_fd(), &mut data, range.len(), offset)
            .map_err(|e| read_error(Op::ReadRange, key, e, offset, range.end as u64))?;
        if n == 0 {
            // Truncated by someone else since it was opened.
            return Err(offset_past_end(key, offset, 0));
        }
        Ok(data)
    }

    fn read_range_into(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let (fd, size) = self.open_block(Op::ReadRange, key)?;
        let range = clamp_range(key, size, offset, buf.len() as u64)?;
        let n = sys::pread_full(fd.as_fd(), &mut buf[..range.len()], offset)
            .map_err(|e| read_error(Op::ReadRange, key, e, offset, range.end as u64))?;
        if n == 0 {
            return Err(offset_past_end(key, offset, 0));
        }
        Ok(n)
    }

    fn size(&self, key: &str) -> Result<u64> {
        self.stat_block(Op::Size, key)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.remove(Op::Delete, key).map(|_| ())
    }

    fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        // `a/b-` lives in directory `a`, among the names that start with `b-`.
        let (dir, filter) = sys::split_parent(prefix);
        let fd = match sys::open_dir(self.base(), dir) {
            Ok(fd) => fd,
            Err(e) if means_absent(e) => return Ok(0),
            Err(e) => return Err(error(Op::DeletePrefix, prefix, e)),
        };
        let mut tally = DeleteTally::default();
        self.delete_in(fd.as_fd(), dir, filter, &mut tally)?;
        drop(fd);
        self.remove_empty_dirs(dir);
        tally.outcome(prefix)
    }

    fn scan(&self, prefix: &str, start_after: Option<&str>, fields: Fields) -> Result<Blocks<'_>> {
        let walk = Walk::new(self.base(), prefix, start_after, fields);
        let shown = prefix.to_owned();
        Ok(Box::new(
            walk.map(move |b| b.map_err(|e| error(Op::List, &shown, e))),
        ))
    }

    fn about(&self) -> Vec<(&'static str, String)> {
        let checksums = match (self.config.checksums, self.checksums) {
            (Checksums::Crc32c, Checksums::Off) => {
                "off: the filesystem keeps no user extended attributes"
            }
            (_, used) => used.as_str(),
        };
        let mut about = vec![
            ("base_path", self.base_path.display().to_string()),
            ("checksums", checksums.to_owned()),
        ];
        if self.checksums != Checksums::Off {
            about.push((
                "checksum_chunk",
                format!("{} KiB", self.checksum_chunk() / 1024),
            ));
        }
        about
    }

    fn health(&self) -> Result<()> {
        let shown = self.base_path.display().to_string();
        let fail = |kind, why: &str| {
            Err(Error::new(kind, Op::Health)
                .with_key(&shown)
                .with_detail(why.to_owned()))
        };
        let held = rustix::fs::fstat(&self.base).map_err(|e| error(Op::Health, &shown, e))?;
        match rustix::fs::stat(&self.base_path) {
            Ok(st) if st.st_ino == held.st_ino && st.st_dev == held.st_dev => {}
            Ok(_) => {
                return fail(
                    ErrorKind::Config,
                    "base directory was replaced since the store was opened",
                )
            }
            Err(Errno::NOENT) => return fail(ErrorKind::Config, "base directory is missing"),
            Err(e) => return Err(error(Op::Health, &shown, e)),
        }
        let mut work = self.work(Op::Health, &shown)?;
        let (file, temp) = self
            .temp_file(Op::Health, &shown, &mut work)
            .map_err(|e| e.with_detail("write probe failed"))?;
        let written =
            sys::write_all(file.as_fd(), b"probe").and_then(|()| rustix::fs::fdatasync(&file));
        drop(file);
        work.remove(&temp);
        written.map_err(|e| error(Op::Health, &shown, e).with_detail("write probe failed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BlockStore;

    /// A hot block's small ranges read only the 1 KiB pieces they touch once a read
    /// has verified their chunks: 5 KiB for an unaligned 4 KiB range, not 16 KiB.
    #[test]
    fn ranges_of_a_hot_block_read_only_their_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(FsConfig::new(dir.path())).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        store.write_block("k", &data).unwrap();
        std::thread::sleep(super::super::records::SETTLED + std::time::Duration::from_millis(100));
        let backend = store.backend();
        let wide = |offset, length| {
            let sealed = backend.read_sealed("k", Some((offset, length))).unwrap();
            (sealed.start, sealed.data.len())
        };
        assert_eq!(wide(9000, 4096), (8192, 8192), "the chunk, first");
        let mut buf = [0u8; 4096];
        store.read_block_range_into("k", 9000, &mut buf).unwrap();
        assert_eq!(&buf[..], &data[9000..13_096]);
        assert_eq!(wide(9000, 4096), (8192, 5120), "then the pieces");
        assert_eq!(wide(10_240, 4096), (10_240, 4096));
        assert_eq!(wide(30_000, 4096), (24_576, 16_384), "chunks never read");
        // The block's short last chunk.
        assert_eq!(
            store.read_block_range("k", 99_000, 5000).unwrap(),
            &data[99_000..]
        );
        assert_eq!(wide(99_500, 100), (99_328, 672));
    }

    /// A remembered record that no longer matches the stored one (a file changed within
    /// one tick of the kernel's clock, its times unmoved) never makes a good block
    /// corrupt: the read is checked again with the stored record, which is then
    /// remembered instead.
    #[test]
    fn a_stale_remembered_record_is_replaced_not_believed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(FsConfig::new(dir.path())).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        store.write_block("k", &data).unwrap();
        // Records are remembered once their file has not changed for two seconds.
        let backend = store.backend();
        assert_eq!(
            store.read_block_range("k", 20_000, 10).unwrap(),
            &data[20_000..20_010]
        );
        assert_eq!(backend.records.len(), 0, "a file that just changed");
        std::thread::sleep(super::super::records::SETTLED + std::time::Duration::from_millis(100));
        assert_eq!(
            store.read_block_range("k", 20_000, 10).unwrap(),
            &data[20_000..20_010]
        );
        let (fd, st) = backend.open_file_block(Op::ReadRange, "k").unwrap();
        let stored = read_record(fd.as_fd()).unwrap().unwrap();
        let stamp = Stamp::of(&st);
        assert_eq!(
            backend
                .records
                .get("k", &stamp)
                .map(|r| r.record)
                .as_deref(),
            Some(&stored[..])
        );
        let other: Vec<u8> = data.iter().map(|b| b ^ 1).collect();
        let stale = crate::integrity::Sums::of(&other, FS_CHUNK).encode();
        backend.records.put("k", stamp, Arc::from(stale.clone()));
        assert_eq!(
            store.read_block_range("k", 20_000, 10).unwrap(),
            &data[20_000..20_010]
        );
        assert_eq!(
            backend
                .records
                .get("k", &stamp)
                .map(|r| r.record)
                .as_deref(),
            Some(&stored[..])
        );
        // The same for a range read into the caller's buffer.
        backend.records.put("k", stamp, Arc::from(stale));
        let mut buf = [0u8; 4096];
        assert_eq!(
            store.read_block_range_into("k", 90_000, &mut buf).unwrap(),
            4096
        );
        assert_eq!(buf[..], data[90_000..94_096]);
        assert_eq!(
            backend
                .records
                .get("k", &stamp)
                .map(|r| r.record)
                .as_deref(),
            Some(&stored[..])
        );
    }
}
