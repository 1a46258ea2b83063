//! [`Checked`]: the one layer every backend goes through. It holds the contract's
//! entry checks, in the contract's order (`Closed`, the key, argument errors, then the
//! backend), the store's open/closed state, and the instruments every call is recorded
//! by (a `tracing` span, `metrics`, the store's [`Report`]), so no backend repeats them.

use std::time::Duration;

use crate::backend::{Backend, Fields, Sealed};
use crate::error::{ErrorKind, Result};
use crate::gate::Gate;
use crate::instrument::{bytes_of, Instruments};
use crate::integrity::{Checksums, Integrity, Record};
use crate::key::{check_key, check_prefix, MAX_KEY_LEN};
use crate::op::Op;
use crate::store::{
    check_block_len, check_range_len, offset_past_end, BlockRef, BlockStore, Blocks, Report,
};

/// A [`Backend`] behind the contract's checks and the store's instruments: a
/// [`BlockStore`].
pub struct Checked<B> {
    backend: B,
    gate: Gate,
    instruments: Instruments,
}

impl<B: std::fmt::Debug> std::fmt::Debug for Checked<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Checked<B> {
    /// Puts `backend` behind the checks.
    pub fn from_backend(backend: B) -> Self {
        let instruments = Instruments::new(backend.name());
        Checked {
            backend,
            gate: Gate::new(),
            instruments,
        }
    }

    /// The backend inside, for what only it offers.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Calls slower than `threshold` become `warn` events of the `tracing` span of the
    /// call (`None`, the default: no such events, and calls are timed only when
    /// something listens).
    pub fn set_slow_threshold(&self, threshold: Option<Duration>) {
        self.instruments.set_slow_threshold(threshold);
    }

    /// Runs one call of `op` on `key`, recorded by the instruments; `bytes` says how
    /// many bytes a result moved.
    fn observe<T>(
        &self,
        op: Op,
        key: &str,
        bytes: impl FnOnce(&Result<T>) -> u64,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let call = self.instruments.call(op, key);
        let result = call.enter(f);
        let moved = bytes(&result);
        call.finish(&result, moved);
        result
    }
}

impl<B: Backend> Checked<B> {
    /// Whether reads check checksums and writes keep them.
    fn sealing(&self) -> bool {
        self.backend.checksums() != Checksums::Off
    }

    /// A range read into `buf`, verified when checksums are on.
    fn range_into(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if !self.sealing() {
            return self.backend.read_range_into(key, offset, buf);
        }
        let (data, range) = self.read_range_verified(key, offset, buf.len() as u64)?;
        let n = range.len();
        buf[..n].copy_from_slice(&data[range]);
        Ok(n)
    }

    /// Passes the gate for `op` on `key` (a key or a prefix), naming it when refused
    /// (closed, or used in a forked child).
    fn enter(&self, op: Op, key: &str) -> Result<crate::gate::Pass<'_>> {
        self.gate.enter(op).map_err(|e| match key {
            "" => e,
            key => e.with_key(key),
        })
    }

    /// Writes `data` with its checksums.
    fn write_sealed(&self, key: &str, data: &[u8]) -> Result<()> {
        self.backend
            .write_chunked(key, data, self.backend.checksum_chunk())
    }

    /// Reads the block or the chunks around `range` with its checksum record and checks
    /// them; once more when the first read was corrupt and the backend asks for it.
    fn read_verified(
        &self,
        op: Op,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<(Sealed, Integrity)> {
        let check = |sealed: &Sealed| -> Result<Integrity> {
            let Some(record) = &sealed.record else {
                if self.backend.checksums() == Checksums::Require {
                    return Err(crate::integrity::corrupt(
                        op,
                        key,
                        "it has no checksums, and this store requires them (checksums = \"require\")"
                            .to_owned(),
                    ));
                }
                return Ok(Integrity::Unverified);
            };
            Record::parse(op, key, record)?
                .with_granules(sealed.granules.as_deref())
                .verify(
                    op,
                    key,
                    sealed.start,
                    &sealed.data,
                    sealed.size,
                    sealed.crc32c,
                )?;
            Ok(Integrity::Verified)
        };
        let sealed = self
            .backend
            .read_sealed(key, range)
            .map_err(|e| e.with_op(op))?;
        match check(&sealed) {
            Ok(integrity) => Ok((sealed, integrity)),
            Err(e)
                if e.kind() == ErrorKind::Corrupt && self.backend.reread_corrupt(key, &sealed) =>
            {
                #[cfg(feature = "tracing")]
                if !sealed.remembered {
                    tracing::warn!(key, error = %e, "a block failed its checksums; reading it again");
                }
                let _ = e;
                let sealed = self
                    .backend
                    .read_sealed(key, range)
                    .map_err(|e| e.with_op(op))?;
                let integrity = check(&sealed)?;
                Ok((sealed, integrity))
            }
            Err(e) => Err(e),
        }
    }

    /// A verified range read: the bytes of `[offset, offset + length)` within the
    /// block, as a slice of what was read.
    fn read_range_verified(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<(Vec<u8>, std::ops::Range<usize>)> {
        // The object may change between two requests of one read (S3: a 416 reply,
        // then a HEAD finds a new, longer version): what came back must cover the
        // range. Read again, twice at most, before giving up with a retryable error.
        let mut attempts = 0;
        let (sealed, end) = loop {
            attempts += 1;
            let (sealed, _) = self.read_verified(Op::ReadRange, key, Some((offset, length)))?;
            if offset >= sealed.size {
                return Err(offset_past_end(key, offset, sealed.size));
            }
            let end = offset.saturating_add(length).min(sealed.size);
            if sealed.start <= offset && end - sealed.start <= sealed.data.len() as u64 {
                break (sealed, end);
            }
            if attempts == 3 {
                return Err(crate::Error::new(ErrorKind::Backend, Op::ReadRange)
                    .with_key(key)
                    .with_retryable(true)
                    .with_detail(format!(
                        "the block changed while it was read: three reads returned bytes that do not cover {offset}..{end} (the last {} bytes from {})",
                        sealed.data.len(),
                        sealed.start
                    )));
            }
        };
        let from = (offset - sealed.start) as usize;
        let to = (end - sealed.start) as usize;
        Ok((sealed.data, from..to))
    }
}

/// A `start_after` longer than any key cannot be a key: refused, as S3 refuses it.
fn check_start_after(start_after: Option<&str>) -> Result<()> {
    match start_after {
        Some(after) if after.len() > MAX_KEY_LEN => {
            Err(
                crate::Error::new(ErrorKind::InvalidKey, Op::List).with_detail(format!(
                    "start_after is {} bytes, longer than any key ({MAX_KEY_LEN})",
                    after.len()
                )),
            )
        }
        _ => Ok(()),
    }
}

fn nothing<T>(_: &Result<T>) -> u64 {
    0
}

// The layer answers every method itself: none may fall back to a default body.
#[deny(clippy::missing_trait_methods)]
impl<B: Backend> BlockStore for Checked<B> {
    fn write_block(&self, key: &str, data: &[u8]) -> Result<()> {
        let len = data.len() as u64;
        self.observe(
            Op::Write,
            key,
            |r| if r.is_ok() { len } else { 0 },
            || {
                let _pass = self.enter(Op::Write, key)?;
                check_key(Op::Write, key)?;
                check_block_len(key, data.len())?;
                if self.sealing() {
                    self.write_sealed(key, data)
                } else {
                    self.backend.write(key, data)
                }
            },
        )
    }

    fn read_block(&self, key: &str) -> Result<Vec<u8>> {
        self.observe(Op::Read, key, bytes_of, || {
            let _pass = self.enter(Op::Read, key)?;
            check_key(Op::Read, key)?;
            if self.sealing() {
                Ok(self.read_verified(Op::Read, key, None)?.0.data)
            } else {
                self.backend.read(key)
            }
        })
    }

    fn read_block_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.observe(Op::ReadRange, key, bytes_of, || {
            let _pass = self.enter(Op::ReadRange, key)?;
            check_key(Op::ReadRange, key)?;
            check_range_len(key, length)?;
            if self.sealing() {
                let (mut data, range) = self.read_range_verified(key, offset, length)?;
                data.truncate(range.end);
                data.drain(..range.start);
                Ok(data)
            } else {
                self.backend.read_range(key, offset, length)
            }
        })
    }

    fn read_block_range_into(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.observe(
            Op::ReadRange,
            key,
            |r: &Result<usize>| r.as_ref().map_or(0, |n| *n as u64),
            || {
                let _pass = self.enter(Op::ReadRange, key)?;
                check_key(Op::ReadRange, key)?;
                check_range_len(key, buf.len() as u64)?;
                self.range_into(key, offset, buf)
            },
        )
    }

    fn read_at(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.observe(
            Op::ReadRange,
            key,
            |r: &Result<usize>| r.as_ref().map_or(0, |n| *n as u64),
            || {
                let _pass = self.enter(Op::ReadRange, key)?;
                check_key(Op::ReadRange, key)?;
                if buf.is_empty() {
                    // Nothing to read, but an absent block is still absent.
                    return self.backend.size(key).map(|_| 0);
                }
                match self.range_into(key, offset, buf) {
                    // The buffer is not empty, so this is an offset at or past the end.
                    Err(e) if e.kind() == ErrorKind::InvalidRange => Ok(0),
                    other => other,
                }
            },
        )
    }

    fn verify_block(&self, key: &str) -> Result<Integrity> {
        self.observe(Op::Verify, key, nothing, || {
            let _pass = self.enter(Op::Verify, key)?;
            check_key(Op::Verify, key)?;
            Ok(self.read_verified(Op::Verify, key, None)?.1)
        })
    }

    fn block_size(&self, key: &str) -> Result<u64> {
        self.observe(Op::Size, key, nothing, || {
            let _pass = self.enter(Op::Size, key)?;
            check_key(Op::Size, key)?;
            self.backend.size(key)
        })
    }

    fn delete_block(&self, key: &str) -> Result<()> {
        self.observe(Op::Delete, key, nothing, || {
            let _pass = self.enter(Op::Delete, key)?;
            check_key(Op::Delete, key)?;
            self.backend.delete(key)
        })
    }

    fn delete_by_prefix(&self, prefix: &str) -> Result<u64> {
        self.observe(Op::DeletePrefix, prefix, nothing, || {
            let _pass = self.enter(Op::DeletePrefix, prefix)?;
            check_prefix(Op::DeletePrefix, prefix)?;
            self.backend.delete_prefix(prefix)
        })
    }

    fn scan(&self, prefix: &str, start_after: Option<&str>) -> Result<Blocks<'_>> {
        self.instruments.scan(prefix, || {
            let _pass = self.enter(Op::List, prefix)?;
            check_prefix(Op::List, prefix)?;
            check_start_after(start_after)?;
            let inner = self
                .backend
                .scan(prefix, start_after, Fields::KeysAndSizes)?;
            Ok(GatedScan::boxed(&self.gate, inner))
        })
    }

    fn list_by_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        self.observe(Op::List, prefix, nothing, || {
            let _pass = self.enter(Op::List, prefix)?;
            check_prefix(Op::List, prefix)?;
            Ok(self
                .backend
                .list(prefix, Fields::Keys)?
                .into_iter()
                .map(|b| b.key)
                .collect())
        })
    }

    fn list_blocks(&self, prefix: &str) -> Result<Vec<BlockRef>> {
        self.observe(Op::List, prefix, nothing, || {
            let _pass = self.enter(Op::List, prefix)?;
            check_prefix(Op::List, prefix)?;
            self.backend.list(prefix, Fields::KeysAndSizes)
        })
    }

    fn health_check(&self) -> Result<()> {
        self.observe(Op::Health, "", nothing, || {
            let _pass = self.gate.enter(Op::Health)?;
            self.backend.health()
        })
    }

    fn report(&self) -> Report {
        let (ops, recent_errors) = self.instruments.report();
        Report {
            backend: self.backend.name(),
            ops,
            counters: self.backend.counters(),
            about: self.backend.about(),
            recent_errors,
        }
    }

    fn close(&self) -> Result<()> {
        self.observe(Op::Close, "", nothing, || {
            if self.gate.close() && !self.gate.forked() {
                self.backend.shut_down()
            } else {
                Ok(())
            }
        })
    }
}

/// A scan behind a gate: each step is an operation of its own, so a scan left open
/// never holds `close` up, and a step after `close` ends it with `Closed`.
pub(crate) struct GatedScan<'a> {
    gate: &'a Gate,
    inner: Blocks<'a>,
    done: bool,
}

impl<'a> GatedScan<'a> {
    pub(crate) fn boxed(gate: &'a Gate, inner: Blocks<'a>) -> Blocks<'a> {
        Box::new(GatedScan {
            gate,
            inner,
            done: false,
        })
    }
}

impl Iterator for GatedScan<'_> {
    type Item = Result<BlockRef>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let step = match self.gate.enter(Op::List) {
            Ok(_pass) => self.inner.next(),
            Err(e) => Some(Err(e)),
        };
        if !matches!(step, Some(Ok(_))) {
            self.done = true;
        }
        step
    }
}
