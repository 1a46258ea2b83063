//! The memory backend: blocks in an ordered map in memory, for tests and caches that
//! need no durability.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::backend::{record_chunk, widen, Backend, Fields, Seal, Sealed, CHUNK_SIZE};
use crate::checked::Checked;
use crate::error::{Error, ErrorKind, Result};
use crate::integrity::Checksums;
use crate::op::Op;
use crate::store::{clamp_range, BlockRef, Blocks};

/// Keys a scan takes from the map per visit: the lock is held for one page, never while
/// the caller works.
const PAGE: usize = 1000;

/// A store that keeps blocks in memory.
///
/// Blocks live in a `BTreeMap` behind a `parking_lot::RwLock`, so listing and deleting by
/// prefix cost O(log n + matches). Values are held as `Arc<[u8]>`: a write copies the
/// caller's data before taking the lock, a read clones the `Arc` under the lock and copies
/// after releasing it, so a 4 MiB copy never holds up other keys. Each call copies the
/// data exactly once. A scan takes a page of 1,000 keys at a time under the read lock.
///
/// # Checksums
///
/// Off by default (the bytes never leave memory). [`MemoryStore::with_checksums`]
/// keeps a checksum record with each block, as the other backends do, and
/// [`MemoryStore::damage`] changes a stored block behind the store's back, so tests of
/// a caller's handling of `Corrupt` need no fake store.
///
/// # Hierarchy
///
/// Keys are flat strings, as on S3: `a/b` and `a/b/c` can both exist. The filesystem
/// backend refuses that combination with `Conflict`.
///
/// ```
/// use blockstore::{BlockStore, MemoryStore};
///
/// let store = MemoryStore::new();
/// store.write_block("a/b", b"one")?;
/// store.write_block("a/b/c", b"two")?; // flat keys: both exist
/// assert_eq!(store.list_by_prefix("a/")?, ["a/b", "a/b/c"]);
/// # Ok::<(), blockstore::Error>(())
/// ```
pub type MemoryStore = Checked<MemoryBackend>;

/// The memory backend's mechanism; use it as [`MemoryStore`].
#[derive(Debug)]
pub struct MemoryBackend {
    blocks: RwLock<BTreeMap<String, Entry>>,
    checksums: Checksums,
}

/// Checksums off unless asked (`Checksums` itself defaults to on, as for stores on
/// storage).
impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend {
            blocks: RwLock::default(),
            checksums: Checksums::Off,
        }
    }
}

/// A block and the checksum record written with it.
#[derive(Debug, Clone)]
struct Entry {
    data: Arc<[u8]>,
    record: Option<Arc<[u8]>>,
}

impl Checked<MemoryBackend> {
    /// An empty store.
    pub fn new() -> Self {
        Checked::from_backend(MemoryBackend::default())
    }

    /// An empty store that writes checksums with every block and verifies them on
    /// every read (`Checksums::Crc32c`), or not (`Off`, as [`MemoryStore::new`]).
    pub fn with_checksums(checksums: Checksums) -> Self {
        Checked::from_backend(MemoryBackend {
            checksums,
            ..MemoryBackend::default()
        })
    }

    /// A test hook: changes the stored bytes of `key` with `damage` (flip a bit,
    /// truncate, extend), keeping the checksum record written with them, as a failing
    /// disk would. Returns whether the block exists.
    ///
    /// ```
    /// use blockstore::{BlockStore, Checksums, ErrorKind, MemoryStore};
    ///
    /// let store = MemoryStore::with_checksums(Checksums::Crc32c);
    /// store.write_block("k", &[7u8; 100_000])?;
    /// store.damage("k", |bytes| bytes[70_000] ^= 1);
    /// assert_eq!(store.read_block("k").unwrap_err().kind(), ErrorKind::Corrupt);
    /// // A range in an undamaged chunk still reads.
    /// assert_eq!(store.read_block_range("k", 0, 10)?, [7u8; 10]);
    /// # Ok::<(), blockstore::Error>(())
    /// ```
    pub fn damage(&self, key: &str, damage: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut blocks = self.backend().blocks.write();
        let Some(entry) = blocks.get_mut(key) else {
            return false;
        };
        let mut bytes = entry.data.to_vec();
        damage(&mut bytes);
        entry.data = Arc::from(bytes);
        true
    }
}

impl Default for Checked<MemoryBackend> {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    fn entry(&self, op: Op, key: &str) -> Result<Entry> {
        self.blocks
            .read()
            .get(key)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, op).with_key(key))
    }

    fn get(&self, op: Op, key: &str) -> Result<Arc<[u8]>> {
        Ok(self.entry(op, key)?.data)
    }

    fn put(&self, key: &str, entry: Entry) {
        let previous = {
            let mut blocks = self.blocks.write();
            match blocks.get_mut(key) {
                Some(slot) => Some(std::mem::replace(slot, entry)),
                None => blocks.insert(key.to_owned(), entry),
            }
        };
        // The old block is freed here, after the lock is released.
        drop(previous);
    }
}

/// The keys of `map` that start with `prefix`, in order.
fn matching<'a, V>(
    map: &'a BTreeMap<String, V>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a String, &'a V)> + 'a {
    map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        self.put(
            key,
            Entry {
                data: Arc::from(data),
                record: None,
            },
        );
        Ok(())
    }

    fn checksums(&self) -> Checksums {
        self.checksums
    }

    fn write_sealed(&self, key: &str, data: &[u8], seal: &Seal) -> Result<()> {
        self.put(
            key,
            Entry {
                data: Arc::from(data),
                record: Some(Arc::from(seal.record())),
            },
        );
        Ok(())
    }

    fn read_sealed(&self, key: &str, range: Option<(u64, u64)>) -> Result<Sealed> {
        let op = if range.is_some() {
            Op::ReadRange
        } else {
            Op::Read
        };
        let entry = self.entry(op, key)?;
        let size = entry.data.len() as u64;
        let record = entry.record.clone();
        let (start, end) = match range {
            None => (0, size),
            // With a record, whole chunks; a range past the end is left to the caller,
            // which can then tell a truncated block from a short read.
            Some((offset, length)) if record.is_some() => {
                let chunk = record
                    .as_deref()
                    .and_then(record_chunk)
                    .unwrap_or(CHUNK_SIZE);
                let wide = widen(offset, length, chunk);
                (wide.start.min(size), wide.end.min(size))
            }
            Some((offset, length)) => {
                let r = clamp_range(key, size, offset, length)?;
                (r.start as u64, r.end as u64)
            }
        };
        Ok(Sealed {
            data: entry.data[start as usize..end as usize].to_vec(),
            start,
            size,
            record,
            remembered: false,
            crc32c: None,
            granules: None,
        })
    }

    fn read(&self, key: &str) -> Result<Vec<u8>> {
        Ok(self.get(Op::Read, key)?.to_vec())
    }

    fn read_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let block = self.get(Op::ReadRange, key)?;
        let range = clamp_range(key, block.len() as u64, offset, length)?;
        Ok(block[range].to_vec())
    }

    fn read_range_into(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let block = self.get(Op::ReadRange, key)?;
        let range = clamp_range(key, block.len() as u64, offset, buf.len() as u64)?;
        let n = range.len();
        buf[..n].copy_from_slice(&block[range]);
        Ok(n)
    }

    fn size(&self, key: &str) -> Result<u64> {
        Ok(self.get(Op::Size, key)?.len() as u64)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let removed = self.blocks.write().remove(key);
        drop(removed);
        Ok(())
    }

    fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        // A page of keys at a time: the write lock is never held for the whole store,
        // and removed blocks are freed after it is released.
        let mut deleted = 0;
        loop {
            let removed: Vec<Entry> = {
                let mut blocks = self.blocks.write();
                if prefix.is_empty() && blocks.len() <= PAGE {
                    std::mem::take(&mut *blocks).into_values().collect()
                } else {
                    let keys: Vec<String> = matching(&blocks, prefix)
                        .take(PAGE)
                        .map(|(k, _)| k.clone())
                        .collect();
                    keys.iter().filter_map(|k| blocks.remove(k)).collect()
                }
            };
            if removed.is_empty() {
                return Ok(deleted);
            }
            deleted += removed.len() as u64;
        }
    }

    fn scan(&self, prefix: &str, start_after: Option<&str>, _: Fields) -> Result<Blocks<'_>> {
        Ok(Box::new(Scan {
            backend: self,
            prefix: prefix.to_owned(),
            after: start_after.filter(|a| *a >= prefix).map(str::to_owned),
            page: Vec::new().into_iter(),
            done: false,
        }))
    }

    fn health(&self) -> Result<()> {
        Ok(())
    }

    fn shut_down(&self) -> Result<()> {
        let all = std::mem::take(&mut *self.blocks.write());
        drop(all);
        Ok(())
    }
}

/// A scan of the memory backend: a page of keys per visit to the map.
struct Scan<'a> {
    backend: &'a MemoryBackend,
    prefix: String,
    /// The last key handed out (or `start_after`): the next page starts past it.
    after: Option<String>,
    page: std::vec::IntoIter<BlockRef>,
    done: bool,
}

impl Iterator for Scan<'_> {
    type Item = Result<BlockRef>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(block) = self.page.next() {
            return Some(Ok(block));
        }
        if self.done {
            return None;
        }
        let page: Vec<BlockRef> = {
            let blocks = self.backend.blocks.read();
            let start = match &self.after {
                Some(after) => Bound::Excluded(after.as_str()),
                None => Bound::Included(self.prefix.as_str()),
            };
            blocks
                .range::<str, _>((start, Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(&self.prefix))
                .take(PAGE)
                .map(|(k, v)| BlockRef {
                    key: k.clone(),
                    size: v.data.len() as u64,
                })
                .collect()
        };
        self.done = page.len() < PAGE;
        self.after = page.last().map(|b| b.key.clone());
        self.page = page.into_iter();
        self.page.next().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BlockStore;

    #[test]
    fn scans_cross_pages_and_resume() {
        let store = MemoryStore::new();
        for i in 0..2500 {
            store.write_block(&format!("p/{i:05}"), b"x").unwrap();
        }
        store.write_block("q", b"y").unwrap();
        let keys: Vec<String> = store
            .scan("p/", None)
            .unwrap()
            .map(|b| b.unwrap().key)
            .collect();
        assert_eq!(keys.len(), 2500);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        let rest: Vec<String> = store
            .scan("p/", Some("p/01999"))
            .unwrap()
            .map(|b| b.unwrap().key)
            .collect();
        assert_eq!(rest.first().map(String::as_str), Some("p/02000"));
        assert_eq!(rest.len(), 500);
        // A start before the prefix starts at the prefix.
        assert_eq!(store.scan("p/", Some("a")).unwrap().count(), 2500);
        assert_eq!(store.delete_by_prefix("p/").unwrap(), 2500);
        assert_eq!(store.list_by_prefix("").unwrap(), ["q"]);
    }
}
