//! The checksum records of recently read blocks, so that a small range read of a hot
//! block costs no extended-attribute read (about as much as the rest of the read).
//!
//! A record is remembered with what `fstat` said of its file (device, inode, size,
//! change and modification times) and reused only while a new `fstat` says the same:
//! any write to the file or its attributes moves its change time, and a replaced file
//! is another inode. A time moves only when the clock has moved past it, though: once
//! a second on ext4 with 128-byte inodes, once a tick before Linux 6.13; a second
//! change within the same second as the first leaves the times as they were. So a
//! record is remembered only once its file's change time is [`SETTLED`] old: any later
//! change then has a later time. Only on local filesystems whose times come from this
//! machine's clock (the store decides at open), and only for files on the base's own
//! device. And a remembered record that a read fails is never the last word: the store
//! reads the stored record and checks again before it reports `Corrupt`. Whole reads
//! and `verify_block` always read the stored record.
//!
//! Beside each record, the CRCs of the block's 1 KiB pieces that reads have verified
//! ([`Granules`]): a 4 KiB range of a hot block then reads 4 KiB, not its 8 KiB chunk.
//! They share the record's fate: made empty with it, dropped with it.
//!
//! Bounded: at most [`CAPACITY`] records (a 4 MiB block's is about 2 KiB, its pieces'
//! CRCs 16.5 KiB: 19 MiB in all at most), in shards locked only to look up or insert,
//! never across I/O; a full shard drops an entry at random.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use rustix::fs::Stat;

use crate::integrity::{record_chunk, Granules, GRANULE};

/// How many records are remembered at most.
pub(crate) const CAPACITY: usize = 1024;
/// How old a file's change time must be before its record is remembered: more than the
/// coarsest timestamp a supported filesystem keeps (one second).
pub(crate) const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);
const SHARDS: usize = 8;

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    size: i64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

impl Stamp {
    /// Whether the file has not changed for [`SETTLED`] by `now` (a time since the Unix
    /// epoch), so that any change from now on moves its change time.
    pub(crate) fn settled(&self, now: std::time::Duration) -> bool {
        let changed = std::time::Duration::new(
            self.ctime.0.max(0) as u64,
            self.ctime.1.clamp(0, 999_999_999) as u32,
        );
        now.checked_sub(changed).is_some_and(|age| age >= SETTLED)
    }

    pub(crate) fn of(st: &Stat) -> Stamp {
        Stamp {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size,
            ctime: (st.st_ctime, st.st_ctime_nsec as i64),
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
        }
    }
}

/// What is remembered of one block: its record and the pieces verified with it.
#[derive(Debug, Clone)]
pub(crate) struct Remembered {
    pub(crate) record: Arc<[u8]>,
    /// `None` where pieces would not help: chunks no larger than a piece.
    pub(crate) granules: Option<Arc<Granules>>,
}

/// One shard: key → (the file's stamp, what is remembered).
type Shard = Mutex<HashMap<Box<str>, (Stamp, Remembered), Hasher>>;

/// A fast hash seeded per store: a key is hashed twice per lookup (its shard, its
/// entry), and SipHash made that a third of a remembered range's overhead. The maps
/// are small and bounded, so keys chosen to collide can cost little.
type Hasher = foldhash::fast::RandomState;

/// Recently read records by key.
#[derive(Debug)]
pub(crate) struct Records {
    shards: [Shard; SHARDS],
    hasher: Hasher,
}

impl Default for Records {
    fn default() -> Records {
        Records {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::with_hasher(Hasher::default()))),
            hasher: Default::default(),
        }
    }
}

impl Records {
    fn shard(&self, key: &str) -> &Shard {
        use std::hash::BuildHasher;
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    /// The record remembered for `key`, if it was read from the file `stamp` names.
    pub(crate) fn get(&self, key: &str, stamp: &Stamp) -> Option<Remembered> {
        let shard = self.shard(key).lock();
        match shard.get(key) {
            Some((seen, remembered)) if seen == stamp => Some(remembered.clone()),
            _ => None,
        }
    }

    /// Remembers `record`, read from the file `stamp` names, for `key`, with no piece
    /// known yet; returns where its pieces are to be learned.
    pub(crate) fn put(&self, key: &str, stamp: Stamp, record: Arc<[u8]>) -> Option<Arc<Granules>> {
        let granules = (record_chunk(&record).is_some_and(|chunk| chunk > GRANULE)
            && (0..=crate::BLOCK_SIZE as i64).contains(&stamp.size))
        .then(|| Arc::new(Granules::for_len(stamp.size as u64)));
        let record = Remembered {
            record,
            granules: granules.clone(),
        };
        let mut shard = self.shard(key).lock();
        if let Some(entry) = shard.get_mut(key) {
            *entry = (stamp, record);
            return granules;
        }
        if shard.len() >= CAPACITY / SHARDS {
            // The map's iteration order is random per process: an entry at random.
            if let Some(victim) = shard.keys().next().cloned() {
                shard.remove(&victim);
            }
        }
        shard.insert(key.into(), (stamp, record));
        granules
    }

    /// Forgets what was remembered for `key`.
    pub(crate) fn forget(&self, key: &str) {
        self.shard(key).lock().remove(key);
    }

    /// How many records are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_unchanged_for_two_seconds_are_settled() {
        let s = stamp(1, 100);
        assert!(!s.settled(std::time::Duration::from_secs(100)));
        assert!(!s.settled(std::time::Duration::from_millis(101_999)));
        assert!(s.settled(std::time::Duration::from_secs(102)));
        assert!(
            !s.settled(std::time::Duration::from_secs(50)),
            "a clock behind the file"
        );
    }

    fn stamp(ino: u64, ctime: i64) -> Stamp {
        Stamp {
            dev: 1,
            ino,
            size: 10,
            ctime: (ctime, 0),
            mtime: (ctime, 0),
        }
    }

    #[test]
    fn a_record_is_reused_only_for_the_same_file_version_and_stays_bounded() {
        let records = Records::default();
        records.put("a", stamp(1, 5), Arc::from(&b"one"[..]));
        assert_eq!(
            records.get("a", &stamp(1, 5)).map(|r| r.record).as_deref(),
            Some(&b"one"[..])
        );
        assert!(records.get("a", &stamp(1, 6)).is_none(), "changed since");
        assert!(records.get("a", &stamp(2, 5)).is_none(), "another file");
        records.put("a", stamp(1, 6), Arc::from(&b"two"[..]));
        assert_eq!(
            records.get("a", &stamp(1, 6)).map(|r| r.record).as_deref(),
            Some(&b"two"[..])
        );
        records.forget("a");
        assert!(records.get("a", &stamp(1, 6)).is_none());
        for i in 0..10 * CAPACITY {
            records.put(&format!("k{i}"), stamp(i as u64, 1), Arc::from(&b"r"[..]));
        }
        assert!(records.len() <= CAPACITY, "{}", records.len());
        assert!(records.len() >= CAPACITY / 2, "{}", records.len());
    }
}
