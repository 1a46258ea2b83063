//! Key and prefix rules shared by every backend, and the caller's block-key layout.
//!
//! Every backend calls [`check_key`] or [`check_prefix`] before any I/O, so a key is
//! accepted or refused the same way everywhere.
//!
//! # Rules
//!
//! A key is valid when:
//! - it is 1 to [`MAX_KEY_LEN`] bytes of UTF-8;
//! - its `/`-separated segments are non-empty (no leading, trailing or doubled `/`), none
//!   is `.` or `..`, and none is longer than [`MAX_SEGMENT_LEN`] bytes;
//! - it has no character XML 1.0 cannot carry: no ASCII control character (U+0000 to
//!   U+001F, U+007F), no U+FFFE, no U+FFFF;
//! - its first segment is not [`RESERVED_NAME`], the directory where the filesystem
//!   backend keeps its temporary files and locks (refused by every backend alike, so a
//!   store's keys can always move between backends).
//!
//! A prefix is valid when it is empty or when some valid key starts with it: `a/`,
//! `a/.` and `a/b-` are valid, `/a`, `a//` and `a/../` are not.

use crate::error::{Error, ErrorKind, Result};
use crate::op::Op;

/// The longest key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// The longest segment between two `/`, in bytes.
pub const MAX_SEGMENT_LEN: usize = 255;

/// The first segment no key may have: the filesystem backend's internal directory.
pub const RESERVED_NAME: &str = ".blockstore";

/// Which key rule a string broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyRule {
    /// The key is empty.
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    TooLong,
    /// The key starts with `/`.
    LeadingSlash,
    /// The key ends with `/`.
    TrailingSlash,
    /// Two `/` follow each other.
    EmptySegment,
    /// A segment is `.` or `..`.
    DotSegment,
    /// A segment is longer than [`MAX_SEGMENT_LEN`] bytes.
    SegmentTooLong,
    /// The key holds a control character, U+FFFE or U+FFFF.
    ForbiddenChar,
    /// The first segment is [`RESERVED_NAME`].
    Reserved,
}

impl KeyRule {
    /// The rule, as a message.
    pub fn describe(self) -> &'static str {
        match self {
            KeyRule::Empty => "key is empty",
            KeyRule::TooLong => "longer than 1024 bytes",
            KeyRule::LeadingSlash => "starts with '/'",
            KeyRule::TrailingSlash => "ends with '/'",
            KeyRule::EmptySegment => "has an empty segment ('//')",
            KeyRule::DotSegment => "has a '.' or '..' segment",
            KeyRule::SegmentTooLong => "has a segment longer than 255 bytes",
            KeyRule::ForbiddenChar => {
                "has a control character, U+FFFE or U+FFFF (not allowed in XML)"
            }
            KeyRule::Reserved => {
                "first segment '.blockstore' is reserved for the filesystem backend"
            }
        }
    }
}

/// Checks `key` against the key rules, reporting the first rule it breaks.
pub fn validate_key(key: &str) -> std::result::Result<(), KeyRule> {
    if key.is_empty() {
        return Err(KeyRule::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyRule::TooLong);
    }
    if key.starts_with('/') {
        return Err(KeyRule::LeadingSlash);
    }
    if key.ends_with('/') {
        return Err(KeyRule::TrailingSlash);
    }
    if key
        .chars()
        .any(|c| c.is_ascii_control() || c == '\u{FFFE}' || c == '\u{FFFF}')
    {
        return Err(KeyRule::ForbiddenChar);
    }
    for (i, segment) in key.split('/').enumerate() {
        match segment {
            "" => return Err(KeyRule::EmptySegment),
            "." | ".." => return Err(KeyRule::DotSegment),
            s if s.len() > MAX_SEGMENT_LEN => return Err(KeyRule::SegmentTooLong),
            RESERVED_NAME if i == 0 => return Err(KeyRule::Reserved),
            _ => {}
        }
    }
    Ok(())
}

/// Checks `prefix` against the prefix rule: empty, or the start of some valid key.
pub fn validate_prefix(prefix: &str) -> std::result::Result<(), KeyRule> {
    if prefix.is_empty() {
        return Ok(());
    }
    match validate_key(prefix) {
        Ok(()) => Ok(()),
        // A prefix that is not itself a key can only become one by growing its last
        // segment (`a/` -> `a/x`, `a/.` -> `a/.x`, `.blockstore` -> `.blockstorex`); any
        // other broken rule stays broken however the prefix is extended, and one
        // character is enough to mend the fixable ones.
        Err(KeyRule::TrailingSlash | KeyRule::DotSegment | KeyRule::Reserved) => {
            let mut extended = String::with_capacity(prefix.len() + 1);
            extended.push_str(prefix);
            extended.push('x');
            validate_key(&extended)
        }
        Err(rule) => Err(rule),
    }
}

/// Checks a key for operation `op`, as an [`ErrorKind::InvalidKey`] error naming the rule.
pub fn check_key(op: Op, key: &str) -> Result<()> {
    validate_key(key).map_err(|rule| invalid(op, key, rule))
}

/// Checks a prefix for operation `op`, as an [`ErrorKind::InvalidKey`] error naming the rule.
pub fn check_prefix(op: Op, prefix: &str) -> Result<()> {
    validate_prefix(prefix).map_err(|rule| invalid(op, prefix, rule))
}

/// How much of an invalid key an error shows, in bytes.
const SHOWN: usize = 100;

fn invalid(op: Op, key: &str, rule: KeyRule) -> Error {
    // A key with control characters is shown escaped so the message stays one line.
    let shown: String = if rule == KeyRule::ForbiddenChar || key.len() > SHOWN {
        let escaped: String = key.chars().flat_map(char::escape_debug).collect();
        truncate(&escaped, SHOWN)
    } else {
        key.to_owned()
    };
    Error::new(ErrorKind::InvalidKey, op)
        .with_key(&shown)
        .with_detail(rule.describe())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Builds the key of one block: `{content_id}/chunk-{chunk_idx}/block-{block_idx}`.
///
/// ```
/// assert_eq!(blockstore::block_key("export/f", 0, 3), "export/f/chunk-0/block-3");
/// ```
pub fn block_key(content_id: &str, chunk_idx: u64, block_idx: u64) -> String {
    use std::fmt::Write;
    let mut key = String::with_capacity(content_id.len() + 2 * 20 + 14);
    // Writing to a String cannot fail.
    let _ = write!(key, "{content_id}/chunk-{chunk_idx}/block-{block_idx}");
    key
}

/// The prefix of one content id's blocks: `{content_id}/`, with the `/`. Prefixes are
/// plain string prefixes, so `delete_by_prefix("files/1")` also deletes
/// `files/10/...`; `delete_by_prefix(&content_prefix("files/1"))` deletes only the
/// blocks of `files/1`.
///
/// ```
/// use blockstore::{block_key, content_prefix, BlockStore, MemoryStore};
///
/// let store = MemoryStore::new();
/// store.write_block(&block_key("files/1", 0, 0), b"one")?;
/// store.write_block(&block_key("files/10", 0, 0), b"ten")?;
/// assert_eq!(content_prefix("files/1"), "files/1/");
/// assert_eq!(store.delete_by_prefix(&content_prefix("files/1"))?, 1);
/// assert_eq!(store.list_by_prefix("files/")?, ["files/10/chunk-0/block-0"]);
/// # Ok::<(), blockstore::Error>(())
/// ```
pub fn content_prefix(content_id: &str) -> String {
    let mut prefix = String::with_capacity(content_id.len() + 1);
    prefix.push_str(content_id);
    prefix.push('/');
    prefix
}

/// The parts of a key in the caller's layout, as returned by [`parse_block_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockKey<'a> {
    /// Everything before `/chunk-`.
    pub content_id: &'a str,
    /// The chunk index.
    pub chunk_idx: u64,
    /// The block index within the chunk.
    pub block_idx: u64,
}

/// Parses a key built by [`block_key`]. Strict: the indices are plain decimal numbers
/// without sign or leading zeros, and nothing may follow the block index.
///
/// ```
/// let k = blockstore::parse_block_key("export/f/chunk-0/block-3").unwrap();
/// assert_eq!((k.content_id, k.chunk_idx, k.block_idx), ("export/f", 0, 3));
/// assert!(blockstore::parse_block_key("export/f/chunk-01/block-3").is_err());
/// ```
pub fn parse_block_key(key: &str) -> Result<BlockKey<'_>> {
    let fail = |why: &str| {
        Error::new(ErrorKind::InvalidKey, Op::ParseKey)
            .with_key(key)
            .with_detail(format!(
                "{why} (expected {{content_id}}/chunk-{{n}}/block-{{n}})"
            ))
    };
    let mut parts = key.rsplitn(3, '/');
    let block = parts.next().unwrap_or_default();
    let chunk = parts.next().ok_or_else(|| fail("too few segments"))?;
    let content_id = parts.next().ok_or_else(|| fail("too few segments"))?;
    if content_id.is_empty() {
        return Err(fail("empty content id"));
    }
    let chunk_idx = chunk
        .strip_prefix("chunk-")
        .and_then(parse_index)
        .ok_or_else(|| fail("bad chunk segment"))?;
    let block_idx = block
        .strip_prefix("block-")
        .and_then(parse_index)
        .ok_or_else(|| fail("bad block segment"))?;
    Ok(BlockKey {
        content_id,
        chunk_idx,
        block_idx,
    })
}

/// A canonical decimal index: digits only, no leading zero unless it is `0`, fits u64.
fn parse_index(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical {
        s.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_keys() {
        let long_segment = "s".repeat(255);
        let at_limit = {
            let mut k = String::new();
            while k.len() + 101 <= 1024 {
                k.push_str(&"x".repeat(100));
                k.push('/');
            }
            k.push_str(&"y".repeat(1024 - k.len()));
            k
        };
        assert_eq!(at_limit.len(), 1024);
        for key in [
            "a",
            "export/path/file/chunk-0/block-3",
            "with space/and  two",
            "ünïcödé/日本語/🦀",
            "a+b/%41%2F/#frag/?q=1&x",
            "..x../trailing.",
            "x.tmp/.hidden",
            ".blockstore-not/reserved",
            "a/.blockstore",
            long_segment.as_str(),
            at_limit.as_str(),
        ] {
            assert_eq!(validate_key(key), Ok(()), "{key:?}");
        }
    }

    #[test]
    fn invalid_keys_name_the_rule() {
        let too_long = "a/".repeat(512) + "b";
        let long_segment = "s".repeat(256);
        for (key, rule) in [
            ("", KeyRule::Empty),
            (too_long.as_str(), KeyRule::TooLong),
            ("/a", KeyRule::LeadingSlash),
            ("a/", KeyRule::TrailingSlash),
            ("a//b", KeyRule::EmptySegment),
            ("a/./b", KeyRule::DotSegment),
            ("..", KeyRule::DotSegment),
            ("a/..", KeyRule::DotSegment),
            (long_segment.as_str(), KeyRule::SegmentTooLong),
            ("a\nb", KeyRule::ForbiddenChar),
            ("a\u{0}b", KeyRule::ForbiddenChar),
            ("a\u{7f}b", KeyRule::ForbiddenChar),
            ("a\u{FFFF}", KeyRule::ForbiddenChar),
            ("a\u{FFFE}", KeyRule::ForbiddenChar),
            (".blockstore", KeyRule::Reserved),
            (".blockstore/tmp/x", KeyRule::Reserved),
        ] {
            assert_eq!(validate_key(key), Err(rule), "{key:?}");
        }
    }

    #[test]
    fn prefixes() {
        for p in [
            "",
            "a",
            "a/",
            "a/.",
            "a/..",
            "a/b-",
            ".blockstore",
            ".b",
            "a/b/c",
        ] {
            assert_eq!(validate_prefix(p), Ok(()), "{p:?}");
        }
        let full_with_slash = "a".repeat(255) + "/" + &"b".repeat(255) + "/";
        assert_eq!(validate_prefix(&full_with_slash), Ok(()));
        let too_long_for_extension = "a/".repeat(512);
        for (p, rule) in [
            ("/a", KeyRule::LeadingSlash),
            ("a//", KeyRule::EmptySegment),
            ("a/../", KeyRule::DotSegment),
            ("a/./b", KeyRule::DotSegment),
            (".blockstore/", KeyRule::Reserved),
            ("a\tb", KeyRule::ForbiddenChar),
            (too_long_for_extension.as_str(), KeyRule::TooLong),
        ] {
            assert_eq!(validate_prefix(p), Err(rule), "{p:?}");
        }
    }

    #[test]
    fn invalid_key_error_names_key_and_rule() {
        let e = check_key(Op::Write, "a//b").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidKey);
        assert_eq!(
            e.to_string(),
            "write: invalid key: has an empty segment ('//'): a//b"
        );
        let e = check_key(Op::Read, "a\nb").unwrap_err();
        assert!(e.to_string().contains("a\\nb"), "{e}");
    }

    #[test]
    fn long_or_odd_keys_are_shown_escaped_and_cut_short() {
        // Short keys are shown as they are, quotes and all.
        let e = check_key(Op::Write, "it's//x").unwrap_err();
        assert_eq!(e.key(), Some("it's//x"));
        // Exactly 100 bytes: still shown as is.
        let at_limit = format!("'{}//", "k".repeat(97));
        assert_eq!(at_limit.len(), 100);
        assert_eq!(
            check_key(Op::Write, &at_limit).unwrap_err().key(),
            Some(at_limit.as_str())
        );
        // Longer keys are cut at 100 bytes, on a character boundary, and marked.
        let long = format!("a{}//", "é".repeat(75));
        let shown = check_key(Op::Write, &long)
            .unwrap_err()
            .key()
            .unwrap()
            .to_owned();
        assert_eq!(
            shown,
            format!("a{}...", "é".repeat(49)),
            "cut at byte 99, the last boundary"
        );
        // Control characters are escaped, so the message stays on one line.
        let e = check_key(Op::Read, "a\nb").unwrap_err();
        assert_eq!(e.to_string(), "read: invalid key: has a control character, U+FFFE or U+FFFF (not allowed in XML): a\\nb");
    }

    #[test]
    fn block_keys_round_trip() {
        for (id, c, b) in [("x", 0, 0), ("export/p/f", 7, 12), ("a", u64::MAX, 10)] {
            let key = block_key(id, c, b);
            let parsed = parse_block_key(&key).unwrap();
            assert_eq!(
                (parsed.content_id, parsed.chunk_idx, parsed.block_idx),
                (id, c, b)
            );
        }
    }

    #[test]
    fn parse_block_key_is_strict() {
        for bad in [
            "f/chunk-01/block-3",
            "f/chunk-+1/block-3",
            "f/chunk--1/block-3",
            "f/chunk-1/block-3x",
            "f/chunk-1/block-3/",
            "f/chunk-1/block-",
            "f/chunk-/block-1",
            "f/chunk-1/blok-1",
            "chunk-1/block-1",
            "/chunk-1/block-1",
            "f/chunk-18446744073709551616/block-0",
            "f/chunk- 1/block-1",
            "f/chunk-1/block-00",
        ] {
            let e = parse_block_key(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidKey, "{bad}");
        }
    }
}
