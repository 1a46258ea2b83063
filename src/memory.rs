//! `MemoryStore`: blocks in an ordered map in memory, for tests and caches that need no
//! durability.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{Error, ErrorKind, Result};
use crate::gate::Gate;
use crate::key::{check_key, check_prefix};
use crate::store::{check_block_len, check_range_len, clamp_range, op, BlockRef, BlockStore};

/// A store that keeps blocks in memory.
///
/// Blocks live in a `BTreeMap` behind a `parking_lot::RwLock`, so listing and deleting by
/// prefix cost O(log n + matches). Values are held as `Arc<[u8]>`: a write copies the
/// caller's data before taking the lock, a read clones the `Arc` under the lock and copies
/// after releasing it, so a 4 MiB copy never holds up other keys. Each call copies the
/// data exactly once.
///
/// # Hierarchy
///
/// Keys are flat strings, as on S3: `a/b` and `a/b/c` can both exist. The filesystem
/// backend refuses that combination with `Conflict`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    blocks: RwLock<BTreeMap<String, Arc<[u8]>>>,
    gate: Gate,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        self.blocks.read().get(key).cloned()
    }

    fn get_or_not_found(&self, op: &'static str, key: &str) -> Result<Arc<[u8]>> {
        self.get(key)
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

impl BlockStore for MemoryStore {
    fn write_block(&self, key: &str, data: &[u8]) -> Result<()> {
        let _pass = self.gate.enter(op::WRITE)?;
        check_key(op::WRITE, key)?;
        check_block_len(key, data.len())?;
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

    fn read_block(&self, key: &str) -> Result<Vec<u8>> {
        let _pass = self.gate.enter(op::READ)?;
        check_key(op::READ, key)?;
        Ok(self.get_or_not_found(op::READ, key)?.to_vec())
    }

    fn read_block_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let _pass = self.gate.enter(op::READ_RANGE)?;
        check_key(op::READ_RANGE, key)?;
        check_range_len(key, length)?;
        let block = self.get_or_not_found(op::READ_RANGE, key)?;
        let range = clamp_range(key, block.len() as u64, offset, length)?;
        Ok(block[range].to_vec())
    }

    fn read_block_range_into(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let _pass = self.gate.enter(op::READ_RANGE)?;
        check_key(op::READ_RANGE, key)?;
        check_range_len(key, buf.len() as u64)?;
        let block = self.get_or_not_found(op::READ_RANGE, key)?;
        let range = clamp_range(key, block.len() as u64, offset, buf.len() as u64)?;
        let n = range.len();
        buf[..n].copy_from_slice(&block[range]);
        Ok(n)
    }

    fn block_size(&self, key: &str) -> Result<u64> {
        let _pass = self.gate.enter(op::SIZE)?;
        check_key(op::SIZE, key)?;
        Ok(self.get_or_not_found(op::SIZE, key)?.len() as u64)
    }

    fn delete_block(&self, key: &str) -> Result<()> {
        let _pass = self.gate.enter(op::DELETE)?;
        check_key(op::DELETE, key)?;
        let removed = self.blocks.write().remove(key);
        drop(removed);
        Ok(())
    }

    fn delete_by_prefix(&self, prefix: &str) -> Result<u64> {
        let _pass = self.gate.enter(op::DELETE_PREFIX)?;
        check_prefix(op::DELETE_PREFIX, prefix)?;
        // Removed blocks are collected and freed after the lock is released.
        let removed: Vec<Arc<[u8]>> = {
            let mut blocks = self.blocks.write();
            if prefix.is_empty() {
                std::mem::take(&mut *blocks).into_values().collect()
            } else {
                let keys: Vec<String> = matching(&blocks, prefix).map(|(k, _)| k.clone()).collect();
                keys.iter().filter_map(|k| blocks.remove(k)).collect()
            }
        };
        Ok(removed.len() as u64)
    }

    fn list_by_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let _pass = self.gate.enter(op::LIST)?;
        check_prefix(op::LIST, prefix)?;
        let blocks = self.blocks.read();
        Ok(matching(&blocks, prefix).map(|(k, _)| k.clone()).collect())
    }

    fn list_blocks(&self, prefix: &str) -> Result<Vec<BlockRef>> {
        let _pass = self.gate.enter(op::LIST)?;
        check_prefix(op::LIST, prefix)?;
        let blocks = self.blocks.read();
        Ok(matching(&blocks, prefix)
            .map(|(k, v)| BlockRef {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    fn health_check(&self) -> Result<()> {
        let _pass = self.gate.enter(op::HEALTH)?;
        Ok(())
    }

    fn close(&self) -> Result<()> {
        if self.gate.close() {
            let all = std::mem::take(&mut *self.blocks.write());
            drop(all);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_md5_is_unknown_without_reading() {
        let store = MemoryStore::new();
        store.write_block("k", b"data").unwrap();
        assert_eq!(store.content_md5("k").unwrap(), None);
    }
}
