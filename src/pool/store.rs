//! The pool as a [`BlockStore`]: every call is a job on a worker, waited for. Calls
//! with borrowed buffers copy them (a worker cannot borrow the caller's memory); a scan
//! runs on the caller's thread, behind the pool's gate.

use crate::checked::GatedScan;
use crate::error::Result;
use crate::op::Op;
use crate::store::{BlockRef, BlockStore, Blocks, Report};

use super::job::{call, Delete, Read, ReadAt, ReadInto, ReadRange, Size, Verify, Write};
use super::Pool;

// A wrapper must not lean on a default body that would bypass the workers.
#[deny(clippy::missing_trait_methods)]
impl BlockStore for Pool {
    fn write_block(&self, key: &str, data: &[u8]) -> Result<()> {
        self.call(Write::new(key, bytes::Bytes::copy_from_slice(data)))
    }

    fn read_block(&self, key: &str) -> Result<Vec<u8>> {
        self.call(Read {
            key: key.to_owned(),
        })
    }

    fn verify_block(&self, key: &str) -> Result<crate::Integrity> {
        self.call(Verify {
            key: key.to_owned(),
        })
    }

    fn read_block_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.call(ReadRange {
            key: key.to_owned(),
            offset,
            length,
        })
    }

    fn read_block_range_into(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let (data, n) = self.call(ReadInto {
            key: key.to_owned(),
            offset,
            buf: vec![0u8; buf.len()],
        })?;
        buf[..n].copy_from_slice(&data[..n]);
        Ok(n)
    }

    fn read_at(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let (data, n) = self.call(ReadAt {
            key: key.to_owned(),
            offset,
            buf: vec![0u8; buf.len()],
        })?;
        buf[..n].copy_from_slice(&data[..n]);
        Ok(n)
    }

    fn block_size(&self, key: &str) -> Result<u64> {
        self.call(Size {
            key: key.to_owned(),
        })
    }

    fn delete_block(&self, key: &str) -> Result<()> {
        self.call(Delete {
            key: key.to_owned(),
        })
    }

    fn delete_by_prefix(&self, prefix: &str) -> Result<u64> {
        let named = prefix;
        let prefix = prefix.to_owned();
        self.call(call(Op::DeletePrefix, move |s: &dyn BlockStore| {
            s.delete_by_prefix(&prefix)
        }))
        .map_err(|e| naming(e, named))
    }

    fn scan(&self, prefix: &str, start_after: Option<&str>) -> Result<Blocks<'_>> {
        // Not a job: the scan runs on the caller's thread, and the store below counts
        // and traces it.
        let _pass = self.gate.enter(Op::List).map_err(|e| naming(e, prefix))?;
        Ok(GatedScan::boxed(
            &self.gate,
            self.inner.scan(prefix, start_after)?,
        ))
    }

    fn list_by_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let named = prefix;
        let prefix = prefix.to_owned();
        self.call(call(Op::List, move |s: &dyn BlockStore| {
            s.list_by_prefix(&prefix)
        }))
        .map_err(|e| naming(e, named))
    }

    fn list_blocks(&self, prefix: &str) -> Result<Vec<BlockRef>> {
        let named = prefix;
        let prefix = prefix.to_owned();
        self.call(call(Op::List, move |s: &dyn BlockStore| {
            s.list_blocks(&prefix)
        }))
        .map_err(|e| naming(e, named))
    }

    fn health_check(&self) -> Result<()> {
        self.call(call(Op::Health, |s: &dyn BlockStore| s.health_check()))
    }

    fn report(&self) -> Report {
        self.inner.report()
    }

    fn close(&self) -> Result<()> {
        self.shutdown()
    }
}

/// Names `prefix` in an error that names nothing: the pool's own refusals (closed, or
/// used in a forked child) of a call queued without a key.
fn naming(e: crate::Error, prefix: &str) -> crate::Error {
    match (e.key(), prefix) {
        (None, prefix) if !prefix.is_empty() => e.with_key(prefix),
        _ => e,
    }
}
