//! The system calls of the filesystem backend, all relative to a directory descriptor and
//! none following a symbolic link, and the mapping of their errors onto error kinds.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat, StatxFlags};
use rustix::io::Errno;

use crate::error::{Error, ErrorKind};
use crate::op::Op;

/// Every lookup stays below the base directory and follows no link of any kind.
const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Part of every open: no symbolic link is followed, no descriptor outlives an `exec`
/// (a daemon's children must not hold blocks, directories or the store's lock).
const SAFE: OFlags = OFlags::NOFOLLOW.union(OFlags::CLOEXEC);

/// A directory, opened to read its entries, sync it, or work below it.
const DIR: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(SAFE);

/// Anything opened that may not be a regular file: a planted FIFO must not block the
/// open, and a terminal must not become the process's controlling terminal. The type is
/// checked with `fstat` before any read.
const NO_SIDE_EFFECTS: OFlags = OFlags::NONBLOCK.union(OFlags::NOCTTY);

/// A block opened for reading.
const READ_FILE: OFlags = OFlags::RDONLY.union(NO_SIDE_EFFECTS);

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
    let flags = flags.union(SAFE);
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
    let mut parts = rel.split('/').peekable();
    let mut current: Option<OwnedFd> = None;
    while let Some(part) = parts.next() {
        let at = current.as_ref().map_or(base, |fd| fd.as_fd());
        let next = if parts.peek().is_none() {
            rustix::fs::openat(at, part, flags, Mode::empty())?
        } else {
            open_child_dir(at, part)?
        };
        current = Some(next);
    }
    current.ok_or(Errno::INVAL)
}

/// Opens the directory `name` in `at`, refusing a symbolic link.
pub(crate) fn open_child_dir(at: BorrowedFd<'_>, name: &str) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(at, name, DIR, Mode::empty())
}

/// Opens the base directory by its resolved path.
pub(crate) fn open_base(path: &Path) -> Result<OwnedFd, Errno> {
    rustix::fs::open(path, DIR, Mode::empty())
}

/// Creates the file `name` in `at`, which must not exist yet, with `mode` (less the
/// umask) and `access` (`O_RDONLY` or `O_WRONLY`).
pub(crate) fn create_new(
    at: BorrowedFd<'_>,
    name: impl rustix::path::Arg,
    access: OFlags,
    mode: u32,
) -> Result<OwnedFd, Errno> {
    let flags = access.union(OFlags::CREATE).union(OFlags::EXCL).union(SAFE);
    rustix::fs::openat(at, name, flags, Mode::from_raw_mode(mode))
}

/// Opens the existing file `name` in `at` read-only (to lock it), without blocking on
/// or being changed by whatever may have been planted there; the caller checks its type.
pub(crate) fn open_existing(at: BorrowedFd<'_>, name: &str) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(at, name, READ_FILE.union(SAFE), Mode::empty())
}

/// Opens a directory below `base` for reading entries, `fsync` and `*at` calls.
pub(crate) fn open_dir(base: BorrowedFd<'_>, rel: &str) -> Result<OwnedFd, Errno> {
    open_beneath(base, rel, DIR)
}

/// Opens a block file for reading.
pub(crate) fn open_file(base: BorrowedFd<'_>, rel: &str) -> Result<OwnedFd, Errno> {
    open_beneath(base, rel, READ_FILE)
}

/// Opens a path only to look at it (`fstat`), without read permission or side effects.
pub(crate) fn open_path(base: BorrowedFd<'_>, rel: &str) -> Result<OwnedFd, Errno> {
    open_beneath(base, rel, OFlags::PATH)
}

/// Looks at `name` in `dir` without following a link.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &str) -> Result<Stat, Errno> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

/// The id of the mount `fd` is on, where the kernel tells it (Linux 5.8 and later).
pub(crate) fn mount_id(fd: BorrowedFd<'_>) -> Option<u64> {
    let st = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID).ok()?;
    (st.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id)
}

/// Which filesystem `fd` is on: its mount and its device (a btrfs subvolume shares
/// its parent's mount but has a device of its own). A rename works only within one.
pub(crate) fn filesystem_of(fd: BorrowedFd<'_>) -> Option<(Option<u64>, u64)> {
    let st = rustix::fs::fstat(fd).ok()?;
    Some((mount_id(fd), st.st_dev))
}

/// Whether a `stat` describes a regular file.
pub(crate) fn is_regular(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
}

/// Reads at `offset` until `buf` is full or the file ends; returns the count.
pub(crate) fn pread_full(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
    let len = buf.len();
    // SAFETY: the same memory seen as possibly uninitialised; `pread` only ever writes
    // initialised bytes into it, so it stays initialised.
    let buf = unsafe {
        std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<std::mem::MaybeUninit<u8>>(), len)
    };
    pread_into(fd, buf, offset).map(<[u8]>::len)
}

/// Fills `buf` from `offset` up to the end of the file; returns the bytes read, as the
/// initialised start of `buf` (shorter than `buf` only at the end of the file).
pub(crate) fn pread_into<'a>(
    fd: BorrowedFd<'_>,
    buf: &'a mut [std::mem::MaybeUninit<u8>],
    offset: u64,
) -> Result<&'a [u8], Errno> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pread(fd, &mut buf[done..], offset + done as u64) {
            Ok(([], _)) => break,
            Ok((filled, _)) => done += filled.len(),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    // SAFETY: `pread` initialised `buf[..done]`, call after call with no gap.
    Ok(unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), done) })
}

/// Appends up to `want` bytes read at `offset` to `out` (whose spare capacity must hold
/// them), without zero-filling first; returns the count.
pub(crate) fn pread_append(
    fd: BorrowedFd<'_>,
    out: &mut Vec<u8>,
    want: usize,
    offset: u64,
) -> Result<usize, Errno> {
    debug_assert!(out.capacity() - out.len() >= want);
    let n = pread_into(fd, &mut out.spare_capacity_mut()[..want], offset)?.len();
    // SAFETY: `pread_into` initialised the first `n` bytes of the spare capacity.
    unsafe { out.set_len(out.len() + n) };
    Ok(n)
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
pub(crate) fn error(op: Op, key: &str, errno: Errno) -> Error {
    Error::from_io(op, io::Error::from(errno)).with_key(key)
}

/// An errno as an error of kind `kind` (for the cases where the mapping depends on the
/// operation, such as a symlink in the path: NotFound for a read, Conflict for a write).
pub(crate) fn error_as(kind: ErrorKind, op: Op, key: &str, errno: Errno, why: &str) -> Error {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What opening `rel` gave: the file's first bytes, or the errno. `ELOOP` and
    /// `ENOTDIR` are one answer (a link or a file in the way): every caller maps them
    /// alike, and `O_NOFOLLOW | O_DIRECTORY` on a link gives `ENOTDIR` where `openat2`
    /// gives `ELOOP`.
    fn outcome(opened: Result<OwnedFd, Errno>) -> Result<Vec<u8>, Errno> {
        let fd = opened.map_err(|e| if e == Errno::NOTDIR { Errno::LOOP } else { e })?;
        let mut buf = vec![0u8; 16];
        let n = match pread_full(fd.as_fd(), &mut buf, 0) {
            Ok(n) => n,
            Err(Errno::ISDIR) => 0,
            Err(e) => return Err(e),
        };
        buf.truncate(n);
        Ok(buf)
    }

    /// A path, how it is opened, and what that must give.
    type Case<'a> = (&'a str, OFlags, Result<&'a [u8], Errno>);

    /// The fallback for kernels without `openat2` refuses what `openat2` refuses.
    #[test]
    fn component_walk_matches_openat2() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), b"block").unwrap();
        std::os::unix::fs::symlink(root.join("a/b"), root.join("a/dirlink")).unwrap();
        std::os::unix::fs::symlink("b/f", root.join("a/filelink")).unwrap();
        let base = open_base(root).unwrap();
        let base = base.as_fd();
        let in_the_way = Err(Errno::LOOP);
        let cases: [Case<'_>; 8] = [
            ("a/b/f", READ_FILE, Ok(b"block")),
            ("a/b", DIR, Ok(b"")),
            ("a/dirlink/f", READ_FILE, in_the_way),
            ("a/dirlink", DIR, in_the_way),
            ("a/filelink", READ_FILE, in_the_way),
            ("a/missing/f", READ_FILE, Err(Errno::NOENT)),
            ("a/b/f/g", READ_FILE, in_the_way),
            ("a/b/f", DIR, in_the_way),
        ];
        for (rel, flags, want) in cases {
            let want = want.map(<[u8]>::to_vec);
            let walked = outcome(open_by_components(base, rel, flags.union(SAFE)));
            assert_eq!(walked, want, "component walk of {rel}");
            assert_eq!(
                outcome(open_beneath(base, rel, flags)),
                want,
                "openat2 of {rel}"
            );
        }
    }

    #[test]
    fn positioned_reads_append_after_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"0123456789").unwrap();
        let base = open_base(dir.path()).unwrap();
        let fd = open_file(base.as_fd(), "f").unwrap();
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(b"ab");
        assert_eq!(pread_append(fd.as_fd(), &mut out, 4, 3), Ok(4));
        assert_eq!(out, b"ab3456");
        // Past the end: what there is, then nothing.
        assert_eq!(pread_append(fd.as_fd(), &mut out, 8, 8), Ok(2));
        assert_eq!(out, b"ab345689");
        assert_eq!(pread_append(fd.as_fd(), &mut out, 4, 10), Ok(0));
        assert_eq!(out, b"ab345689");
        let mut buf = [0u8; 4];
        assert_eq!(pread_full(fd.as_fd(), &mut buf, 7), Ok(3));
        assert_eq!(&buf[..3], b"789");
    }

    #[test]
    fn split_parent_cuts_at_the_last_slash() {
        assert_eq!(split_parent("a/b/c"), ("a/b", "c"));
        assert_eq!(split_parent("a"), ("", "a"));
    }
}
