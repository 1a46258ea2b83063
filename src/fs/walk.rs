//! Listing: the blocks whose keys start with a prefix, walking only the directories the
//! prefix can reach.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::FileType;
use rustix::io::Errno;

use crate::key::{validate_key, RESERVED_NAME};
use crate::store::BlockRef;

use super::sys;

/// The blocks under `base` whose keys start with `prefix`, sorted bytewise. Sizes are
/// looked up only when `sizes` is set (otherwise 0). Symbolic links, other non-regular
/// files, names that are not valid keys and the internal area are skipped.
pub(crate) fn blocks_with_prefix(
    base: BorrowedFd<'_>,
    prefix: &str,
    sizes: bool,
) -> Result<Vec<BlockRef>, Errno> {
    // `a/b-` lives in directory `a`, among the names that start with `b-`.
    let (dir, name_prefix) = sys::split_parent(prefix);
    let start = match sys::open_dir(base, dir) {
        Ok(fd) => fd,
        Err(e) if sys::means_absent(e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    // Directories still to read: their descriptor, key path, and the name filter.
    let mut pending: Vec<(OwnedFd, String, &str)> = vec![(start, dir.to_owned(), name_prefix)];
    while let Some((fd, path, filter)) = pending.pop() {
        let mut reader = rustix::fs::Dir::read_from(&fd)?;
        while let Some(entry) = reader.read() {
            let entry = entry?;
            let Ok(name) = std::str::from_utf8(entry.file_name().to_bytes()) else {
                continue;
            };
            if name == "." || name == ".." || !name.starts_with(filter) {
                continue;
            }
            if path.is_empty() && name == RESERVED_NAME {
                continue;
            }
            let key = if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}/{name}")
            };
            let mut kind = entry.file_type();
            let mut size = 0;
            if kind == FileType::Unknown || (sizes && kind == FileType::RegularFile) {
                match sys::stat_at(fd.as_fd(), name) {
                    Ok(st) => {
                        kind = FileType::from_raw_mode(st.st_mode);
                        size = st.st_size as u64;
                    }
                    // Deleted since the directory was read.
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(e),
                }
            }
            match kind {
                FileType::RegularFile if validate_key(&key).is_ok() => {
                    found.push(BlockRef { key, size })
                }
                FileType::Directory if validate_key(&key).is_ok() => {
                    match sys::open_child_dir(fd.as_fd(), name) {
                        Ok(child) => pending.push((child, key, "")),
                        Err(e) if sys::means_absent(e) => {}
                        Err(e) => return Err(e),
                    }
                }
                _ => {}
            }
        }
    }
    found.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    Ok(found)
}
