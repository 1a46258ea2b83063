//! The shared conformance suite: the contract as test cases, run against every backend
//! and through the pool.
//!
//! Available with the `conformance` feature. Each case is a plain function over a
//! [`Target`] that panics when the store breaks the contract. A test crate runs them all,
//! one `#[test]` per case, with [`conformance_suite!`](crate::conformance_suite):
//!
//! ```
//! use std::sync::Arc;
//! use blockstore::{conformance::Target, MemoryStore};
//!
//! fn memory() -> Target {
//!     Target::new(Arc::new(MemoryStore::new()), false)
//! }
//!
//! blockstore::conformance_suite!(memory);
//! # fn main() {}
//! ```
//!
//! The factory is called once per case, so every case starts on an empty store (for
//! stores that share state, such as one S3 bucket, give each target its own prefix).
//! [`CASES`] lists the same cases by name, to run them in a loop.

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use crate::error::{ErrorKind, Result};
use crate::op::Op;
use crate::store::{BlockRef, BlockStore, BLOCK_SIZE};

/// A store under test and what the suite must know about it.
pub struct Target {
    /// The store, empty when the case starts.
    pub store: Arc<dyn BlockStore>,
    /// Whether keys form a hierarchy (the filesystem backend): `a/b` and `a/b/c` then
    /// cannot both exist, and the cases that differ check the other rule.
    pub hierarchical: bool,
    /// The longest key the store takes: 1024, less a backend's own key prefix (S3).
    pub max_key_len: usize,
    keep: Vec<Box<dyn Any + Send + Sync>>,
}

impl Target {
    /// A target over `store`.
    pub fn new(store: Arc<dyn BlockStore>, hierarchical: bool) -> Self {
        Target {
            store,
            hierarchical,
            max_key_len: crate::key::MAX_KEY_LEN,
            keep: Vec::new(),
        }
    }

    /// Lowers the longest key the suite expects to work (a backend that prepends its
    /// own prefix to keys has less room).
    pub fn with_max_key_len(mut self, max_key_len: usize) -> Self {
        self.max_key_len = max_key_len;
        self
    }

    /// Keeps `guard` (a temporary directory, a server handle) alive as long as the target.
    pub fn keep(mut self, guard: impl Any + Send + Sync) -> Self {
        self.keep.push(Box::new(guard));
        self
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // Close before the guards go (a temporary directory must outlive the store).
        let _ = self.store.close();
        self.keep.clear();
    }
}

/// Calls `$callback!($($args)*; case, case, ...)` with every case name; the one list.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_case_list {
    ([$($callback:tt)*] ($($args:tt)*)) => {
        $($callback)*!($($args)*;
            round_trip_sizes,
            too_large_is_refused_and_keeps_old_value,
            overwrite_shorter_and_longer,
            absent_block_is_not_found,
            range_rules,
            range_check_order,
            range_into_buffers,
            read_at_reads_like_pread,
            ranges_across_chunk_edges,
            verify_reads_the_whole_block,
            sizes_and_list_blocks,
            delete_is_idempotent,
            delete_by_prefix_counts,
            prefix_semantics_and_order,
            scan_pages_and_resumes,
            scan_during_writes_and_deletes,
            delete_everything_then_usable,
            valid_keys_round_trip,
            invalid_keys_are_refused,
            invalid_prefixes_are_refused,
            check_order,
            close_semantics,
            close_never_waits_for_an_open_scan,
            hierarchy_rules,
            buffers_are_the_callers_own,
            health_check_on_fresh_store,
            concurrent_writers_of_one_key,
            concurrent_mixed_operations,
            after_fork_answers_without_hanging,
        );
    };
}

/// Expands to one `#[test]` per conformance case, each calling `$factory()` for a fresh
/// [`Target`](crate::conformance::Target).
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::__conformance_case_list!([$crate::__blockstore_conformance_tests]($factory));
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __blockstore_conformance_tests {
    ($factory:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let target = $factory();
                $crate::conformance::$case(&target);
            }
        )*
    };
}

macro_rules! case_table {
    (; $($case:ident),* $(,)?) => {
        /// Every case, by name, in the suite's order.
        pub const CASES: &[(&str, fn(&Target))] = &[$((stringify!($case), $case)),*];
    };
}
__conformance_case_list!([case_table]());

// ---------------------------------------------------------------------------------------
// helpers

/// Bytes that differ at every position and between seeds, so a shifted, truncated or
/// blended read never matches by accident.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(31)
                .wrapping_add(u32::from(seed) * 7 + (i >> 8) as u32) as u8
        })
        .collect()
}

#[track_caller]
fn expect_kind<T: std::fmt::Debug>(result: Result<T>, kind: ErrorKind, what: &str) {
    match result {
        Err(e) => assert_eq!(e.kind(), kind, "{what}: wrong error kind: {e}"),
        Ok(v) => {
            let shown = format!("{v:?}");
            let shown = if shown.len() > 80 {
                &shown[..80]
            } else {
                &shown
            };
            panic!("{what}: expected {kind:?}, got Ok({shown})")
        }
    }
}

#[track_caller]
fn ok<T>(result: Result<T>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error: {e} ({:?})", e.kind()),
    }
}

#[track_caller]
fn assert_block(store: &dyn BlockStore, key: &str, expected: &[u8]) {
    let got = ok(store.read_block(key), &format!("read {key}"));
    assert!(
        got == expected,
        "read {key}: got {} bytes, expected {} bytes (content differs: {})",
        got.len(),
        expected.len(),
        got.len() == expected.len()
    );
}

fn list(store: &dyn BlockStore, prefix: &str) -> Vec<String> {
    ok(store.list_by_prefix(prefix), &format!("list {prefix:?}"))
}

// ---------------------------------------------------------------------------------------
// blocks

/// Empty, one-byte and full-size blocks read back exactly.
pub fn round_trip_sizes(t: &Target) {
    let s = &*t.store;
    for (key, len) in [
        ("rt/empty", 0),
        ("rt/one", 1),
        ("rt/odd", 4097),
        ("rt/full", BLOCK_SIZE),
    ] {
        let data = pattern(len, 1);
        ok(s.write_block(key, &data), key);
        assert_block(s, key, &data);
        assert_eq!(ok(s.block_size(key), key), len as u64, "size of {key}");
    }
}

/// Ranges that start, end or cross at the edges of the checksum chunks, and
/// in the last, short chunk, read exactly their bytes through every read call (a
/// store that checks checksums reads whole chunks and must cut them right).
pub fn ranges_across_chunk_edges(t: &Target) {
    let s = &*t.store;
    let key = "edges/block";
    let len: u64 = 3 * 65_536 + 4_000;
    let data = pattern(len as usize, 9);
    ok(s.write_block(key, &data), "write");
    let mut ranges = vec![(0, 1), (len - 1, 1), (1, len), (7, u64::MAX)];
    // The chunk sizes the crate's backends use (8, 16 and 64 KiB), each edge met from
    // before, after and across.
    for c in [8_192u64, 16_384, 65_536] {
        ranges.extend([
            (c - 1, 1),
            (c - 1, 2),
            (c, c),
            (c - 500, c + 1_000),
            (2 * c - 1, c + 2),
            (2 * c + 3, 4_096),
        ]);
    }
    ranges.extend([(3 * 65_536, 4_000), (3 * 65_536 + 1, 10_000)]);
    for (offset, length) in ranges {
        let end = offset.saturating_add(length).min(len) as usize;
        let want = &data[offset as usize..end];
        let got = ok(s.read_block_range(key, offset, length), "range");
        assert!(got == want, "range ({offset}, {length}): wrong bytes");
        let mut buf = vec![0u8; length.min(len + 10) as usize];
        let n = ok(s.read_block_range_into(key, offset, &mut buf), "range into");
        assert!(
            &buf[..n] == want,
            "range into ({offset}, {length}): wrong bytes"
        );
        let n = ok(s.read_at(key, offset, &mut buf), "read_at");
        assert!(
            &buf[..n] == want,
            "read_at ({offset}, {length}): wrong bytes"
        );
    }
    expect_kind(
        s.read_block_range(key, len, 1),
        ErrorKind::InvalidRange,
        "at the end",
    );
    expect_kind(
        s.read_block_range(key, 4 * 65_536, 1),
        ErrorKind::InvalidRange,
        "a chunk past the end",
    );
    assert_block(s, key, &data);
}

/// `verify_block` reads a block whole and says whether it could check it; an absent
/// block is `NotFound`, a bad key `InvalidKey`, and a closed store `Closed`.
pub fn verify_reads_the_whole_block(t: &Target) {
    let s = &*t.store;
    for (key, len) in [("verify/empty", 0), ("verify/some", 200_000)] {
        ok(s.write_block(key, &pattern(len, 3)), key);
        let found = ok(s.verify_block(key), key);
        assert!(
            matches!(
                found,
                crate::Integrity::Verified | crate::Integrity::Unverified
            ),
            "{key}: {found:?}"
        );
        // Checked or not, it is the same answer each time.
        assert_eq!(ok(s.verify_block(key), key), found, "{key}");
    }
    expect_kind(s.verify_block("verify/none"), ErrorKind::NotFound, "absent");
    // Its errors are a verify's, not those of the read it makes.
    if let Err(e) = s.verify_block("verify/none") {
        assert_eq!(e.op(), Op::Verify, "{e}");
        assert_eq!(e.key(), Some("verify/none"), "{e}");
    }
    expect_kind(
        s.verify_block("verify//x"),
        ErrorKind::InvalidKey,
        "bad key",
    );
    ok(s.close(), "close");
    expect_kind(
        s.verify_block("verify/some"),
        ErrorKind::Closed,
        "after close",
    );
    // A closed store's refusals name what they refused.
    for e in [
        s.verify_block("verify/some").err(),
        s.list_by_prefix("verify/").err(),
        s.list_blocks("verify/").err(),
        s.delete_by_prefix("verify/").err(),
        s.scan("verify/", None).err(),
    ] {
        let e = e.expect("a closed store refuses");
        assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
        assert!(e.to_string().contains("verify/"), "{e}");
    }
}

/// A block over `BLOCK_SIZE` is refused, writes nothing, and leaves the old value.
pub fn too_large_is_refused_and_keeps_old_value(t: &Target) {
    let s = &*t.store;
    let old = pattern(100, 2);
    ok(s.write_block("big/k", &old), "write old");
    let huge = pattern(BLOCK_SIZE + 1, 3);
    expect_kind(
        s.write_block("big/k", &huge),
        ErrorKind::BlockTooLarge,
        "overwrite with BLOCK_SIZE+1",
    );
    assert_block(s, "big/k", &old);
    expect_kind(
        s.write_block("big/new", &huge),
        ErrorKind::BlockTooLarge,
        "new key with BLOCK_SIZE+1",
    );
    expect_kind(
        s.read_block("big/new"),
        ErrorKind::NotFound,
        "refused block must not exist",
    );
    assert_eq!(list(s, "big/"), vec!["big/k".to_string()]);
}

/// Overwrites with a shorter and a longer value leave exactly the last value.
pub fn overwrite_shorter_and_longer(t: &Target) {
    let s = &*t.store;
    let long = pattern(10_000, 4);
    let short = pattern(10, 5);
    let longer = pattern(70_000, 6);
    ok(s.write_block("ow/k", &long), "write long");
    ok(s.write_block("ow/k", &short), "overwrite short");
    assert_block(s, "ow/k", &short);
    assert_eq!(ok(s.block_size("ow/k"), "size"), 10);
    ok(s.write_block("ow/k", &longer), "overwrite longer");
    assert_block(s, "ow/k", &longer);
    ok(s.write_block("ow/k", &[]), "overwrite empty");
    assert_block(s, "ow/k", &[]);
    assert_eq!(
        list(s, "ow/"),
        vec!["ow/k".to_string()],
        "one key after overwrites"
    );
}

/// Every read of an absent block is NotFound.
pub fn absent_block_is_not_found(t: &Target) {
    let s = &*t.store;
    ok(s.write_block("nf/other", b"x"), "write neighbour");
    for key in ["nf/missing", "nf/other/below", "nf"] {
        expect_kind(
            s.read_block(key),
            ErrorKind::NotFound,
            &format!("read {key}"),
        );
        expect_kind(
            s.read_block_range(key, 0, 1),
            ErrorKind::NotFound,
            &format!("range {key}"),
        );
        let mut buf = [0u8; 4];
        expect_kind(
            s.read_block_range_into(key, 0, &mut buf),
            ErrorKind::NotFound,
            &format!("range_into {key}"),
        );
        expect_kind(
            s.block_size(key),
            ErrorKind::NotFound,
            &format!("size {key}"),
        );
    }
}

/// Ranges return `[offset, min(offset + length, size))`; offsets at or past the end fail.
pub fn range_rules(t: &Target) {
    let s = &*t.store;
    let data = pattern(1000, 7);
    ok(s.write_block("rg/k", &data), "write");
    let cases: [(u64, u64, std::ops::Range<usize>); 7] = [
        (0, 1000, 0..1000),
        (0, 1, 0..1),
        (10, 20, 10..30),
        (990, 10, 990..1000),
        (990, 11, 990..1000),
        (999, u64::MAX, 999..1000),
        (0, u64::MAX, 0..1000),
    ];
    for (offset, length, expect) in cases {
        let got = ok(
            s.read_block_range("rg/k", offset, length),
            &format!("range {offset}+{length}"),
        );
        assert!(
            got == data[expect.clone()],
            "range {offset}+{length}: wrong bytes ({} bytes)",
            got.len()
        );
    }
    for offset in [1000, 1001, u64::MAX / 2, u64::MAX] {
        expect_kind(
            s.read_block_range("rg/k", offset, 1),
            ErrorKind::InvalidRange,
            &format!("offset {offset}"),
        );
        expect_kind(
            s.read_block_range("rg/k", offset, u64::MAX),
            ErrorKind::InvalidRange,
            &format!("offset {offset} to the end"),
        );
    }
    ok(s.write_block("rg/empty", &[]), "write empty");
    for (offset, length) in [(0, 1), (0, u64::MAX), (1, 1)] {
        expect_kind(
            s.read_block_range("rg/empty", offset, length),
            ErrorKind::InvalidRange,
            &format!("empty block {offset}+{length}"),
        );
    }
    let full = pattern(BLOCK_SIZE, 8);
    ok(s.write_block("rg/full", &full), "write full");
    let tail = ok(
        s.read_block_range("rg/full", (BLOCK_SIZE - 5) as u64, u64::MAX),
        "tail of full block",
    );
    assert_eq!(tail, &full[BLOCK_SIZE - 5..]);
    let mid = ok(
        s.read_block_range("rg/full", 1 << 20, 1 << 20),
        "1 MiB in the middle",
    );
    assert!(mid == full[1 << 20..2 << 20], "1 MiB range differs");
}

/// A zero length fails before NotFound; NotFound comes before an offset past the end.
pub fn range_check_order(t: &Target) {
    let s = &*t.store;
    expect_kind(
        s.read_block_range("ro/missing", 0, 0),
        ErrorKind::InvalidRange,
        "zero length on absent key",
    );
    expect_kind(
        s.read_block_range_into("ro/missing", 0, &mut []),
        ErrorKind::InvalidRange,
        "empty buffer on absent key",
    );
    expect_kind(
        s.read_block_range("ro/missing", u64::MAX, 1),
        ErrorKind::NotFound,
        "huge offset on absent key",
    );
    ok(s.write_block("ro/k", b"abc"), "write");
    expect_kind(
        s.read_block_range("ro/k", 1, 0),
        ErrorKind::InvalidRange,
        "zero length on present key",
    );
    expect_kind(
        s.read_block_range("ro/k", 3, 0),
        ErrorKind::InvalidRange,
        "zero length at end",
    );
}

/// `read_block_range_into` fills small, exact and oversized buffers correctly.
pub fn range_into_buffers(t: &Target) {
    let s = &*t.store;
    let data = pattern(5000, 9);
    ok(s.write_block("ri/k", &data), "write");
    let mut small = [0u8; 10];
    assert_eq!(
        ok(s.read_block_range_into("ri/k", 100, &mut small), "small"),
        10
    );
    assert_eq!(&small, &data[100..110]);
    let mut exact = vec![0u8; 5000];
    assert_eq!(
        ok(s.read_block_range_into("ri/k", 0, &mut exact), "exact"),
        5000
    );
    assert!(exact == data, "exact buffer differs");
    let mut over = vec![0xEEu8; 6000];
    assert_eq!(
        ok(
            s.read_block_range_into("ri/k", 4000, &mut over),
            "oversized"
        ),
        1000
    );
    assert_eq!(&over[..1000], &data[4000..]);
    assert!(
        over[1000..].iter().all(|&b| b == 0xEE),
        "bytes past the count must be untouched"
    );
    let mut one = [0u8; 1];
    expect_kind(
        s.read_block_range_into("ri/k", 5000, &mut one),
        ErrorKind::InvalidRange,
        "offset == size",
    );
    ok(s.write_block("ri/empty", &[]), "write empty");
    expect_kind(
        s.read_block_range_into("ri/empty", 0, &mut one),
        ErrorKind::InvalidRange,
        "empty block",
    );
}

/// `read_at` has `pread(2)` semantics for a file system built on blocks: the count
/// read, 0 at or past the end, for an empty block and for an empty buffer; an absent
/// block is still `NotFound`, and a bad key `InvalidKey`.
pub fn read_at_reads_like_pread(t: &Target) {
    let s = &*t.store;
    let data = pattern(3000, 4);
    ok(s.write_block("ra/k", &data), "write");
    let mut buf = vec![0xEEu8; 1000];
    assert_eq!(ok(s.read_at("ra/k", 0, &mut buf), "from the start"), 1000);
    assert!(buf == data[..1000], "from the start");
    assert_eq!(ok(s.read_at("ra/k", 2500, &mut buf), "across the end"), 500);
    assert!(buf[..500] == data[2500..], "across the end");
    for offset in [3000, 3001, BLOCK_SIZE as u64, u64::MAX] {
        assert_eq!(
            ok(s.read_at("ra/k", offset, &mut buf), "at or past the end"),
            0,
            "offset {offset}"
        );
    }
    assert_eq!(ok(s.read_at("ra/k", 5, &mut []), "empty buffer"), 0);
    ok(s.write_block("ra/empty", &[]), "write empty");
    assert_eq!(ok(s.read_at("ra/empty", 0, &mut buf), "empty block"), 0);
    expect_kind(
        s.read_at("ra/absent", 0, &mut buf),
        ErrorKind::NotFound,
        "absent",
    );
    expect_kind(
        s.read_at("ra/absent", 0, &mut []),
        ErrorKind::NotFound,
        "absent, empty buffer",
    );
    expect_kind(
        s.read_at("ra//bad", 0, &mut buf),
        ErrorKind::InvalidKey,
        "bad key",
    );
}

/// `block_size` and the sizes of `list_blocks` agree with what was written.
pub fn sizes_and_list_blocks(t: &Target) {
    let s = &*t.store;
    let sizes = [
        ("sz/a", 0usize),
        ("sz/b", 1),
        ("sz/c", 65_536),
        ("sz/d/e", 12_345),
    ];
    for (key, len) in sizes {
        ok(s.write_block(key, &pattern(len, 10)), key);
    }
    for (key, len) in sizes {
        assert_eq!(ok(s.block_size(key), key), len as u64, "block_size {key}");
    }
    let listed = ok(s.list_blocks("sz/"), "list_blocks");
    let got: Vec<(String, u64)> = listed.into_iter().map(|b| (b.key, b.size)).collect();
    let want: Vec<(String, u64)> = sizes
        .iter()
        .map(|(k, l)| (k.to_string(), *l as u64))
        .collect();
    assert_eq!(got, want, "list_blocks");
    let keys = list(s, "sz/");
    assert_eq!(
        keys,
        want.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        "list_by_prefix agrees"
    );
}

/// Deleting an absent block succeeds; a deleted block is gone.
pub fn delete_is_idempotent(t: &Target) {
    let s = &*t.store;
    ok(s.delete_block("del/never"), "delete absent");
    ok(s.write_block("del/k", b"v"), "write");
    ok(s.delete_block("del/k"), "delete");
    expect_kind(s.read_block("del/k"), ErrorKind::NotFound, "read deleted");
    ok(s.delete_block("del/k"), "delete again");
    assert!(list(s, "del/").is_empty(), "nothing listed after delete");
    ok(s.write_block("del/k", b"again"), "write after delete");
    assert_block(s, "del/k", b"again");
}

/// `delete_by_prefix` returns how many blocks this call removed, and spares the rest.
pub fn delete_by_prefix_counts(t: &Target) {
    let s = &*t.store;
    for i in 0..25 {
        ok(
            s.write_block(&format!("dp/x/{i:02}"), &pattern(i * 10, 11)),
            "write",
        );
    }
    ok(s.write_block("dp/y/keep", b"keep"), "write neighbour");
    ok(s.write_block("dpz", b"keep"), "write neighbour");
    assert_eq!(ok(s.delete_by_prefix("dp/x/"), "delete dp/x/"), 25);
    assert_eq!(ok(s.delete_by_prefix("dp/x/"), "delete dp/x/ again"), 0);
    assert_eq!(ok(s.delete_by_prefix("nothing/"), "delete no match"), 0);
    assert_eq!(
        list(s, "dp"),
        vec!["dp/y/keep".to_string(), "dpz".to_string()]
    );
    assert_block(s, "dp/y/keep", b"keep");
}

/// The keys a scan yields.
fn scanned(store: &dyn BlockStore, prefix: &str, after: Option<&str>) -> Vec<String> {
    ok(store.scan(prefix, after), "scan")
        .map(|b| ok(b, "scan step").key)
        .collect()
}

/// A scan crosses page boundaries (1,050 keys in nested directories) in key order,
/// each key once with its size, the same as the collected listings; `start_after`
/// resumes after a key, between two keys, past the end, and at or before the prefix.
pub fn scan_pages_and_resumes(t: &Target) {
    let s = &*t.store;
    let keys: Vec<String> = (0..1050)
        .map(|i| format!("sc/{:02}/{i:04}", i / 100))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        ok(s.write_block(key, &pattern(i % 7, i as u8)), "write");
    }
    ok(s.write_block("sb/outside", b"x"), "write outside");
    ok(s.write_block("sd/outside", b"x"), "write outside");
    let blocks: Vec<BlockRef> = ok(s.scan("sc/", None), "scan")
        .map(|b| ok(b, "scan step"))
        .collect();
    let got: Vec<&str> = blocks.iter().map(|b| b.key.as_str()).collect();
    assert_eq!(got, keys, "a scan gives every key once, in order");
    for (i, b) in blocks.iter().enumerate() {
        assert_eq!(b.size, (i % 7) as u64, "size of {}", b.key);
    }
    assert_eq!(ok(s.list_by_prefix("sc/"), "list"), keys);
    assert_eq!(ok(s.list_blocks("sc/"), "list blocks"), blocks);
    let after = |a: &str| scanned(s, "sc/", Some(a));
    assert_eq!(after("sc/05/0500"), keys[501..], "after a key");
    assert_eq!(after("sc/05/05005"), keys[501..], "between two keys");
    assert_eq!(
        after("sc/10/1049"),
        Vec::<String>::new(),
        "after the last key"
    );
    assert_eq!(after("sc/zz"), Vec::<String>::new(), "past the end");
    assert_eq!(after("sc/"), keys, "at the prefix");
    assert_eq!(after("s"), keys, "shorter than the prefix");
    assert_eq!(after("a"), keys, "before the prefix");
    assert_eq!(
        scanned(s, "sc/0", Some("sc/03")),
        keys[300..1000],
        "a name prefix"
    );
    assert_eq!(
        scanned(s, "", Some("sc/10/1049")),
        ["sd/outside"],
        "the whole store"
    );
}

/// Keys present for the whole of a scan appear exactly once and in order, whatever is
/// written or deleted while it runs; nothing outside the prefix appears.
pub fn scan_during_writes_and_deletes(t: &Target) {
    let s = &*t.store;
    let keys: Vec<String> = (0..300)
        .map(|i| format!("sw/{:02}/{i:03}", i / 30))
        .collect();
    for key in &keys {
        ok(s.write_block(key, b"v"), "write");
    }
    let mut scan = ok(s.scan("sw/", None), "scan");
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..100 {
        let block = scan.next().expect("more blocks");
        seen.push(ok(block, "scan step").key);
    }
    // Delete 50 not yet seen, write 50 new ones before and after the scan's position.
    let deleted: Vec<&String> = keys[200..250].iter().collect();
    for key in &deleted {
        ok(s.delete_block(key), "delete during the scan");
    }
    for i in 0..25 {
        ok(
            s.write_block(&format!("sw/00/0{i:02}a"), b"n"),
            "write behind",
        );
        ok(
            s.write_block(&format!("sw/09/{:03}b", 270 + i), b"n"),
            "write ahead",
        );
    }
    ok(s.write_block("sx/outside", b"o"), "write outside");
    for block in scan {
        seen.push(ok(block, "scan step").key);
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "a scan goes in strictly increasing key order"
    );
    for key in &keys {
        if deleted.contains(&key) {
            continue;
        }
        assert_eq!(
            seen.iter().filter(|k| *k == key).count(),
            1,
            "{key} was present throughout and must appear once"
        );
    }
    assert!(
        seen.iter().all(|k| k.starts_with("sw/")),
        "only keys under the prefix"
    );
}

/// Plain string-prefix matching, bytewise order, each key once.
pub fn prefix_semantics_and_order(t: &Target) {
    let s = &*t.store;
    let mut keys = vec![
        "a/b-c",
        "a/b.d",
        "a/b/x",
        "a/b0",
        "a/bc/y",
        "a/c",
        "ab",
        "x/block-10",
        "x/block-2",
        "x/block-1/z",
    ];
    if !t.hierarchical {
        keys.push("a/b");
    }
    for key in &keys {
        ok(s.write_block(key, key.as_bytes()), key);
    }
    let mut sorted: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    sorted.sort();
    assert_eq!(list(s, ""), sorted, "list everything, bytewise");
    let expect = |prefix: &str| -> Vec<String> {
        sorted
            .iter()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    };
    for prefix in [
        "a/b",
        "a/b/",
        "a/b-",
        "a/bc",
        "a/",
        "a",
        "x/block-",
        "x/block-1",
        "zzz",
        "a/b/x",
        "a/b/x/",
    ] {
        let got = list(s, prefix);
        assert_eq!(got, expect(prefix), "list {prefix:?}");
        let blocks = ok(s.list_blocks(prefix), "list_blocks");
        let block_keys: Vec<String> = blocks.into_iter().map(|b| b.key).collect();
        assert_eq!(
            block_keys, got,
            "list_blocks {prefix:?} agrees with list_by_prefix"
        );
        let unique: BTreeSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "each key once for {prefix:?}");
    }
    assert_eq!(ok(s.delete_by_prefix("a/b/"), "delete a/b/"), 1);
    assert_eq!(list(s, "a/b/"), Vec::<String>::new());
    let before = expect("a/b").len() as u64 - 1;
    assert_eq!(
        ok(s.delete_by_prefix("a/b"), "delete a/b"),
        before,
        "a/b matches a/b-c, a/b.d, a/b0, a/bc/y"
    );
    assert_eq!(list(s, "a/"), vec!["a/c".to_string()]);
    assert_eq!(list(s, "ab"), vec!["ab".to_string()]);
}

/// `delete_by_prefix("")` removes everything and the store stays usable.
pub fn delete_everything_then_usable(t: &Target) {
    let s = &*t.store;
    let keys = ["e/1", "e/2/3", "f", "g/h/i/j"];
    for key in keys {
        ok(s.write_block(key, b"data"), key);
    }
    assert_eq!(
        ok(s.delete_by_prefix(""), "delete everything"),
        keys.len() as u64
    );
    assert!(list(s, "").is_empty(), "store is empty");
    ok(s.health_check(), "healthy after emptying");
    ok(s.write_block("e/1", b"new"), "write after emptying");
    assert_block(s, "e/1", b"new");
    assert_eq!(list(s, ""), vec!["e/1".to_string()]);
}

/// Every kind of valid key is written, read, listed exactly and deleted.
pub fn valid_keys_round_trip(t: &Target) {
    let s = &*t.store;
    let long_segment = format!("k/{}", "s".repeat(255));
    let long_key = |len: usize| {
        let mut k = String::from("k/long");
        while k.len() < len - 101 {
            k.push('/');
            k.push_str(&"y".repeat(100));
        }
        k.push('/');
        let fill = len - k.len();
        k.push_str(&"z".repeat(fill));
        k
    };
    let longest = long_key(t.max_key_len);
    assert_eq!(longest.len(), t.max_key_len);
    expect_kind(
        s.write_block(&long_key(t.max_key_len + 1), b"x"),
        ErrorKind::InvalidKey,
        "a key one byte over the limit",
    );
    let keys: Vec<String> = [
        "k/with space",
        "k/ünïcödé/日本語/🦀",
        "k/plus+sign",
        "k/percent%41%2F",
        "k/hash#frag",
        "k/question?x=1&y=2",
        "k/..x..",
        "k/trailing.",
        "k/file.tmp",
        "k/.hidden",
        "k/.blockstore",
        ".blockstore-lookalike",
        "k/tilde~colon:semi;comma,eq=",
        "k/quotes'\"brackets[]{}",
    ]
    .iter()
    .map(|k| k.to_string())
    .chain([long_segment, longest])
    .collect();
    for key in &keys {
        let data = pattern(key.len(), 12);
        ok(s.write_block(key, &data), &format!("write {key:?}"));
        assert_block(s, key, &data);
        assert_eq!(list(s, key), vec![key.clone()], "list exactly {key:?}");
    }
    let mut sorted = keys.clone();
    sorted.sort();
    let mut listed = list(s, "k/");
    listed.extend(list(s, ".blockstore-"));
    let mut want: Vec<String> = sorted
        .iter()
        .filter(|k| k.starts_with("k/"))
        .cloned()
        .collect();
    want.extend(
        sorted
            .iter()
            .filter(|k| k.starts_with(".blockstore-"))
            .cloned(),
    );
    assert_eq!(listed, want, "listing of odd keys");
    for key in &keys {
        ok(s.delete_block(key), &format!("delete {key:?}"));
        expect_kind(
            s.read_block(key),
            ErrorKind::NotFound,
            &format!("deleted {key:?}"),
        );
    }
    assert!(list(s, "").is_empty(), "all odd keys deleted");
}

fn invalid_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "",
        "/a",
        "a/",
        "a//b",
        "./a",
        "a/.",
        "a/./b",
        "a/..",
        "../a",
        ".",
        "..",
        "a\0b",
        "a\nb",
        "a\tb",
        "a\u{1f}",
        "a\u{7f}",
        "a\u{FFFE}",
        "a\u{FFFF}",
        ".blockstore",
        ".blockstore/x",
    ]
    .iter()
    .map(|k| k.to_string())
    .collect();
    keys.push("a/".repeat(512) + "b");
    keys.push("x".repeat(1025));
    keys.push(format!("a/{}", "s".repeat(256)));
    keys
}

/// Every operation refuses every invalid key with InvalidKey.
pub fn invalid_keys_are_refused(t: &Target) {
    let s = &*t.store;
    for key in invalid_keys() {
        let k = key.as_str();
        let what = |op: &str| format!("{op} {k:?}");
        expect_kind(
            s.write_block(k, b"x"),
            ErrorKind::InvalidKey,
            &what("write"),
        );
        expect_kind(s.read_block(k), ErrorKind::InvalidKey, &what("read"));
        expect_kind(
            s.read_block_range(k, 0, 1),
            ErrorKind::InvalidKey,
            &what("range"),
        );
        let mut buf = [0u8; 1];
        expect_kind(
            s.read_block_range_into(k, 0, &mut buf),
            ErrorKind::InvalidKey,
            &what("range_into"),
        );
        expect_kind(s.block_size(k), ErrorKind::InvalidKey, &what("size"));
        expect_kind(s.delete_block(k), ErrorKind::InvalidKey, &what("delete"));
    }
    assert!(list(s, "").is_empty(), "no invalid key was stored");
}

/// Prefixes that no valid key starts with are refused; the others are accepted.
pub fn invalid_prefixes_are_refused(t: &Target) {
    let s = &*t.store;
    for prefix in [
        "/a",
        "a//",
        "a/../",
        "a/./",
        "//",
        ".blockstore/",
        "a\nb",
        "a\u{FFFF}",
    ] {
        expect_kind(
            s.list_by_prefix(prefix),
            ErrorKind::InvalidKey,
            &format!("list {prefix:?}"),
        );
        expect_kind(
            s.list_blocks(prefix),
            ErrorKind::InvalidKey,
            &format!("list_blocks {prefix:?}"),
        );
        expect_kind(
            s.delete_by_prefix(prefix),
            ErrorKind::InvalidKey,
            &format!("delete prefix {prefix:?}"),
        );
    }
    ok(s.write_block("a/.x", b"1"), "write a/.x");
    ok(s.write_block("a/b-1", b"2"), "write a/b-1");
    for (prefix, want) in [
        ("", vec!["a/.x", "a/b-1"]),
        ("a/", vec!["a/.x", "a/b-1"]),
        ("a/.", vec!["a/.x"]),
        ("a/..", vec![]),
        ("a/b-", vec!["a/b-1"]),
        (".blockstore", vec![]),
    ] {
        assert_eq!(list(s, prefix), want, "list {prefix:?}");
    }
}

/// InvalidKey comes before argument errors, which come before any I/O.
pub fn check_order(t: &Target) {
    let s = &*t.store;
    let huge = vec![0u8; BLOCK_SIZE + 1];
    expect_kind(
        s.write_block("a//b", &huge),
        ErrorKind::InvalidKey,
        "invalid key before BlockTooLarge",
    );
    expect_kind(
        s.read_block_range("a//b", 0, 0),
        ErrorKind::InvalidKey,
        "invalid key before zero length",
    );
    expect_kind(
        s.read_block_range_into("/a", 0, &mut []),
        ErrorKind::InvalidKey,
        "invalid key before empty buffer",
    );
}

/// A scan left open never holds `close` up; its next step after the close fails with
/// `Closed`, and then it ends.
pub fn close_never_waits_for_an_open_scan(t: &Target) {
    for i in 0..5 {
        ok(t.store.write_block(&format!("co/{i}"), b"v"), "write");
    }
    let mut scan = ok(t.store.scan("co/", None), "scan");
    assert_eq!(ok(scan.next().expect("a block"), "first step").key, "co/0");
    let store = t.store.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(store.close());
    });
    let closed = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("close waited for a scan left open");
    ok(closed, "close");
    match scan.next() {
        Some(Err(e)) => assert_eq!(e.kind(), ErrorKind::Closed, "{e}"),
        other => panic!("a step after close gave {other:?}"),
    }
    assert!(scan.next().is_none(), "a scan ends after an error");
}

/// Close is idempotent; afterwards every operation is Closed, checked before the key.
pub fn close_semantics(t: &Target) {
    let s = &*t.store;
    ok(s.write_block("cl/k", b"v"), "write before close");
    ok(s.close(), "close");
    ok(s.close(), "close again");
    for key in ["cl/k", "a//b"] {
        expect_kind(
            s.write_block(key, b"v"),
            ErrorKind::Closed,
            "write after close",
        );
        expect_kind(s.read_block(key), ErrorKind::Closed, "read after close");
        expect_kind(
            s.read_block_range(key, 0, 1),
            ErrorKind::Closed,
            "range after close",
        );
        expect_kind(
            s.read_block_range(key, 0, 0),
            ErrorKind::Closed,
            "zero range after close",
        );
        let mut buf = [0u8; 1];
        expect_kind(
            s.read_block_range_into(key, 0, &mut buf),
            ErrorKind::Closed,
            "range_into after close",
        );
        expect_kind(s.block_size(key), ErrorKind::Closed, "size after close");
        expect_kind(s.delete_block(key), ErrorKind::Closed, "delete after close");
    }
    expect_kind(
        s.write_block("cl/big", &vec![0u8; BLOCK_SIZE + 1]),
        ErrorKind::Closed,
        "Closed before BlockTooLarge",
    );
    for prefix in ["", "cl/", "//"] {
        expect_kind(
            s.delete_by_prefix(prefix),
            ErrorKind::Closed,
            "delete prefix after close",
        );
        expect_kind(
            s.list_by_prefix(prefix),
            ErrorKind::Closed,
            "list after close",
        );
        expect_kind(
            s.list_blocks(prefix),
            ErrorKind::Closed,
            "list_blocks after close",
        );
    }
    expect_kind(s.health_check(), ErrorKind::Closed, "health after close");
}

/// Flat stores allow `a/b` beside `a/b/c`; hierarchical ones refuse it with Conflict and
/// change nothing.
pub fn hierarchy_rules(t: &Target) {
    let s = &*t.store;
    ok(s.write_block("h/dir/child", b"child"), "write h/dir/child");
    ok(s.write_block("h/file", b"file"), "write h/file");
    if t.hierarchical {
        expect_kind(
            s.write_block("h/dir", b"x"),
            ErrorKind::Conflict,
            "file over a directory",
        );
        expect_kind(
            s.write_block("h/file/below", b"x"),
            ErrorKind::Conflict,
            "file below a file",
        );
        expect_kind(
            s.read_block("h/dir"),
            ErrorKind::NotFound,
            "read a directory",
        );
        expect_kind(
            s.block_size("h/dir"),
            ErrorKind::NotFound,
            "size of a directory",
        );
        expect_kind(
            s.read_block_range("h/dir", 0, 1),
            ErrorKind::NotFound,
            "range of a directory",
        );
        ok(s.delete_block("h/file/below"), "delete below a file");
        ok(s.delete_block("h/dir"), "delete a directory's name");
        assert_block(s, "h/dir/child", b"child");
        assert_block(s, "h/file", b"file");
        assert_eq!(
            list(s, "h/"),
            vec!["h/dir/child".to_string(), "h/file".to_string()]
        );
    } else {
        ok(s.write_block("h/dir", b"parent"), "a/b beside a/b/c");
        ok(s.write_block("h/file/below", b"below"), "a/b/c beside a/b");
        assert_block(s, "h/dir", b"parent");
        assert_block(s, "h/file/below", b"below");
        assert_eq!(
            list(s, "h/"),
            vec!["h/dir", "h/dir/child", "h/file", "h/file/below"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        );
        ok(s.delete_block("h/dir"), "delete the parent key");
        assert_block(s, "h/dir/child", b"child");
    }
}

/// Changing a buffer after a write, or a returned block, never changes the store.
pub fn buffers_are_the_callers_own(t: &Target) {
    let s = &*t.store;
    let mut data = pattern(4096, 13);
    let original = data.clone();
    ok(s.write_block("buf/k", &data), "write");
    data.iter_mut().for_each(|b| *b = !*b);
    assert_block(s, "buf/k", &original);
    let mut read = ok(s.read_block("buf/k"), "read");
    read.iter_mut().for_each(|b| *b = 0);
    let mut range = ok(s.read_block_range("buf/k", 0, 100), "range");
    range.iter_mut().for_each(|b| *b = 0);
    assert_block(s, "buf/k", &original);
}

/// A fresh store is healthy.
pub fn health_check_on_fresh_store(t: &Target) {
    ok(t.store.health_check(), "health check");
}

/// Writers of one key with values of different lengths, while readers read: every read
/// is one written value, whole.
pub fn concurrent_writers_of_one_key(t: &Target) {
    const WRITERS: u8 = 4;
    const ROUNDS: usize = 40;
    let values: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..WRITERS)
            .map(|w| pattern(1000 + usize::from(w) * 70_001, w + 20))
            .collect(),
    );
    ok(t.store.write_block("cc/k", &values[0]), "first write");
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(usize::from(WRITERS) + 2));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (store, values, stop, start) =
            (t.store.clone(), values.clone(), stop.clone(), start.clone());
        readers.push(thread::spawn(move || {
            start.wait();
            let mut reads = 0usize;
            while !stop.load(Ordering::Relaxed) || reads == 0 {
                let got = ok(store.read_block("cc/k"), "concurrent read");
                assert!(
                    values.contains(&got),
                    "read a blend or a partial block of {} bytes",
                    got.len()
                );
                reads += 1;
            }
            reads
        }));
    }
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, values, start) = (t.store.clone(), values.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                for _ in 0..ROUNDS {
                    ok(
                        store.write_block("cc/k", &values[usize::from(w)]),
                        "concurrent write",
                    );
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer panicked");
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().expect("reader panicked") > 0);
    }
    let last = ok(t.store.read_block("cc/k"), "final read");
    assert!(values.contains(&last), "final value is one written value");
}

/// Eight threads writing, reading and deleting their own keys under shared prefixes:
/// nothing acknowledged is lost, nothing deleted comes back.
pub fn concurrent_mixed_operations(t: &Target) {
    const THREADS: usize = 8;
    const KEYS: usize = 24;
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|id| {
            let (store, start) = (t.store.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                let key = |i: usize| format!("mix/{}/t{id}-{i}", i % 3);
                for round in 0..3u8 {
                    for i in 0..KEYS {
                        let data = pattern(100 + i * 37, round.wrapping_add(id as u8));
                        ok(store.write_block(&key(i), &data), "write");
                        assert_block(&*store, &key(i), &data);
                    }
                    for i in (0..KEYS).step_by(2) {
                        ok(store.delete_block(&key(i)), "delete");
                        expect_kind(
                            store.read_block(&key(i)),
                            ErrorKind::NotFound,
                            "deleted key",
                        );
                    }
                    let listed = ok(store.list_by_prefix("mix/"), "list during the run");
                    let unique: BTreeSet<&String> = listed.iter().collect();
                    assert_eq!(unique.len(), listed.len(), "a key listed twice");
                    let mut sorted = listed.clone();
                    sorted.sort();
                    assert_eq!(sorted, listed, "listing out of order");
                }
                (0..KEYS)
                    .filter(|i| i % 2 == 1)
                    .map(|i| (key(i), pattern(100 + i * 37, 2u8.wrapping_add(id as u8))))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut survivors = Vec::new();
    for h in handles {
        survivors.extend(h.join().expect("worker panicked"));
    }
    for (key, data) in &survivors {
        assert_block(&*t.store, key, data);
    }
    let mut want: Vec<String> = survivors.into_iter().map(|(k, _)| k).collect();
    want.sort();
    assert_eq!(list(&*t.store, "mix/"), want, "exactly the surviving keys");
    assert_eq!(
        ok(t.store.delete_by_prefix("mix/"), "clean up"),
        want.len() as u64
    );
}

/// A store used in a child process after `fork()` answers (with its data or an error)
/// instead of hanging: daemons open stores and then fork. A child that closes its copy
/// leaves the parent's store working.
pub fn after_fork_answers_without_hanging(t: &Target) {
    ok(
        t.store.write_block("fork/k", b"before fork"),
        "write before fork",
    );
    // SAFETY: the child only calls the store and then `_exit`s; `alarm` ends it if the
    // store hangs.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        unsafe { libc::alarm(10) };
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // A refusal names what it refused, as every error does.
            let named = match t.store.read_block("fork/k") {
                Err(e) => e.to_string().contains("fork/k"),
                Ok(_) => true,
            };
            let named = named
                && match t.store.write_block("fork/child", b"x") {
                    Err(e) => e.to_string().contains("fork/child"),
                    Ok(()) => true,
                };
            let named = named
                && match t.store.list_by_prefix("fork/none/") {
                    Err(e) => e.to_string().contains("fork/none/"),
                    Ok(_) => true,
                }
                && match t.store.delete_by_prefix("fork/none/") {
                    Err(e) => e.to_string().contains("fork/none/"),
                    Ok(_) => true,
                };
            // A child that is done with its copy closes it (or drops it as it exits):
            // that must not reach the parent's store.
            let _ = t.store.close();
            named
        })) {
            Ok(true) => 0,
            Ok(false) => 4,
            Err(_) => 3,
        };
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child just forked.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid");
    assert!(
        libc::WIFEXITED(status),
        "the child did not answer within 10 s (signal {})",
        libc::WTERMSIG(status)
    );
    assert_ne!(
        libc::WEXITSTATUS(status),
        4,
        "an error in the child did not name its key"
    );
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "the store panicked in the child"
    );
    assert_block(&*t.store, "fork/k", b"before fork");
    ok(
        t.store.write_block("fork/after", b"after the child closed"),
        "write after the child closed its copy",
    );
    assert_block(&*t.store, "fork/after", b"after the child closed");
    ok(
        t.store.health_check(),
        "health after the child closed its copy",
    );
}
