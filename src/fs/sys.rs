//! The system calls of the filesystem backend, all relative to a directory descriptor and
//! none following a symbolic link, and the mapping of their errors onto error kinds.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use crate::error::{Error, ErrorKind};

/// Every lookup stays below the base directory and follows no link of any kind.
const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Set once `openat2` turned out to be missing (old kernels, some sandboxes).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens `rel` (a valid key or a prefix of one, never with `.` or `..` segments) below
/// `base` without following any symbolic link.
pub(crate) fn open_beneath(
    base: BorrowedFd<'_>,
    rel: &str,
    flags: OFlags,
) -> Result<OwnedFd, Errno> {
    let rel = if rel.is_empty() { "." } else { rel };
    let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        // EAGAIN means a concurrent rename raced with the lookup; it is safe to retry.
        for _ in 0..64 {
            match rustix::fs::openat2(base, rel, flags, Mode::empty(), RESOLVE) {
                Err(Errno::AGAIN) => continue,
                Err(Errno::NOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    break;
                }
                other => return other,
            }
        }
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            return Err(Errno::AGAIN);
        }
    }
    open_by_components(base, rel, flags)
}

/// The same as `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, one component at
/// a time: keys have no `..` segments, so each step stays below `base`.
fn open_by_components(base: BorrowedFd<'_>, rel: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let mut parts = rel.split('/').peekable();
    let mut current: Option<OwnedFd> = None;
    while let Some(part) = parts.next() {
        let at = current.as_ref().map_or(base, |fd| fd.as_fd());
        let last = parts.peek().is_none();
        let next = rustix::fs::openat(
            at,
            part,
            if last { flags } else { dir_flags },
            Mode::empty(),
        )?;
        current = Some(next);
    }
    current.ok_or(Errno::INVAL)
}

/// Opens a directory below `base` for reading entries, `fsync` and `*at` calls.
pub(crate) fn open_dir(base: BorrowedFd<'_>, rel: &str) -> Result<OwnedFd, Errno> {
    open_beneath(base, rel, OFlags::RDONLY | OFlags::DIRECTORY)
}

/// Opens a block file for reading. `O_NONBLOCK` keeps a planted FIFO from blocking.
pub(crate) fn open_file(base: BorrowedFd<'_>, rel: &str) -> Result<OwnedFd, Errno> {
    open_beneath(base, rel, OFlags::RDONLY | OFlags::NONBLOCK)
}

/// Opens a path only to look at it (`fstat`), without read permission or side effects.
pub(crate) fn open_path(base: BorrowedFd<'_>, rel: &str) -> Result<OwnedFd, Errno> {
    open_beneath(base, rel, OFlags::PATH)
}

/// Looks at `name` in `dir` without following a link.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &str) -> Result<Stat, Errno> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

/// Whether a `stat` describes a regular file.
pub(crate) fn is_regular(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
}

/// Reads at `offset` until `buf` is full or the file ends; returns the count.
pub(crate) fn pread_full(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pread(fd, &mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Appends up to `want` bytes read at `offset` to `out` (whose spare capacity must hold
/// them), without zero-filling first; returns the count.
pub(crate) fn pread_append(
    fd: BorrowedFd<'_>,
    out: &mut Vec<u8>,
    want: usize,
    offset: u64,
) -> Result<usize, Errno> {
    let start = out.len();
    let goal = start + want;
    debug_assert!(out.capacity() >= goal);
    while out.len() < goal {
        let done = out.len() - start;
        let remaining = goal - out.len();
        let spare = &mut out.spare_capacity_mut()[..remaining];
        match rustix::io::pread(fd, spare, offset + done as u64) {
            Ok(([], _)) => break,
            Ok((filled, _)) => {
                let n = filled.len();
                // SAFETY: `pread` initialised the first `n` bytes of the spare capacity.
                unsafe { out.set_len(out.len() + n) };
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out.len() - start)
}

/// Writes all of `data` to a new file.
pub(crate) fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(0) => return Err(Errno::IO),
            Ok(n) => data = &data[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes a directory's entries durable.
pub(crate) fn sync_dir(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    rustix::fs::fsync(fd)
}

/// Splits a key into its parent directory (`""` for the base) and its last segment.
pub(crate) fn split_parent(rel: &str) -> (&str, &str) {
    match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    }
}

/// An errno as an error of `op` on `key`, by the usual mapping.
pub(crate) fn error(op: &'static str, key: &str, errno: Errno) -> Error {
    Error::from_io(op, io::Error::from(errno)).with_key(key)
}

/// An errno as an error of kind `kind` (for the cases where the mapping depends on the
/// operation, such as a symlink in the path: NotFound for a read, Conflict for a write).
pub(crate) fn error_as(
    kind: ErrorKind,
    op: &'static str,
    key: &str,
    errno: Errno,
    why: &str,
) -> Error {
    Error::new(kind, op)
        .with_key(key)
        .with_detail(why.to_owned())
        .with_source(io::Error::from(errno))
}

/// Whether an errno from a lookup means "there is no block here": absent, below a
/// file, a symbolic link in the way, or a directory.
pub(crate) fn means_absent(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::ISDIR | Errno::XDEV
    )
}
