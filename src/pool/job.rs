//! [`Job`]: what a pool runs. One trait for single submissions and batches alike; the
//! store's own operations are jobs ([`Write`], [`Read`], [`ReadRange`], [`ReadInto`],
//! [`ReadAt`], [`Size`], [`Delete`], [`Verify`]), and so is any closure over the store
//! ([`from_fn`]).
//!
//! A job that names a key runs after every job on that key submitted before it to the
//! same pool: a later write always wins, and a read sees the writes submitted before
//! it. Jobs on different keys run in parallel.

use bytes::Bytes;

use crate::error::Result;
use crate::op::Op;
use crate::store::BlockStore;

/// Work for a pool's workers: it runs once, on a worker, against the inner store.
pub trait Job: Send + 'static {
    /// What the job produces.
    type Output: Send + 'static;

    /// Which operation it is, for statistics and errors.
    fn op(&self) -> Op;

    /// The key the job works on, if one: jobs on one key run in submission order.
    fn key(&self) -> Option<&str> {
        None
    }

    /// Runs the job against the store.
    fn run(self, store: &dyn BlockStore) -> Result<Self::Output>;

    /// Bytes the job carries to the store (a write's block), for the pool's counters.
    fn bytes_in(&self) -> u64 {
        0
    }

    /// Bytes its result brings back (a read's block), for the pool's counters.
    fn bytes_out(_output: &Self::Output) -> u64
    where
        Self: Sized,
    {
        0
    }
}

/// Writes a block held in a shared buffer: a `Vec<u8>` moves in without a copy, and a
/// block the caller keeps serving (a `Bytes` it clones, or `Bytes::from_owner` of an
/// `Arc<[u8]>`) is shared, not copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The block's key.
    pub key: String,
    /// The block.
    pub data: Bytes,
}

impl Write {
    /// A write of `data` (a `Vec<u8>`, a `Bytes`, a `&'static [u8]`, ...) under `key`.
    pub fn new(key: impl Into<String>, data: impl Into<Bytes>) -> Write {
        Write {
            key: key.into(),
            data: data.into(),
        }
    }
}

/// Checks a block against its checksums, as `verify_block` (what a scrub runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verify {
    /// The block's key.
    pub key: String,
}

impl Job for Verify {
    type Output = crate::Integrity;
    fn op(&self) -> Op {
        Op::Verify
    }
    fn key(&self) -> Option<&str> {
        Some(&self.key)
    }
    fn run(self, store: &dyn BlockStore) -> Result<crate::Integrity> {
        store.verify_block(&self.key)
    }
}

/// Reads a whole block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The block's key.
    pub key: String,
}

/// Reads bytes `[offset, offset + length)` of a block, as `read_block_range`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRange {
    /// The block's key.
    pub key: String,
    /// Where the range starts.
    pub offset: u64,
    /// How many bytes at most.
    pub length: u64,
}

/// Reads at `offset` into the caller's buffer (its whole length) and hands the buffer
/// back with the count of bytes read: no copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadInto {
    /// The block's key.
    pub key: String,
    /// Where the read starts.
    pub offset: u64,
    /// The buffer to fill.
    pub buf: Vec<u8>,
}

/// Reads at `offset` into the caller's buffer with `pread` semantics (see
/// [`BlockStore::read_at`]) and hands the buffer back with the count: 0 at or past the
/// end of the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAt {
    /// The block's key.
    pub key: String,
    /// Where the read starts.
    pub offset: u64,
    /// The buffer to fill.
    pub buf: Vec<u8>,
}

/// A block's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Size {
    /// The block's key.
    pub key: String,
}

/// Deletes a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// The block's key.
    pub key: String,
}

impl Job for Write {
    type Output = ();
    fn op(&self) -> Op {
        Op::Write
    }
    fn key(&self) -> Option<&str> {
        Some(&self.key)
    }
    fn bytes_in(&self) -> u64 {
        self.data.len() as u64
    }
    fn run(self, store: &dyn BlockStore) -> Result<()> {
        store.write_block(&self.key, &self.data)
    }
}

impl Job for Read {
    type Output = Vec<u8>;
    fn op(&self) -> Op {
        Op::Read
    }
    fn key(&self) -> Option<&str> {
        Some(&self.key)
    }
    fn bytes_out(output: &Vec<u8>) -> u64 {
        output.len() as u64
    }
    fn run(self, store: &dyn BlockStore) -> Result<Vec<u8>> {
        store.read_block(&self.key)
    }
}

impl Job for ReadRange {
    type Output = Vec<u8>;
    fn op(&self) -> Op {
        Op::ReadRange
    }
    fn key(&self) -> Option<&str> {
        Some(&self.key)
    }
    fn bytes_out(output: &Vec<u8>) -> u64 {
        output.len() as u64
    }
    fn run(self, store: &dyn BlockStore) -> Result<Vec<u8>> {
        store.read_block_range(&self.key, self.offset, self.length)
    }
}

impl Job for ReadInto {
    type Output = (Vec<u8>, usize);
    fn op(&self) -> Op {
        Op::ReadRange
    }
    fn key(&self) -> Option<&str> {
        Some(&self.key)
    }
    fn bytes_out(output: &(Vec<u8>, usize)) -> u64 {
        output.1 as u64
    }
    fn run(mut self, store: &dyn BlockStore) -> Result<(Vec<u8>, usize)> {
        let n = store.read_block_range_into(&self.key, self.offset, &mut self.buf)?;
        Ok((self.buf, n))
    }
}

impl Job for ReadAt {
    type Output = (Vec<u8>, usize);
    fn op(&self) -> Op {
        Op::ReadRange
    }
    fn key(&self) -> Option<&str> {
        Some(&self.key)
    }
    fn bytes_out(output: &(Vec<u8>, usize)) -> u64 {
        output.1 as u64
    }
    fn run(mut self, store: &dyn BlockStore) -> Result<(Vec<u8>, usize)> {
        let n = store.read_at(&self.key, self.offset, &mut self.buf)?;
        Ok((self.buf, n))
    }
}

impl Job for Size {
    type Output = u64;
    fn op(&self) -> Op {
        Op::Size
    }
    fn key(&self) -> Option<&str> {
        Some(&self.key)
    }
    fn run(self, store: &dyn BlockStore) -> Result<u64> {
        store.block_size(&self.key)
    }
}

impl Job for Delete {
    type Output = ();
    fn op(&self) -> Op {
        Op::Delete
    }
    fn key(&self) -> Option<&str> {
        Some(&self.key)
    }
    fn run(self, store: &dyn BlockStore) -> Result<()> {
        store.delete_block(&self.key)
    }
}

/// A closure over the store as a job ([`Op::Job`]); see [`from_fn`].
pub struct FnJob<F> {
    op: Op,
    key: Option<String>,
    f: F,
}

impl<F> FnJob<F> {
    /// Orders the job with the other jobs on `key` (see the module docs).
    pub fn on_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
}

/// Makes a job of a closure over the store:
/// `pool.submit(from_fn(|store| store.block_size("k")))`.
pub fn from_fn<F, T>(f: F) -> FnJob<F>
where
    F: FnOnce(&dyn BlockStore) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    FnJob {
        op: Op::Job,
        key: None,
        f,
    }
}

/// A closure that runs one of the store's own operations, named as that operation.
pub(crate) fn call<F, T>(op: Op, f: F) -> FnJob<F>
where
    F: FnOnce(&dyn BlockStore) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    FnJob { op, key: None, f }
}

impl<F, T> Job for FnJob<F>
where
    F: FnOnce(&dyn BlockStore) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    type Output = T;
    fn op(&self) -> Op {
        self.op
    }
    fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
    fn run(self, store: &dyn BlockStore) -> Result<T> {
        (self.f)(store)
    }
}
