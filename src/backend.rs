//! Writing a backend: implement [`Backend`] (the mechanism alone), wrap it in
//! [`Checked`] (the contract's entry checks, in the contract's order, and everything
//! else every store does alike), and run the conformance suite against the result.
//!
//! The crate's own backends are built this way: [`crate::MemoryStore`] is
//! `Checked<MemoryBackend>`, [`crate::FsStore`] is `Checked<FsBackend>`, `S3Store` is
//! `Checked<S3Backend>`. A wrapper that is itself a store of stores (such as
//! [`crate::Pool`]) implements [`crate::BlockStore`] directly and uses the pieces below:
//! [`Gate`] for closing, [`DeleteTally`] for prefix deletes, [`clamp_range`] for ranges.
//!
//! ```
//! use std::collections::BTreeMap;
//! use parking_lot::RwLock;
//! use blockstore::backend::{clamp_range, Backend, Checked, DeleteTally, Fields};
//! use blockstore::{BlockRef, BlockStore, Blocks, Error, ErrorKind, Op, Result};
//!
//! /// A toy backend: a map behind a lock.
//! #[derive(Default)]
//! struct Toy(RwLock<BTreeMap<String, Vec<u8>>>);
//!
//! impl Toy {
//!     fn get(&self, op: Op, key: &str) -> Result<Vec<u8>> {
//!         let map = self.0.read();
//!         map.get(key).cloned().ok_or_else(|| Error::new(ErrorKind::NotFound, op).with_key(key))
//!     }
//! }
//!
//! impl Backend for Toy {
//!     fn name(&self) -> &'static str { "toy" }
//!     fn write(&self, key: &str, data: &[u8]) -> Result<()> {
//!         self.0.write().insert(key.to_owned(), data.to_vec());
//!         Ok(())
//!     }
//!     fn read(&self, key: &str) -> Result<Vec<u8>> { self.get(Op::Read, key) }
//!     fn read_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
//!         let block = self.get(Op::ReadRange, key)?;
//!         Ok(block[clamp_range(key, block.len() as u64, offset, length)?].to_vec())
//!     }
//!     fn size(&self, key: &str) -> Result<u64> { Ok(self.get(Op::Size, key)?.len() as u64) }
//!     fn delete(&self, key: &str) -> Result<()> {
//!         self.0.write().remove(key);
//!         Ok(())
//!     }
//!     fn delete_prefix(&self, prefix: &str) -> Result<u64> {
//!         let mut tally = DeleteTally::default();
//!         self.0.write().retain(|k, _| {
//!             let keep = !k.starts_with(prefix);
//!             if !keep { tally.removed(1) }
//!             keep
//!         });
//!         tally.outcome(prefix)
//!     }
//!     fn scan(&self, prefix: &str, after: Option<&str>, _: Fields) -> Result<Blocks<'_>> {
//!         // A toy: one page of everything. Real backends hold a page at a time.
//!         let blocks: Vec<Result<BlockRef>> = self.0.read().iter()
//!             .filter(|(k, _)| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
//!             .map(|(k, v)| Ok(BlockRef { key: k.clone(), size: v.len() as u64 }))
//!             .collect();
//!         Ok(Box::new(blocks.into_iter()))
//!     }
//!     fn health(&self) -> Result<()> { Ok(()) }
//! }
//!
//! let store = Checked::from_backend(Toy::default());
//! // The checks come from the layer, in the contract's order:
//! assert_eq!(store.write_block("a//b", b"x").unwrap_err().kind(), ErrorKind::InvalidKey);
//! assert_eq!(store.read_block_range("k", 0, 0).unwrap_err().kind(), ErrorKind::InvalidRange);
//! store.write_block("k", b"value")?;
//! assert_eq!(store.read_block_range("k", 2, u64::MAX)?, b"lue");
//! store.close()?;
//! assert_eq!(store.read_block("k").unwrap_err().kind(), ErrorKind::Closed);
//! # Ok::<(), blockstore::Error>(())
//! ```

use crate::error::Result;
use crate::store::Blocks;

pub use crate::checked::Checked;
pub use crate::fs::FsBackend;
pub use crate::gate::{Gate, Pass};
pub use crate::integrity::{record_chunk, widen, Checksums, CHUNK_SIZE};
pub use crate::memory::MemoryBackend;
#[cfg(feature = "s3")]
pub use crate::s3::S3Backend;
pub use crate::store::{
    check_block_len, check_range_len, clamp_range, offset_past_end, DeleteTally,
};

/// What a scan must report besides the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fields {
    /// Keys only: sizes may be reported as 0 (a listing of keys need not look at each
    /// block).
    Keys,
    /// Keys and sizes.
    KeysAndSizes,
}

/// The mechanism of a store, without the contract's entry checks: wrap it in
/// [`Checked`] to get a [`crate::BlockStore`].
///
/// [`Checked`] calls these only with a valid key or prefix (the key rules), an open
/// store, a block of at most `BLOCK_SIZE` bytes, a range length of at least 1 and a
/// non-empty buffer, so a backend checks none of that. Everything else (what is absent,
/// ranges past the end, order of listings) is the backend's, as the contract says.
pub trait Backend: Send + Sync + 'static {
    /// The backend's name in traces and metrics (`memory`, `filesystem`, `s3`).
    fn name(&self) -> &'static str;

    /// Stores `data` under `key`.
    fn write(&self, key: &str, data: &[u8]) -> Result<()>;

    /// The whole block.
    fn read(&self, key: &str) -> Result<Vec<u8>>;

    /// Bytes `[offset, min(offset + length, size))`; `InvalidRange` when
    /// `offset >= size`.
    fn read_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>>;

    /// Reads into `buf` as [`Backend::read_range`] with `buf.len()` as the length;
    /// returns the count. The default copies from `read_range`.
    fn read_range_into(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let data = self.read_range(key, offset, buf.len() as u64)?;
        buf[..data.len()].copy_from_slice(&data);
        Ok(data.len())
    }

    /// The block's size.
    fn size(&self, key: &str) -> Result<u64>;

    /// Removes the block; `Ok` when it is absent.
    fn delete(&self, key: &str) -> Result<()>;

    /// Removes every block under `prefix`; how many this call removed, or an error
    /// from [`DeleteTally::outcome`].
    fn delete_prefix(&self, prefix: &str) -> Result<u64>;

    /// The blocks under `prefix` after `start_after`, in key order, a page or a
    /// directory at a time.
    fn scan(&self, prefix: &str, start_after: Option<&str>, fields: Fields) -> Result<Blocks<'_>>;

    /// Every block under `prefix`, in key order, as one call: `list_by_prefix` and
    /// `list_blocks`. The default collects [`Backend::scan`]; a backend whose calls have
    /// a deadline (S3) bounds the whole listing by one.
    fn list(&self, prefix: &str, fields: Fields) -> Result<Vec<crate::BlockRef>> {
        self.scan(prefix, None, fields)?.collect()
    }

    /// Whether the store can serve reads and writes now.
    fn health(&self) -> Result<()>;

    /// The backend's own counters for [`crate::BlockStore::report`] (S3: attempts,
    /// retries, throttled replies). None by default.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// What the backend says about itself for [`crate::BlockStore::report`] (S3: the
    /// endpoint, the bucket, the credential source). Nothing by default.
    fn about(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Called once by the first `close`, after every operation in flight finished.
    fn shut_down(&self) -> Result<()> {
        Ok(())
    }

    /// Whether [`Checked`] writes checksums with each block ([`Backend::write_sealed`])
    /// and checks them on each read ([`Backend::read_sealed`]). `Off` by default: a
    /// backend that keeps checksum records says so here.
    fn checksums(&self) -> Checksums {
        Checksums::Off
    }

    /// The chunk each checksum of a new block covers: small enough that small ranges
    /// read little beyond what they ask, large enough that the record fits where the
    /// backend keeps it. [`CHUNK_SIZE`] by default.
    fn checksum_chunk(&self) -> u64 {
        CHUNK_SIZE
    }

    /// Stores `data` under `key` together with its checksum record, so that both land
    /// or neither does. The default drops the record.
    fn write_sealed(&self, key: &str, data: &[u8], seal: &Seal) -> Result<()> {
        let _ = seal;
        self.write(key, data)
    }

    /// Stores `data` under `key` with checksums of chunks of `chunk` bytes. The
    /// default takes them all first, then calls [`Backend::write_sealed`]; a backend
    /// that can take each part's checksums just before it writes that part (while the
    /// CPU's caches still hold it, so that memory is read once) does so here.
    fn write_chunked(&self, key: &str, data: &[u8], chunk: u64) -> Result<()> {
        let sums = crate::integrity::Sums::of(data, chunk);
        let seal = Seal {
            record: sums.encode(),
            crc32c: sums.whole(),
        };
        self.write_sealed(key, data, &seal)
    }

    /// Reads the whole block (`range` `None`) or at least the bytes of
    /// `range = (offset, length)`, with the checksum record stored with it. When there
    /// is a record, the data must cover whole chunks of the record's chunk size
    /// ([`record_chunk`], [`widen`]); a range starting at or
    /// past the end is `InvalidRange`, as for [`Backend::read_range`]. The default reads
    /// without a record.
    fn read_sealed(&self, key: &str, range: Option<(u64, u64)>) -> Result<Sealed> {
        match range {
            None => {
                let data = self.read(key)?;
                Ok(Sealed {
                    size: data.len() as u64,
                    data,
                    start: 0,
                    record: None,
                    remembered: false,
                    crc32c: None,
                    granules: None,
                })
            }
            Some((offset, length)) => {
                let data = self.read_range(key, offset, length)?;
                Ok(Sealed {
                    size: offset + data.len() as u64,
                    data,
                    start: offset,
                    record: None,
                    remembered: false,
                    crc32c: None,
                    granules: None,
                })
            }
        }
    }

    /// Whether the block `key`, whose read `sealed` failed its checksums, is read once
    /// more before `Corrupt` is returned: S3 because the damage may have happened in
    /// transit, the filesystem when it checked with a record it remembered (the next
    /// read must then use the stored one). Not by default.
    fn reread_corrupt(&self, key: &str, sealed: &Sealed) -> bool {
        let _ = (key, sealed);
        false
    }
}

/// The checksums of a block on its way to [`Backend::write_sealed`].
#[derive(Debug)]
pub struct Seal {
    pub(crate) record: Vec<u8>,
    pub(crate) crc32c: u32,
}

impl Seal {
    /// The record to store with the block (layout: [`crate::integrity`]).
    pub fn record(&self) -> &[u8] {
        &self.record
    }

    /// The CRC32C of the whole block (for S3's `x-amz-checksum-crc32c`).
    pub fn crc32c(&self) -> u32 {
        self.crc32c
    }
}

/// What [`Backend::read_sealed`] read.
#[derive(Debug)]
pub struct Sealed {
    /// The bytes read, from `start`.
    pub data: Vec<u8>,
    /// Where `data` starts in the block.
    pub start: u64,
    /// The block's length as stored (for a range read without a record, at least the
    /// end of `data`).
    pub size: u64,
    /// The checksum record stored with the block, if it has one.
    pub record: Option<std::sync::Arc<[u8]>>,
    /// Whether `record` is a copy the backend kept from an earlier read of the same
    /// file rather than read now: a block that fails its checks with it is read again
    /// ([`Backend::reread_corrupt`]).
    pub remembered: bool,
    /// The CRC32C of all of `data`, when the backend took it as the bytes arrived (S3
    /// whole reads, large filesystem whole reads): the check then compares it instead
    /// of a second pass.
    pub crc32c: Option<u32>,
    /// The CRCs of pieces of the block the backend keeps beside a remembered `record`
    /// ([`Granules`](crate::integrity::Granules)): a range read may then cover whole
    /// pieces rather than whole chunks ([`Granules::around`](crate::integrity::Granules::around)).
    pub granules: Option<std::sync::Arc<crate::integrity::Granules>>,
}
