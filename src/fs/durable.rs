//! Which directories this store created whose entry in their parent may not be durable
//! yet (only kept with `fsync = true`).
//!
//! A write makes durable every directory on its key's path that is recorded here,
//! including one a concurrent writer created, by syncing its parent. Each record
//! carries a generation, so a record is forgotten only by whoever synced (or removed)
//! that very incarnation of the directory:
//!
//! - a record is made *before* `mkdir` (pending) and marked created after it, so a
//!   writer that finds the directory already there also finds the record;
//! - a writer that syncs a pending record's parent does not forget it: its creator
//!   will sync it again once its `mkdir` is done;
//! - a directory removed and made again gets a new generation, which an older sync
//!   cannot forget.
//!
//! The map holds only directories whose sync is in progress, so it stays small; with
//! `fsync = false` nothing is recorded at all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) generation: u64,
    pub(crate) created: bool,
}

/// Directories not yet known to be durable.
#[derive(Debug, Default)]
pub(crate) struct NewDirs {
    map: Mutex<HashMap<String, Record>>,
    /// The map's size, so writes skip the lock when nothing is recorded.
    len: AtomicUsize,
    next: AtomicU64,
}

impl NewDirs {
    /// Records `path` as about to be created; `None` when it is already recorded (that
    /// record then covers it).
    pub(crate) fn begin(&self, path: &str) -> Option<u64> {
        let mut map = self.map.lock();
        if map.contains_key(path) {
            return None;
        }
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        map.insert(
            path.to_owned(),
            Record {
                generation,
                created: false,
            },
        );
        self.len.fetch_add(1, Ordering::SeqCst);
        Some(generation)
    }

    /// Marks the record `generation` of `path` as created.
    pub(crate) fn created(&self, path: &str, generation: u64) {
        if let Some(r) = self.map.lock().get_mut(path) {
            if r.generation == generation {
                r.created = true;
            }
        }
    }

    /// The record of `path`, if any.
    pub(crate) fn get(&self, path: &str) -> Option<Record> {
        if self.len.load(Ordering::SeqCst) == 0 {
            return None;
        }
        self.map.lock().get(path).copied()
    }

    /// Forgets `path` if its record is still `generation`.
    pub(crate) fn forget(&self, path: &str, generation: u64) {
        if self.len.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut map = self.map.lock();
        if map.get(path).is_some_and(|r| r.generation == generation) {
            map.remove(path);
            self.len.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Whether nothing is recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::SeqCst) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recorded_generation_is_forgotten() {
        let dirs = NewDirs::default();
        let first = dirs.begin("a").unwrap();
        assert_eq!(dirs.begin("a"), None, "one record per path");
        dirs.created("a", first);
        assert!(dirs.get("a").unwrap().created);
        dirs.forget("a", first + 1);
        assert!(dirs.get("a").is_some(), "another generation forgot it");
        dirs.forget("a", first);
        assert!(dirs.get("a").is_none() && dirs.is_empty());
        let second = dirs.begin("a").unwrap();
        assert_ne!(first, second);
        dirs.created("a", first);
        assert!(
            !dirs.get("a").unwrap().created,
            "an old generation marked it"
        );
    }
}
