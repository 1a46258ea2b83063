//! The memory backend: blocks in an ordered map in memory, for tests and caches that
//! need no durability.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::backend::{Backend, Fields};
use crate::checked::Checked;
use crate::error::{Error, ErrorKind, Result};
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
#[derive(Debug, Default)]
pub struct MemoryBackend {
    blocks: RwLock<BTreeMap<String, Arc<[u8]>>>,
}

impl Checked<MemoryBackend> {
    /// An empty store.
    pub fn new() -> Self {
        Checked::from_backend(MemoryBackend::default())
    }
}

impl Default for Checked<MemoryBackend> {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    fn get(&self, op: Op, key: &str) -> Result<Arc<[u8]>> {
        self.blocks
            .read()
            .get(key)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, op).with_key(key))
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
        let value: Arc<[u8]> = Arc::from(data);
        let previous = {
            let mut blocks = self.blocks.write();
            match blocks.get_mut(key) {
                Some(slot) => Some(std::mem::replace(slot, value)),
                None => blocks.insert(key.to_owned(), value),
            }
        };
        // The old block is freed here, after the lock is released.
        drop(previous);
        Ok(())
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
            let removed: Vec<Arc<[u8]>> = {
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
                    size: v.len() as u64,
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
