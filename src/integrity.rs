//! Checksums kept with every block: a CRC32C of each chunk and of the whole,
//! written with the block and checked on every read, so a damaged block is never
//! returned as data.
//!
//! # The record
//!
//! A block's checksums travel as one small binary record, the same on every backend
//! (the filesystem keeps it in an extended attribute of the block's file, S3 in the
//! object's metadata, base64-encoded). Version 1, all integers little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `BSUM` |
//! | 4 | version, 1 |
//! | 5 | algorithm, 1 = CRC32C (Castagnoli) |
//! | 6..8 | reserved, 0 |
//! | 8..12 | chunk size in bytes, a power of two from 4 KiB to 1 MiB |
//! | 12..20 | block length in bytes |
//! | 20..24 | CRC32C of the whole block |
//! | 24.. | CRC32C of each chunk in order, the last one possibly short |
//!
//! Each backend picks its chunk: the filesystem 8 KiB (a 4 MiB block's record is
//! 2,072 bytes; larger chunks where the filesystem gives a file less room, such as
//! ext4 with 1 KiB blocks), S3 64 KiB (280 bytes, 376 in base64, within the 2 KB of
//! metadata AWS allows), the memory store 16 KiB. A record that does not parse, or whose
//! length is not the block's, makes the block `Corrupt` like a checksum that does not
//! match; a block with no record at all (written with `checksums = "off"`, or before
//! checksums existed) is served unverified.
//!
//! # Ranges
//!
//! A range read reads the whole chunks it touches (less than a chunk more at each end)
//! and verifies only those: a 4 KiB read of a 4 MiB block on the filesystem checks
//! 8 KiB (16 KiB when it crosses a chunk edge), not 4 MiB. Smaller chunks make small
//! ranges cheaper but the record larger than where it is kept allows.
//!
//! So that a block read again and again by small ranges does not pay for whole chunks
//! each time, a backend may remember [`Granules`]: the CRC32C of every 1 KiB piece of
//! a chunk that verified, taken in the same pass as the chunk's own CRC (its pieces'
//! CRCs join up to it). A later range whose pieces are all known reads and checks just
//! those pieces: a 4 KiB read 4 KiB (5 KiB off a piece edge) instead of 8 or 16. The
//! pieces are as trustworthy as the record they were checked against and are dropped
//! with it; the filesystem keeps them beside the records it remembers (see
//! [`FsStore`](crate::FsStore), `# Checksums`).
//!
//! # What checksums cannot see
//!
//! A block whose record was removed (a tool that rewrites a file through a new inode,
//! `sed -i`, a copy without extended attributes) reads as unverified, not corrupt,
//! unless the store has `checksums = "require"`. The
//! record does not name its key: a block file copied over another with its attribute
//! is served as that key's block.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

pub(crate) use crate::crc::crc32c;
use crate::crc::{join, Appender};
use crate::error::{Error, ErrorKind, Result};
use crate::op::Op;

/// The chunk each checksum covers unless a backend chooses another: 16 KiB.
pub const CHUNK_SIZE: u64 = 16 * 1024;
/// The pieces [`Granules`] remember the CRCs of: 1 KiB.
pub const GRANULE: u64 = 1024;
/// The smallest and largest chunk a record may have.
const MIN_CHUNK: u64 = 4 * 1024;
const MAX_CHUNK: u64 = 1024 * 1024;

const MAGIC: &[u8; 4] = b"BSUM";
const VERSION: u8 = 1;
const CRC32C: u8 = 1;
const HEADER: usize = 24;
/// The longest record: a 4 MiB block in 4 KiB chunks (4,120 bytes).
pub(crate) const MAX_RECORD: usize = HEADER + 4 * (crate::BLOCK_SIZE / MIN_CHUNK as usize);

/// Whether a store writes and checks checksums (`checksums` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Checksums {
    /// A CRC32C per chunk, written with each block and verified on each read.
    #[default]
    Crc32c,
    /// No checksums are written and ordinary reads check nothing (a block written
    /// with them still has them; `verify_block` still checks it).
    Off,
    /// As `Crc32c`, and a block without checksums is `Corrupt` too: for a store that
    /// has always written them, where a missing record means a file rewritten behind
    /// the store's back (a tool that dropped the attribute or the metadata).
    Require,
}

impl Checksums {
    /// As written in the configuration: `crc32c`, `off` or `require`.
    pub fn as_str(self) -> &'static str {
        match self {
            Checksums::Crc32c => "crc32c",
            Checksums::Off => "off",
            Checksums::Require => "require",
        }
    }
}

/// What reading a block found ([`crate::BlockStore::verify_block`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// Every chunk matched its checksum.
    Verified,
    /// The block has no checksums (written with them off): nothing to check it by.
    Unverified,
}

/// The checksums of one block, computed for a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sums {
    chunk: u64,
    len: u64,
    whole: u32,
    chunks: Vec<u32>,
}

impl Sums {
    /// The checksums of `data` in chunks of `chunk` bytes.
    pub(crate) fn of(data: &[u8], chunk: u64) -> Sums {
        let mut sums = Summing::new(chunk, data.len());
        sums.add(data);
        sums.finish()
    }

    /// The CRC32C of the whole block (S3's `x-amz-checksum-crc32c`).
    pub(crate) fn whole(&self) -> u32 {
        self.whole
    }

    /// The record as stored.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + 4 * self.chunks.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[VERSION, CRC32C, 0, 0]);
        out.extend_from_slice(&(self.chunk as u32).to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.whole.to_le_bytes());
        for crc in &self.chunks {
            out.extend_from_slice(&crc.to_le_bytes());
        }
        out
    }
}

/// The checksums of a block taken part by part, in order, as the parts are written.
pub(crate) struct Summing {
    chunk: u64,
    len: u64,
    appender: std::borrow::Cow<'static, Appender>,
    whole: u32,
    chunks: Vec<u32>,
}

impl Summing {
    /// For a block of `len` bytes in chunks of `chunk` bytes.
    pub(crate) fn new(chunk: u64, len: usize) -> Summing {
        Summing {
            chunk,
            len: 0,
            appender: Appender::for_len(chunk),
            whole: 0,
            chunks: Vec::with_capacity(len.div_ceil(chunk as usize)),
        }
    }

    /// Takes in the next `part`: whole chunks, but for the block's last part. One
    /// pass: the whole block's CRC is joined from its chunks'.
    pub(crate) fn add(&mut self, part: &[u8]) {
        debug_assert!(
            self.len.is_multiple_of(self.chunk),
            "a part after a short chunk"
        );
        for piece in part.chunks(self.chunk as usize) {
            let crc = crc32c(piece);
            self.whole = if self.chunks.is_empty() {
                crc
            } else if piece.len() as u64 == self.appender.len() {
                self.appender.join(self.whole, crc)
            } else {
                join(self.whole, crc, piece.len() as u64)
            };
            self.chunks.push(crc);
            self.len += piece.len() as u64;
        }
    }

    /// The checksums of everything taken in.
    pub(crate) fn finish(self) -> Sums {
        Sums {
            chunk: self.chunk,
            len: self.len,
            whole: self.whole,
            chunks: self.chunks,
        }
    }
}

/// The CRC32Cs of one block's [`GRANULE`]-byte pieces, learned as range reads verify
/// the chunks that hold them (see `# Ranges` in the module docs). Each piece's CRC is
/// set once, from bytes whose chunk matched its record, and never unset; a backend
/// keeps one beside a record it remembers, shares it between reads
/// ([`Sealed::granules`](crate::backend::Sealed)) and drops both together.
#[derive(Debug)]
pub struct Granules {
    crcs: Box<[AtomicU32]>,
    /// One bit per piece: its CRC in `crcs` is known.
    known: Box<[AtomicU64]>,
    len: u64,
}

impl Granules {
    /// Nothing known yet of a block of `len` bytes (at most [`BLOCK_SIZE`](crate::BLOCK_SIZE)
    /// is meaningful: 4,096 pieces, 16.5 KiB).
    pub fn for_len(len: u64) -> Granules {
        let pieces = len.div_ceil(GRANULE) as usize;
        Granules {
            crcs: (0..pieces).map(|_| AtomicU32::new(0)).collect(),
            known: (0..pieces.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            len,
        }
    }

    /// The CRC of piece `i`, if known.
    fn get(&self, i: usize) -> Option<u32> {
        let word = self.known.get(i / 64)?.load(Ordering::Acquire);
        (word >> (i % 64) & 1 == 1).then(|| self.crcs[i].load(Ordering::Relaxed))
    }

    /// Records the CRC of piece `i`.
    fn learn(&self, i: usize, crc: u32) {
        if let (Some(slot), Some(word)) = (self.crcs.get(i), self.known.get(i / 64)) {
            slot.store(crc, Ordering::Relaxed);
            word.fetch_or(1 << (i % 64), Ordering::Release);
        }
    }

    /// The whole pieces around `offset..offset + length` (cut at the block's end), when
    /// every one of them is known and they are fewer bytes than the whole chunks of
    /// `chunk` bytes (a power of two) around it: what a range read should read.
    pub fn around(&self, offset: u64, length: u64, chunk: u64) -> Option<Range<u64>> {
        if offset >= self.len || !chunk.is_power_of_two() {
            return None;
        }
        let end = offset.saturating_add(length).min(self.len);
        let up = |at: u64, to: u64| at.div_ceil(to).saturating_mul(to).min(self.len);
        let (start, stop) = (offset & !(GRANULE - 1), up(end, GRANULE));
        if stop - start >= up(end, chunk) - (offset & !(chunk - 1)) {
            return None;
        }
        // Every bit from the first piece to the last, word by word.
        let (first, last) = ((start / GRANULE) as usize, stop.div_ceil(GRANULE) as usize);
        let mut i = first;
        while i < last {
            let bits = (last - i).min(64 - i % 64);
            let mask = (u64::MAX >> (64 - bits)) << (i % 64);
            if self.known.get(i / 64)?.load(Ordering::Acquire) & mask != mask {
                return None;
            }
            i += bits;
        }
        Some(start..stop)
    }

    /// Checks `data`, the block's bytes from `start` (a piece boundary), against the
    /// known pieces: `None` if some piece is not known, else the first piece that
    /// differs as (its index, its CRC now, its CRC known). One pass over `data`,
    /// compared with the known CRCs joined; piece by piece only to name a difference.
    fn check(&self, start: u64, data: &[u8]) -> Option<std::result::Result<(), (u64, u32, u32)>> {
        let first = start / GRANULE;
        let appender = Appender::for_len(GRANULE);
        let mut joined = None;
        for (i, piece) in data.chunks(GRANULE as usize).enumerate() {
            let known = self.get((first + i as u64) as usize)?;
            joined = Some(match joined {
                None => known,
                Some(whole) if piece.len() as u64 == GRANULE => appender.join(whole, known),
                Some(whole) => join(whole, known, piece.len() as u64),
            });
        }
        if joined == Some(crc32c(data)) {
            return Some(Ok(()));
        }
        for (i, piece) in data.chunks(GRANULE as usize).enumerate() {
            let index = first + i as u64;
            let known = self.get(index as usize)?;
            let found = crc32c(piece);
            if found != known {
                return Some(Err((index, found, known)));
            }
        }
        // Every piece matched but not the whole: cannot be; say so rather than pass.
        Some(Err((first, crc32c(data), joined.unwrap_or(0))))
    }
}

/// A stored record, checked for shape and read in place: a range read looks up only
/// the checksums of the chunks it touches.
#[derive(Debug)]
pub(crate) struct Record<'a> {
    chunk: u64,
    len: u64,
    whole: u32,
    crcs: &'a [u8],
    /// The block's pieces the backend keeps, if any.
    granules: Option<&'a Granules>,
}

impl<'a> Record<'a> {
    /// Parses a stored record; `Corrupt` (naming `key`) when it is not one.
    pub(crate) fn parse(op: Op, key: &str, record: &'a [u8]) -> Result<Record<'a>> {
        let bad = |why: &str| corrupt(op, key, format!("its checksum record {why}"));
        if record.is_empty() {
            return Err(bad("is empty (on S3: metadata that is not base64)"));
        }
        if record.len() < HEADER || &record[..4] != MAGIC {
            return Err(bad("is not one (no BSUM header)"));
        }
        if record[4] != VERSION || record[5] != CRC32C {
            return Err(bad(&format!(
                "has version {} and algorithm {}, this build knows version {VERSION} with CRC32C",
                record[4], record[5]
            )));
        }
        let chunk = u64::from(word(record, 8));
        if !chunk.is_power_of_two() || !(MIN_CHUNK..=MAX_CHUNK).contains(&chunk) {
            return Err(bad(&format!("has chunks of {chunk} bytes")));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&record[12..20]);
        let len = u64::from_le_bytes(len);
        if len > crate::BLOCK_SIZE as u64 {
            return Err(bad(&format!(
                "is for {len} bytes, more than any block ({})",
                crate::BLOCK_SIZE
            )));
        }
        let crcs = &record[HEADER..];
        if !crcs.len().is_multiple_of(4) || (crcs.len() / 4) as u64 != len.div_ceil(chunk) {
            return Err(bad(&format!(
                "has {} bytes of chunk checksums for {len} bytes",
                crcs.len()
            )));
        }
        Ok(Record {
            chunk,
            len,
            whole: word(record, 20),
            crcs,
            granules: None,
        })
    }

    /// The record with the pieces of its block the backend keeps ([`Granules`]).
    pub(crate) fn with_granules(self, granules: Option<&'a Granules>) -> Record<'a> {
        Record { granules, ..self }
    }

    /// The whole block's CRC as its chunks' CRCs join up to.
    fn joined(&self) -> u32 {
        let appender = Appender::for_len(self.chunk);
        let mut whole = 0;
        for (i, at) in (0..self.crcs.len()).step_by(4).enumerate() {
            let crc = word(self.crcs, at);
            let from = i as u64 * self.chunk;
            let piece = self.chunk.min(self.len - from);
            whole = if i == 0 {
                crc
            } else if piece == self.chunk {
                appender.join(whole, crc)
            } else {
                join(whole, crc, piece)
            };
        }
        whole
    }

    /// Checks `data`, the bytes of the block from `start` (a chunk boundary) to the end
    /// of a chunk or of the block, whose stored length is `size`; `taken` is the CRC32C
    /// of `data` if the backend took it as the bytes arrived.
    ///
    /// With [`Record::with_granules`], a read of whole pieces that is not whole chunks
    /// is checked by its pieces, and the pieces of every chunk checked are learned.
    pub(crate) fn verify(
        &self,
        op: Op,
        key: &str,
        start: u64,
        data: &[u8],
        size: u64,
        taken: Option<u32>,
    ) -> Result<()> {
        let granules = self.granules;
        if size != self.len {
            return Err(corrupt(
                op,
                key,
                format!(
                    "it is {size} bytes long, but its checksums were written for {} bytes",
                    self.len
                ),
            ));
        }
        if data.is_empty() {
            return Ok(());
        }
        let end = start + data.len() as u64;
        let whole_chunks =
            start.is_multiple_of(self.chunk) && (end.is_multiple_of(self.chunk) || end == size);
        if let (false, Some(granules)) = (whole_chunks, granules) {
            match granules.check(start, data) {
                Some(Ok(())) => return Ok(()),
                Some(Err((index, found, known))) => {
                    let from = index * GRANULE;
                    return Err(corrupt(
                        op,
                        key,
                        format!(
                            "bytes {from}..{} (in chunk {}) have CRC32C {found:08x}, {known:08x} when their chunk last verified",
                            (from + GRANULE).min(size),
                            from / self.chunk
                        ),
                    ));
                }
                None => {}
            }
        }
        if !whole_chunks {
            return Err(Error::new(ErrorKind::Backend, op).with_key(key).with_detail(format!(
                "the backend read bytes {start}..{end} of a block of {size}, not whole chunks of {}",
                self.chunk
            )));
        }
        // The whole block in one pass when it matches (the common case, and faster
        // than a call per chunk); chunk by chunk to find what differs when it does not.
        // A whole read also checks that the chunk CRCs add up to the whole's: a record
        // damaged in one chunk's CRC would otherwise pass here (and scrub, and copy)
        // while ranges over that chunk fail.
        let whole_read = start == 0 && end == size;
        if whole_read && taken.unwrap_or_else(|| crc32c(data)) == self.whole {
            if self.joined() == self.whole {
                return Ok(());
            }
            return Err(corrupt(
                op,
                key,
                format!(
                    "its bytes match its whole checksum {:08x}, but its chunk checksums add up to {:08x}: the record is damaged",
                    self.whole,
                    self.joined()
                ),
            ));
        }
        let first = start / self.chunk;
        // Pieces are learned of chunks up to 64 KiB (the filesystem's are 8 KiB).
        const MOST: usize = 64;
        let learning = granules
            .filter(|_| self.chunk > GRANULE && self.chunk <= MOST as u64 * GRANULE && !whole_read);
        let appender = Appender::for_len(GRANULE);
        let mut pieces = [0u32; MOST];
        for (i, bytes) in data.chunks(self.chunk as usize).enumerate() {
            let index = first + i as u64;
            let mut count = 0;
            let found = match learning {
                // The chunk's CRC joined from its pieces', at the cost of one pass.
                Some(_) => bytes.chunks(GRANULE as usize).fold(0, |whole, piece| {
                    let crc = crc32c(piece);
                    pieces[count] = crc;
                    count += 1;
                    match count {
                        1 => crc,
                        _ if piece.len() as u64 == GRANULE => appender.join(whole, crc),
                        _ => join(whole, crc, piece.len() as u64),
                    }
                }),
                None => crc32c(bytes),
            };
            let at = index as usize * 4;
            let expected = (at + 4 <= self.crcs.len()).then(|| word(self.crcs, at));
            if let (Some(granules), true) = (learning, expected == Some(found)) {
                let first_piece = (index * self.chunk / GRANULE) as usize;
                for (j, &crc) in pieces[..count].iter().enumerate() {
                    granules.learn(first_piece + j, crc);
                }
            }
            if expected != Some(found) {
                let from = index * self.chunk;
                return Err(corrupt(
                    op,
                    key,
                    format!(
                        "chunk {index} (bytes {from}..{}) has CRC32C {found:08x}, its checksum says {}",
                        from + bytes.len() as u64,
                        expected.map_or("nothing".to_owned(), |e| format!("{e:08x}"))
                    ),
                ));
            }
        }
        if start == 0 && end == size {
            // Every chunk matched but the whole did not: the record contradicts itself.
            return Err(corrupt(
                op,
                key,
                format!(
                    "its chunks match their checksums but the whole block's CRC32C is {:08x}, its checksum says {:08x}",
                    crc32c(data),
                    self.whole
                ),
            ));
        }
        Ok(())
    }
}

/// The little-endian `u32` at `at`.
fn word(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The chunk size of a stored record, if it looks like one (a backend that must know
/// which bytes to read before it checks anything).
pub fn record_chunk(record: &[u8]) -> Option<u64> {
    (record.len() >= HEADER && &record[..4] == MAGIC)
        .then(|| u64::from(word(record, 8)))
        .filter(|c| c.is_power_of_two() && (MIN_CHUNK..=MAX_CHUNK).contains(c))
}

/// The bytes a range read of `(offset, length)` must read to verify it: whole chunks
/// of `chunk` bytes. The end may lie past the block; the read is cut there as usual.
pub fn widen(offset: u64, length: u64, chunk: u64) -> Range<u64> {
    let start = offset - offset % chunk;
    let end = offset.saturating_add(length);
    let end = end.div_ceil(chunk).saturating_mul(chunk).max(end);
    start..end
}

/// A `Corrupt` error for `key` saying `why`.
pub(crate) fn corrupt(op: Op, key: &str, why: String) -> Error {
    Error::new(ErrorKind::Corrupt, op)
        .with_key(key)
        .with_detail(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn records_round_trip_and_the_whole_matches_one_crc() {
        // The check value of CRC-32C (RFC 3720's test vector).
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        for len in [0, 1, 16_383, 16_384, 16_385, 4 << 20] {
            let data = block(len);
            let sums = Sums::of(&data, CHUNK_SIZE);
            assert_eq!(sums.whole(), crc32c(&data), "{len}");
            let record = sums.encode();
            assert_eq!(record.len(), 24 + 4 * len.div_ceil(16_384));
            assert_eq!(record_chunk(&record), Some(CHUNK_SIZE));
            Record::parse(Op::Read, "k", &record)
                .unwrap()
                .verify(Op::Read, "k", 0, &data, len as u64, None)
                .unwrap();
        }
    }

    proptest::proptest! {
        /// The whole block's CRC, joined from its chunks', is the CRC of the block.
        #[test]
        fn the_joined_whole_is_the_blocks_crc(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..70_000),
            shift in 12u32..17,
        ) {
            let sums = Sums::of(&data, 1 << shift);
            proptest::prop_assert_eq!(sums.whole(), crc32c(&data));
        }
    }

    #[test]
    fn sums_taken_part_by_part_are_the_sums_of_the_whole() {
        // As the filesystem takes them while it writes: parts of whole chunks, the
        // last one short, or a single part.
        for (len, chunk, part) in [
            (crate::BLOCK_SIZE, 8192, 512 * 1024),
            (3 * 1024 * 1024 + 5, 8192, 512 * 1024),
            (200_005, 32_768, 65_536),
            (100, 8192, 512 * 1024),
            (0, 8192, 512 * 1024),
        ] {
            let data = block(len);
            let mut summing = Summing::new(chunk, len);
            for piece in data.chunks(part) {
                summing.add(piece);
            }
            assert_eq!(summing.finish(), Sums::of(&data, chunk), "{len} in {part}");
        }
    }

    /// Pieces are learned only from chunks that verified; a range of known pieces is
    /// read and checked alone, and damage in it names the piece, its chunk and both
    /// CRCs; ranges whose pieces are not all known, or that pieces would not make
    /// smaller, keep to whole chunks.
    #[test]
    fn pieces_learned_from_verified_chunks_check_ranges_alone() {
        let len = 50_000u64; // the last chunk and the last piece are short
        let mut data = block(len as usize);
        let record = Sums::of(&data, 8192).encode();
        let sums = Record::parse(Op::ReadRange, "k", &record).unwrap();
        let granules = Granules::for_len(len);
        let pieces = Record::parse(Op::ReadRange, "k", &record)
            .unwrap()
            .with_granules(Some(&granules));
        let range = |offset, length| granules.around(offset, length, 8192);
        assert_eq!(range(9000, 4096), None, "nothing known yet");
        // A chunk that fails teaches nothing.
        let mut bad = data[8192..16_384].to_vec();
        bad[5] ^= 1;
        assert!(pieces
            .verify(Op::ReadRange, "k", 8192, &bad, len, None)
            .is_err());
        assert_eq!(range(9000, 4096), None);
        // Chunks 1 and 2 verify: their pieces (8..24) become known.
        pieces
            .verify(Op::ReadRange, "k", 8192, &data[8192..24_576], len, None)
            .unwrap();
        assert_eq!(
            range(9000, 4096),
            Some(8192..13_312),
            "5 pieces, not 16 KiB"
        );
        assert_eq!(
            range(10_240, 4096),
            Some(10_240..14_336),
            "aligned: 4 pieces"
        );
        assert_eq!(
            range(8192, 8192),
            None,
            "a whole chunk: no smaller by pieces"
        );
        assert_eq!(range(20_000, 5000), None, "piece 24 is not known");
        assert_eq!(range(len, 10), None, "past the end");
        pieces
            .verify(Op::ReadRange, "k", 8192, &data[8192..14_336], len, None)
            .unwrap();
        // The block's end: the last chunk (49,152..50,000) is one short piece.
        pieces
            .verify(Op::ReadRange, "k", 49_152, &data[49_152..], len, None)
            .unwrap();
        assert_eq!(range(40_960, 100), None, "chunk 5 was never read");
        pieces
            .verify(Op::ReadRange, "k", 40_960, &data[40_960..49_152], len, None)
            .unwrap();
        assert_eq!(range(48_000, 2000), Some(47_104..50_000));
        pieces
            .verify(Op::ReadRange, "k", 47_104, &data[47_104..], len, None)
            .unwrap();
        // Damage in a known piece.
        data[12_300] ^= 0x10;
        let e = pieces
            .verify(Op::ReadRange, "k", 10_240, &data[10_240..14_336], len, None)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        let text = e.to_string();
        assert!(text.contains("bytes 12288..13312 (in chunk 1)"), "{text}");
        assert!(
            text.contains(&format!("{:08x}", crc32c(&data[12_288..13_312]))),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{:08x}",
                crc32c(&block(len as usize)[12_288..13_312])
            )),
            "{text}"
        );
        // Without pieces, a read that is not whole chunks is the backend's mistake.
        let e = sums
            .verify(Op::ReadRange, "k", 10_240, &data[10_240..14_336], len, None)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Backend, "{e}");
    }

    #[test]
    fn damage_names_the_chunk_and_both_checksums() {
        let mut data = block(50_000);
        let record = Sums::of(&data, CHUNK_SIZE).encode();
        let sums = Record::parse(Op::Read, "k", &record).unwrap();
        data[40_000] ^= 1;
        let e = sums
            .verify(Op::Read, "k", 0, &data, 50_000, None)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        let text = e.to_string();
        assert!(text.contains("chunk 2 (bytes 32768..49152)"), "{text}");
        assert!(text.contains(&format!("{:08x}", crc32c(&data[32_768..49_152]))));
        // Only the chunks given are checked.
        sums.verify(Op::Read, "k", 0, &data[..32_768], 50_000, None)
            .unwrap();
        sums.verify(Op::Read, "k", 49_152, &data[49_152..], 50_000, None)
            .unwrap();
        // A length that is not the block's is corrupt before any chunk is read.
        let e = sums
            .verify(Op::Read, "k", 0, &data[..10], 10, None)
            .unwrap_err();
        assert!(e.to_string().contains("10 bytes long"), "{e}");
    }

    /// A CRC the backend took as the bytes arrived stands for the whole block's; when
    /// it differs, the chunks are checked one by one to name the damage.
    #[test]
    fn a_crc_taken_in_flight_is_checked_and_damage_still_named() {
        let mut data = block(50_000);
        let record = Sums::of(&data, CHUNK_SIZE).encode();
        let sums = Record::parse(Op::Read, "k", &record).unwrap();
        sums.verify(Op::Read, "k", 0, &data, 50_000, Some(crc32c(&data)))
            .unwrap();
        data[100] ^= 4;
        let e = sums
            .verify(Op::Read, "k", 0, &data, 50_000, Some(crc32c(&data)))
            .unwrap_err();
        assert!(e.to_string().contains("chunk 0 (bytes 0..16384)"), "{e}");
    }

    /// A record whose whole-block CRC is damaged: whole reads are corrupt (they check
    /// the whole first), ranges still check their chunks.
    #[test]
    fn a_damaged_whole_checksum_fails_whole_reads_only() {
        let data = block(50_000);
        let mut record = Sums::of(&data, CHUNK_SIZE).encode();
        record[20] ^= 1;
        let sums = Record::parse(Op::Read, "k", &record).unwrap();
        let e = sums
            .verify(Op::Read, "k", 0, &data, 50_000, None)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.to_string().contains("whole block's CRC32C"), "{e}");
        sums.verify(Op::Read, "k", 16_384, &data[16_384..32_768], 50_000, None)
            .unwrap();
    }

    #[test]
    fn records_that_do_not_parse_are_corrupt() {
        let good = Sums::of(&block(70_000), CHUNK_SIZE).encode();
        let mut cases = vec![
            Vec::new(),
            b"BSUM".to_vec(),
            good[..good.len() - 1].to_vec(),
        ];
        let mut wrong_version = good.clone();
        wrong_version[4] = 2;
        cases.push(wrong_version);
        // A record for more bytes than any block (a file grown past 4 MiB, with a
        // record made to match it).
        let mut huge = Sums::of(&block(70_000), CHUNK_SIZE).encode();
        huge[12..20].copy_from_slice(&5_000_000u64.to_le_bytes());
        huge.resize(24 + 4 * 5_000_000usize.div_ceil(16_384), 0);
        cases.push(huge);
        let mut extra = good.clone();
        extra.extend_from_slice(&[0; 4]);
        cases.push(extra);
        for record in cases {
            let e = Record::parse(Op::Read, "k", &record).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{record:?}");
        }
    }

    #[test]
    fn widening_covers_whole_chunks() {
        assert_eq!(widen(0, 1, 16_384), 0..16_384);
        assert_eq!(widen(16_383, 2, 16_384), 0..32_768);
        assert_eq!(widen(20_000, 4096, 16_384), 16_384..32_768);
        assert_eq!(widen(20_000, 4096, 8_192), 16_384..24_576);
        assert_eq!(
            widen(u64::MAX - 5, 10, 16_384),
            (u64::MAX - 5 - (u64::MAX - 5) % 16_384)..u64::MAX
        );
    }
}
