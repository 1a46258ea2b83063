//! A reference model of the contract: an ordered map, with a hierarchical mode that
//! applies the filesystem backend's Conflict rule. Model-based tests run the same
//! operations on it and on a real store and require identical outcomes.

use std::collections::BTreeMap;

use blockstore::key::{validate_key, validate_prefix};
use blockstore::{BlockStore, ErrorKind, BLOCK_SIZE};

/// One operation of a generated sequence.
#[derive(Debug, Clone)]
pub enum Op {
    Write {
        key: String,
        len: usize,
        seed: u8,
    },
    Read {
        key: String,
    },
    Range {
        key: String,
        offset: Pick,
        length: u64,
    },
    Into {
        key: String,
        offset: Pick,
        buf: usize,
    },
    Size {
        key: String,
    },
    Delete {
        key: String,
    },
    DeletePrefix {
        prefix: String,
    },
    List {
        prefix: String,
    },
    ListBlocks {
        prefix: String,
    },
}

/// An offset chosen relative to the block's current size, so edges get hit.
#[derive(Debug, Clone, Copy)]
pub enum Pick {
    Zero,
    One,
    LastByte,
    AtEnd,
    PastEnd,
    Max,
}

impl Pick {
    pub fn resolve(self, size: Option<usize>) -> u64 {
        let size = size.unwrap_or(3) as u64;
        match self {
            Pick::Zero => 0,
            Pick::One => 1,
            Pick::LastByte => size.saturating_sub(1),
            Pick::AtEnd => size,
            Pick::PastEnd => size + 1,
            Pick::Max => u64::MAX,
        }
    }
}

/// What an operation returned, comparable across stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Unit,
    Bytes(Vec<u8>),
    Count(u64),
    Keys(Vec<String>),
    Blocks(Vec<(String, u64)>),
    Err(ErrorKind),
}

pub fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

/// The reference model.
pub struct Model {
    blocks: BTreeMap<String, Vec<u8>>,
    hierarchical: bool,
}

impl Model {
    pub fn new(hierarchical: bool) -> Self {
        Model {
            blocks: BTreeMap::new(),
            hierarchical,
        }
    }

    pub fn size_of(&self, key: &str) -> Option<usize> {
        self.blocks.get(key).map(Vec::len)
    }

    fn conflicts(&self, key: &str) -> bool {
        self.hierarchical
            && self.blocks.keys().any(|k| {
                k.len() != key.len()
                    && (k.starts_with(&format!("{key}/")) || key.starts_with(&format!("{k}/")))
            })
    }

    fn matching(&self, prefix: &str) -> impl Iterator<Item = (&String, &Vec<u8>)> {
        let prefix = prefix.to_owned();
        self.blocks
            .iter()
            .filter(move |(k, _)| k.starts_with(&prefix))
    }

    pub fn apply(&mut self, op: &Op) -> Outcome {
        use Outcome::*;
        let bad_key = |k: &str| validate_key(k).is_err();
        let bad_prefix = |p: &str| validate_prefix(p).is_err();
        match op {
            Op::Write { key, len, seed } => {
                if bad_key(key) {
                    return Err(ErrorKind::InvalidKey);
                }
                if *len > BLOCK_SIZE {
                    return Err(ErrorKind::BlockTooLarge);
                }
                if self.conflicts(key) {
                    return Err(ErrorKind::Conflict);
                }
                self.blocks.insert(key.clone(), data(*len, *seed));
                Unit
            }
            Op::Read { key } => match (bad_key(key), self.blocks.get(key)) {
                (true, _) => Err(ErrorKind::InvalidKey),
                (false, None) => Err(ErrorKind::NotFound),
                (false, Some(v)) => Bytes(v.clone()),
            },
            Op::Range {
                key,
                offset,
                length,
            } => self.range(key, offset.resolve(self.size_of(key)), *length),
            Op::Into { key, offset, buf } => {
                self.range(key, offset.resolve(self.size_of(key)), *buf as u64)
            }
            Op::Size { key } => match (bad_key(key), self.blocks.get(key)) {
                (true, _) => Err(ErrorKind::InvalidKey),
                (false, None) => Err(ErrorKind::NotFound),
                (false, Some(v)) => Count(v.len() as u64),
            },
            Op::Delete { key } => {
                if bad_key(key) {
                    return Err(ErrorKind::InvalidKey);
                }
                self.blocks.remove(key);
                Unit
            }
            Op::DeletePrefix { prefix } => {
                if bad_prefix(prefix) {
                    return Err(ErrorKind::InvalidKey);
                }
                let keys: Vec<String> = self.matching(prefix).map(|(k, _)| k.clone()).collect();
                for k in &keys {
                    self.blocks.remove(k);
                }
                Count(keys.len() as u64)
            }
            Op::List { prefix } => {
                if bad_prefix(prefix) {
                    return Err(ErrorKind::InvalidKey);
                }
                Keys(self.matching(prefix).map(|(k, _)| k.clone()).collect())
            }
            Op::ListBlocks { prefix } => {
                if bad_prefix(prefix) {
                    return Err(ErrorKind::InvalidKey);
                }
                Blocks(
                    self.matching(prefix)
                        .map(|(k, v)| (k.clone(), v.len() as u64))
                        .collect(),
                )
            }
        }
    }

    fn range(&self, key: &str, offset: u64, length: u64) -> Outcome {
        if validate_key(key).is_err() {
            return Outcome::Err(ErrorKind::InvalidKey);
        }
        if length == 0 {
            return Outcome::Err(ErrorKind::InvalidRange);
        }
        let Some(v) = self.blocks.get(key) else {
            return Outcome::Err(ErrorKind::NotFound);
        };
        if offset >= v.len() as u64 {
            return Outcome::Err(ErrorKind::InvalidRange);
        }
        let start = offset as usize;
        let end = start + (length.min((v.len() - start) as u64) as usize);
        Outcome::Bytes(v[start..end].to_vec())
    }
}

/// Runs `op` on a real store. Offsets are resolved from the model's view of the size,
/// so both sides see the same arguments.
pub fn apply_store(store: &dyn BlockStore, model: &Model, op: &Op) -> Outcome {
    use Outcome::*;
    let r = |e: blockstore::Error| Err(e.kind());
    match op {
        Op::Write { key, len, seed } => store
            .write_block(key, &data(*len, *seed))
            .map_or_else(r, |()| Unit),
        Op::Read { key } => store.read_block(key).map_or_else(r, Bytes),
        Op::Range {
            key,
            offset,
            length,
        } => store
            .read_block_range(key, offset.resolve(model.size_of(key)), *length)
            .map_or_else(r, Bytes),
        Op::Into { key, offset, buf } => {
            let mut b = vec![0u8; *buf];
            store
                .read_block_range_into(key, offset.resolve(model.size_of(key)), &mut b)
                .map_or_else(r, |n| Bytes(b[..n].to_vec()))
        }
        Op::Size { key } => store.block_size(key).map_or_else(r, Count),
        Op::Delete { key } => store.delete_block(key).map_or_else(r, |()| Unit),
        Op::DeletePrefix { prefix } => store.delete_by_prefix(prefix).map_or_else(r, Count),
        Op::List { prefix } => store.list_by_prefix(prefix).map_or_else(r, Keys),
        Op::ListBlocks { prefix } => store.list_blocks(prefix).map_or_else(r, |v| {
            Blocks(v.into_iter().map(|b| (b.key, b.size)).collect())
        }),
    }
}

/// Keys chosen to collide on prefixes, with Unicode, `%`, dot names and invalid keys.
pub const KEYS: &[&str] = &[
    "a",
    "a/b",
    "a-b",
    "a/bc",
    "a/b/c",
    "a/b-c",
    "b",
    "ü/日本",
    "%41/x",
    ".x",
    "a/.x",
    "a/b/c/d",
    "a//b",
    "/a",
    "a/",
    ".blockstore",
    "a/..",
];

/// Prefixes over the same alphabet, valid and invalid.
pub const PREFIXES: &[&str] = &[
    "",
    "a",
    "a/",
    "a/b",
    "a/b/",
    "a-",
    "ü",
    "%",
    ".",
    "a/.",
    "zz",
    "a//",
    "/",
    ".blockstore/",
];

pub mod strategy {
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = String> {
        proptest::sample::select(KEYS).prop_map(str::to_owned)
    }

    fn prefix() -> impl Strategy<Value = String> {
        proptest::sample::select(PREFIXES).prop_map(str::to_owned)
    }

    fn pick() -> impl Strategy<Value = Pick> {
        prop_oneof![
            Just(Pick::Zero),
            Just(Pick::One),
            Just(Pick::LastByte),
            Just(Pick::AtEnd),
            Just(Pick::PastEnd),
            Just(Pick::Max)
        ]
    }

    fn length() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0u64), Just(1), Just(2), Just(100), Just(u64::MAX)]
    }

    pub fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (key(), prop_oneof![Just(0usize), Just(1), 2usize..300], any::<u8>())
                .prop_map(|(key, len, seed)| Op::Write { key, len, seed }),
            2 => key().prop_map(|key| Op::Read { key }),
            2 => (key(), pick(), length()).prop_map(|(key, offset, length)| Op::Range { key, offset, length }),
            1 => (key(), pick(), 0usize..120).prop_map(|(key, offset, buf)| Op::Into { key, offset, buf }),
            1 => key().prop_map(|key| Op::Size { key }),
            2 => key().prop_map(|key| Op::Delete { key }),
            1 => prefix().prop_map(|prefix| Op::DeletePrefix { prefix }),
            2 => prefix().prop_map(|prefix| Op::List { prefix }),
            1 => prefix().prop_map(|prefix| Op::ListBlocks { prefix }),
        ]
    }
}
