//! The `BlockStore` trait every backend and wrapper implements, and the checks they share.

use crate::error::{Error, ErrorKind, Result};
use crate::op::Op;

/// The largest block a store accepts: 4 MiB.
pub const BLOCK_SIZE: usize = 4 * 1024 * 1024;

/// A block found by a listing: its full key and its size in bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockRef {
    /// The block's full key.
    pub key: String,
    /// The block's size in bytes.
    pub size: u64,
}

/// A streaming listing ([`BlockStore::scan`]): blocks in bytewise key order, each once.
/// It holds a page or a directory at a time, never the whole store; after an error it
/// ends.
pub type Blocks<'a> = Box<dyn Iterator<Item = Result<BlockRef>> + Send + 'a>;

/// What a store has seen since it opened ([`BlockStore::report`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The backend: `memory`, `filesystem`, `s3`, or another backend's own name.
    pub backend: &'static str,
    /// Per operation that ran at least once.
    pub ops: Vec<crate::instrument::OpReport>,
    /// The backend's own counters, by name (S3: `attempts`, `retries`, `throttled`).
    pub counters: Vec<(&'static str, u64)>,
    /// The last few errors, oldest first.
    pub recent_errors: Vec<crate::instrument::RecentError>,
    /// What the backend says about itself, by name (S3: `endpoint`, `bucket`,
    /// `credentials` (the source, never a secret), `credentials_error` (why the last
    /// refresh failed, while it keeps failing)).
    pub about: Vec<(&'static str, String)>,
}

impl Report {
    /// A backend counter by name (0 when the backend keeps no such counter).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }

    /// What the backend says about `name`, if anything.
    pub fn about(&self, name: &str) -> Option<&str> {
        self.about
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The report of one operation, if it ran.
    pub fn op(&self, op: Op) -> Option<&crate::instrument::OpReport> {
        self.ops.iter().find(|r| r.op == op)
    }
}

/// A blocking store of immutable blocks of up to [`BLOCK_SIZE`] bytes under string keys.
///
/// Every implementation behaves as [the contract](crate::contract) says, checked by the
/// shared conformance suite: errors come in the order `Closed`, `InvalidKey`, argument
/// errors (`BlockTooLarge`, zero length), then whatever the storage says.
///
/// Object safe; share one as `Arc<dyn BlockStore>` between threads.
///
/// ```
/// use blockstore::{BlockStore, ErrorKind, MemoryStore};
///
/// let store: Box<dyn BlockStore> = Box::new(MemoryStore::new());
/// store.write_block("f/chunk-0/block-0", b"hello")?;
/// assert_eq!(store.read_block_range("f/chunk-0/block-0", 1, 3)?, b"ell");
/// assert_eq!(store.block_size("f/chunk-0/block-0")?, 5);
/// let keys: Vec<String> = store.scan("f/", None)?.map(|b| b.map(|b| b.key)).collect::<Result<_, _>>()?;
/// assert_eq!(keys, ["f/chunk-0/block-0"]);
/// assert_eq!(store.delete_by_prefix("f/")?, 1);
/// assert_eq!(store.read_block("f/chunk-0/block-0").unwrap_err().kind(), ErrorKind::NotFound);
/// # Ok::<(), blockstore::Error>(())
/// ```
pub trait BlockStore: Send + Sync {
    /// Stores `data` under `key`, replacing any previous block (last writer wins).
    fn write_block(&self, key: &str, data: &[u8]) -> Result<()>;

    /// Returns the whole block.
    fn read_block(&self, key: &str) -> Result<Vec<u8>>;

    /// Returns bytes `[offset, min(offset + length, size))` of the block. `length` may
    /// be anything up to `u64::MAX` ("to the end"). A zero `length` is `InvalidRange`
    /// before any I/O; an absent block `NotFound`; `offset >= size` `InvalidRange`.
    fn read_block_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>>;

    /// Reads `min(buf.len(), size - offset)` bytes at `offset` into `buf` and returns the
    /// count; errors as [`BlockStore::read_block_range`], with an empty `buf` as a zero
    /// length.
    fn read_block_range_into(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<usize>;

    /// Reads at `offset` into `buf` with the semantics of `pread(2)`, for a file
    /// system built on blocks: returns the count read, which is 0 at or past the end of
    /// the block, for an empty block and for an empty `buf`; an absent block is still
    /// `NotFound`. ([`BlockStore::read_block_range_into`] is the contract's strict
    /// form, where those cases are `InvalidRange`.)
    fn read_at(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<usize>;

    /// Reads the whole block and checks it against the checksums stored with it, as a
    /// scrub does: `Verified`, `Unverified` when it has none (written with checksums
    /// off), or `Corrupt`. Checks even on a store whose own writes keep no checksums.
    /// The default reads the block and can say no more than `Unverified`.
    fn verify_block(&self, key: &str) -> Result<crate::Integrity> {
        self.read_block(key).map(|_| crate::Integrity::Unverified)
    }

    /// Returns the size of the block in bytes, without reading it.
    fn block_size(&self, key: &str) -> Result<u64>;

    /// Removes the block; succeeds when it is already absent.
    fn delete_block(&self, key: &str) -> Result<()>;

    /// Removes every block whose key starts with `prefix` (plain string prefix; `""`
    /// means everything) and returns how many this call removed. A plain prefix also
    /// matches longer names: `files/1` takes `files/10/…` too; use
    /// [`content_prefix`](crate::content_prefix) for one content id's blocks.
    fn delete_by_prefix(&self, prefix: &str) -> Result<u64>;

    /// The blocks whose keys start with `prefix` and sort after `start_after` (to
    /// resume an interrupted scan), in bytewise key order, one page or directory at a
    /// time. A key present for the whole scan appears exactly once; keys written or
    /// deleted during it may or may not appear. Each step is a call of its own: it
    /// fails with `Closed` once the store is closed, and [`BlockStore::close`] does not
    /// wait for a scan that is left open.
    fn scan(&self, prefix: &str, start_after: Option<&str>) -> Result<Blocks<'_>>;

    /// Lists the full keys that start with `prefix`, sorted bytewise, each once.
    fn list_by_prefix(&self, prefix: &str) -> Result<Vec<String>>;

    /// Lists the blocks whose keys start with `prefix`, with their sizes, sorted
    /// bytewise by key.
    fn list_blocks(&self, prefix: &str) -> Result<Vec<BlockRef>>;

    /// Succeeds when the store can serve reads and writes right now; otherwise says why.
    fn health_check(&self) -> Result<()>;

    /// What the store has seen since it opened: calls, errors, bytes and latency per
    /// operation, the backend's own counters (S3 attempts, retries, throttles) and its
    /// last errors. A pool reports its store's numbers (its own are in `Pool::stats`).
    fn report(&self) -> Report;

    /// Waits for operations in flight, then refuses every later one with `Closed`.
    /// Idempotent.
    fn close(&self) -> Result<()>;
}

/// How many names of failed keys a prefix delete's error shows.
const FAILURES_SHOWN: usize = 5;

/// The running count of a prefix delete: the blocks it removed and the ones it could
/// not. Only the first few failures are kept, so memory stays bounded however many
/// keys fail.
#[derive(Debug, Default)]
pub struct DeleteTally {
    deleted: u64,
    failed: u64,
    first: Vec<(String, Error)>,
}

impl DeleteTally {
    /// Counts `n` blocks removed.
    pub fn removed(&mut self, n: u64) {
        self.deleted += n;
    }

    /// Counts a block that could not be removed.
    pub fn failed(&mut self, key: String, error: Error) {
        self.failed += 1;
        if self.first.len() < FAILURES_SHOWN {
            self.first.push((key, error));
        }
    }

    /// Adds another part's count (a batch deleted alongside) to this one.
    pub fn merge(&mut self, other: DeleteTally) {
        self.deleted += other.deleted;
        self.failed += other.failed;
        for failure in other.first {
            if self.first.len() < FAILURES_SHOWN {
                self.first.push(failure);
            }
        }
    }

    /// `e`, from a prefix delete that had to stop, saying how many blocks it removed
    /// before.
    pub fn interrupted(&self, e: Error) -> Error {
        e.with_detail(format!("deleted {} before this", self.deleted))
    }

    /// The count, or, if any block could not be deleted, an error of the first
    /// failure's kind that says how many were deleted and names the first few that
    /// failed (never reported as success).
    pub fn outcome(self, prefix: &str) -> Result<u64> {
        let Some((_, first)) = self.first.first() else {
            return Ok(self.deleted);
        };
        let names: Vec<String> = self
            .first
            .iter()
            .map(|(k, e)| format!("{k} ({})", e.kind()))
            .collect();
        let more = if self.failed > names.len() as u64 {
            ", ..."
        } else {
            ""
        };
        Err(Error::new(first.kind(), Op::DeletePrefix)
            .with_key(prefix)
            .with_retryable(first.is_retryable())
            .with_detail(format!(
                "deleted {}, failed {}: {}{more}",
                self.deleted,
                self.failed,
                names.join(", ")
            )))
    }
}

/// Refuses a block larger than [`BLOCK_SIZE`].
pub fn check_block_len(key: &str, len: usize) -> Result<()> {
    if len > BLOCK_SIZE {
        return Err(Error::new(ErrorKind::BlockTooLarge, Op::Write)
            .with_key(key)
            .with_detail(format!("{len} bytes, the limit is {BLOCK_SIZE}")));
    }
    Ok(())
}

/// Refuses a zero-length range (before any I/O, as the contract orders).
pub fn check_range_len(key: &str, length: u64) -> Result<()> {
    if length == 0 {
        return Err(Error::new(ErrorKind::InvalidRange, Op::ReadRange)
            .with_key(key)
            .with_detail("zero length"));
    }
    Ok(())
}

/// The error for a range that starts at or past the end of the block.
pub fn offset_past_end(key: &str, offset: u64, size: u64) -> Error {
    Error::new(ErrorKind::InvalidRange, Op::ReadRange)
        .with_key(key)
        .with_detail(format!(
            "offset {offset} is not below the block size {size}"
        ))
}

/// The byte range `[start, end)` of a block of `size` bytes that a range read of
/// `(offset, length)` covers, or `InvalidRange` when `offset >= size`.
pub fn clamp_range(
    key: &str,
    size: u64,
    offset: u64,
    length: u64,
) -> Result<std::ops::Range<usize>> {
    if offset >= size {
        return Err(offset_past_end(key, offset, size));
    }
    let end = offset + length.min(size - offset);
    // Both are at most `size`, which is a length of memory or a bounded file.
    Ok(offset as usize..end as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_range_rules() {
        assert_eq!(clamp_range("k", 10, 0, 10).unwrap(), 0..10);
        assert_eq!(clamp_range("k", 10, 2, 3).unwrap(), 2..5);
        assert_eq!(clamp_range("k", 10, 9, u64::MAX).unwrap(), 9..10);
        assert_eq!(clamp_range("k", 10, 0, u64::MAX).unwrap(), 0..10);
        assert_eq!(
            clamp_range("k", 10, 10, 1).unwrap_err().kind(),
            ErrorKind::InvalidRange
        );
        assert_eq!(
            clamp_range("k", 0, 0, 1).unwrap_err().kind(),
            ErrorKind::InvalidRange
        );
        assert_eq!(
            clamp_range("k", 10, u64::MAX, u64::MAX).unwrap_err().kind(),
            ErrorKind::InvalidRange
        );
    }

    #[test]
    fn delete_tally_names_the_first_failures() {
        let mut tally = DeleteTally::default();
        tally.removed(3);
        assert_eq!(tally.outcome("p/").unwrap(), 3);
        let tally_of = |failures: usize| {
            let mut tally = DeleteTally::default();
            tally.removed(2);
            for i in 0..failures {
                tally.failed(
                    format!("p/{i}"),
                    Error::new(ErrorKind::PermissionDenied, Op::Delete),
                );
            }
            tally
        };
        let e = tally_of(7).outcome("p/").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        let text = e.to_string();
        assert!(
            text.contains("deleted 2, failed 7: p/0 (permission denied)"),
            "{text}"
        );
        assert!(
            text.contains("p/4") && !text.contains("p/5") && text.ends_with(", ..."),
            "{text}"
        );
        // Every failure named: no ellipsis.
        let e = tally_of(2).outcome("p/").unwrap_err();
        assert!(
            e.to_string()
                .ends_with("failed 2: p/0 (permission denied), p/1 (permission denied)"),
            "{e}"
        );
        assert!(tally_of(5)
            .outcome("p/")
            .unwrap_err()
            .to_string()
            .ends_with("p/4 (permission denied)"));
    }

    #[test]
    fn argument_checks() {
        assert!(check_block_len("k", BLOCK_SIZE).is_ok());
        assert_eq!(
            check_block_len("k", BLOCK_SIZE + 1).unwrap_err().kind(),
            ErrorKind::BlockTooLarge
        );
        assert!(check_range_len("k", 1).is_ok());
        assert_eq!(
            check_range_len("k", 0).unwrap_err().kind(),
            ErrorKind::InvalidRange
        );
    }
}
