//! Walking the blocks below a prefix: a depth-first walk that reads one directory at a
//! time, in key order, holding one descriptor per directory level (so a store of any
//! breadth lists within a small descriptor limit) and one directory's names per level
//! in memory (never the whole store).
//!
//! # Order
//!
//! Keys are sorted bytewise. Within one directory a subdirectory `n` holds keys that
//! all start with `n/`, so entries are ordered by their name, with `/` appended for a
//! directory: `a-c` (a file) comes before the keys of directory `a` because `-` sorts
//! before `/`.

use std::cmp::Ordering;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::FileType;
use rustix::io::Errno;

use crate::backend::Fields;
use crate::key::{validate_key, RESERVED_NAME};
use crate::store::BlockRef;

use super::sys;

/// One entry of a directory: its name and whether it is a directory (regular files
/// otherwise; links and odd files are dropped when the directory is read).
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) dir: bool,
}

impl Entry {
    /// Key order of two entries of one directory.
    fn key_cmp(&self, other: &Entry) -> Ordering {
        let slash = |e: &Entry| e.dir.then_some(b'/');
        self.name
            .bytes()
            .chain(slash(self))
            .cmp(other.name.bytes().chain(slash(other)))
    }
}

/// The key of `name` in the directory whose key path is `path` (`""` for the base).
pub(crate) fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        let mut key = String::with_capacity(path.len() + 1 + name.len());
        key.push_str(path);
        key.push('/');
        key.push_str(name);
        key
    }
}

/// What one read of a directory found.
pub(crate) struct Listing {
    /// Blocks and subdirectories whose names are valid key segments, in key order.
    pub(crate) entries: Vec<Entry>,
    /// Names that are not UTF-8: not keys, but possibly this store's own temporary
    /// files made beside a block (see `FsStore`'s `# Mounts below the base`).
    pub(crate) foreign: Vec<Vec<u8>>,
}

/// Reads the directory `fd` (key path `path`) whole: the regular files and directories
/// whose names start with `filter` and whose keys are valid and come after
/// `start_after`, in key order. Links and other non-regular files are left out; so is
/// the internal area.
pub(crate) fn read_dir(
    fd: BorrowedFd<'_>,
    path: &str,
    filter: &str,
    start_after: Option<&str>,
) -> Result<Listing, Errno> {
    let mut reader = rustix::fs::Dir::read_from(fd)?;
    let mut entries = Vec::new();
    let mut foreign = Vec::new();
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let bytes = entry.file_name().to_bytes();
        let Ok(name) = std::str::from_utf8(bytes) else {
            foreign.push(bytes.to_vec());
            continue;
        };
        if name == "." || name == ".." || !name.starts_with(filter) {
            continue;
        }
        if path.is_empty() && name == RESERVED_NAME {
            continue;
        }
        let mut kind = entry.file_type();
        if kind == FileType::Unknown {
            // Some filesystems do not record types in directories: ask the entry.
            match sys::stat_at(fd, name) {
                Ok(st) => kind = FileType::from_raw_mode(st.st_mode),
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e),
            }
        }
        let dir = match kind {
            FileType::RegularFile => false,
            FileType::Directory => true,
            _ => continue,
        };
        let key = join(path, name);
        if validate_key(&key).is_err() {
            continue;
        }
        if let Some(after) = start_after {
            let done = if dir {
                // Every key below `key/` sorts before `after`.
                let below = format!("{key}/");
                after >= below.as_str() && !after.starts_with(&below)
            } else {
                key.as_str() <= after
            };
            if done {
                continue;
            }
        }
        entries.push(Entry {
            name: name.to_owned(),
            dir,
        });
    }
    entries.sort_unstable_by(Entry::key_cmp);
    Ok(Listing { entries, foreign })
}

/// One directory being walked.
struct Level {
    fd: OwnedFd,
    path: String,
    entries: std::vec::IntoIter<Entry>,
}

/// The blocks below a prefix, in key order, one directory at a time.
pub(crate) struct Walk<'a> {
    base: BorrowedFd<'a>,
    levels: Vec<Level>,
    fields: Fields,
    start_after: Option<String>,
    /// Set once the walk has started (or found nothing to walk).
    started: bool,
    prefix: String,
}

impl<'a> Walk<'a> {
    /// A walk of the blocks whose keys start with `prefix` and sort after
    /// `start_after`. Sizes are looked up only when `fields` asks for them (otherwise 0).
    pub(crate) fn new(
        base: BorrowedFd<'a>,
        prefix: &str,
        start_after: Option<&str>,
        fields: Fields,
    ) -> Walk<'a> {
        Walk {
            base,
            levels: Vec::new(),
            fields,
            start_after: start_after.map(str::to_owned),
            started: false,
            prefix: prefix.to_owned(),
        }
    }

    fn start(&mut self) -> Result<(), Errno> {
        self.started = true;
        // `a/b-` lives in directory `a`, among the names that start with `b-`.
        let (dir, filter) = sys::split_parent(&self.prefix);
        let fd = match sys::open_dir(self.base, dir) {
            Ok(fd) => fd,
            Err(e) if sys::means_absent(e) => return Ok(()),
            Err(e) => return Err(e),
        };
        let listing = read_dir(fd.as_fd(), dir, filter, self.start_after.as_deref())?;
        self.levels.push(Level {
            fd,
            path: dir.to_owned(),
            entries: listing.entries.into_iter(),
        });
        Ok(())
    }

    fn step(&mut self) -> Result<Option<BlockRef>, Errno> {
        if !self.started {
            self.start()?;
        }
        loop {
            let Some(level) = self.levels.last_mut() else {
                return Ok(None);
            };
            let Some(entry) = level.entries.next() else {
                self.levels.pop();
                continue;
            };
            let key = join(&level.path, &entry.name);
            if entry.dir {
                let child = match sys::open_child_dir(level.fd.as_fd(), &entry.name) {
                    Ok(fd) => fd,
                    // Removed or replaced since the directory was read.
                    Err(e) if sys::means_absent(e) => continue,
                    Err(e) => return Err(e),
                };
                let listing = read_dir(child.as_fd(), &key, "", self.start_after.as_deref())?;
                self.levels.push(Level {
                    fd: child,
                    path: key,
                    entries: listing.entries.into_iter(),
                });
                continue;
            }
            let mut size = 0;
            if self.fields == Fields::KeysAndSizes {
                match sys::stat_at(level.fd.as_fd(), &entry.name) {
                    Ok(st) if sys::is_regular(&st) => size = st.st_size as u64,
                    // Deleted or replaced since the directory was read.
                    Ok(_) | Err(Errno::NOENT) => continue,
                    Err(e) => return Err(e),
                }
            }
            return Ok(Some(BlockRef { key, size }));
        }
    }
}

impl Iterator for Walk<'_> {
    type Item = Result<BlockRef, Errno>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Some(block)) => Some(Ok(block)),
            Ok(None) => None,
            Err(e) => {
                // A failed walk ends: nothing after an error is reported.
                self.levels.clear();
                self.started = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_sort_as_their_keys() {
        let e = |name: &str, dir| Entry {
            name: name.into(),
            dir,
        };
        let mut entries = [e("a", true), e("a-c", false), e("a0", false), e("b", false)];
        entries.sort_by(Entry::key_cmp);
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a-c", "a", "a0", "b"]);
    }

    #[test]
    fn join_builds_keys() {
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("a/b", "c"), "a/b/c");
    }
}
