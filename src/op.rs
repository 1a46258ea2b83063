//! [`Op`]: every operation of a store, named once for errors, the pool's statistics,
//! traces and metrics.

use std::fmt;

/// An operation of a store. Errors say which one failed ([`crate::Error::op`]); the
/// pool counts and times by it; traces and metrics label by [`Op::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Op {
    /// `write_block`.
    Write,
    /// `read_block`.
    Read,
    /// `read_block_range`, `read_block_range_into` and `read_at`.
    ReadRange,
    /// `block_size`.
    Size,
    /// `delete_block`.
    Delete,
    /// `delete_by_prefix`.
    DeletePrefix,
    /// `list_by_prefix`, `list_blocks` and each step of `scan`.
    List,
    /// `health_check`.
    Health,
    /// `close`.
    Close,
    /// Opening a store.
    Open,
    /// Reading or checking a configuration.
    Config,
    /// A job of the caller's own, run by a pool.
    Job,
    /// [`crate::parse_block_key`].
    ParseKey,
    /// `verify_block` (a scrub).
    Verify,
}

impl Op {
    /// Every operation, in declaration order ([`Op::index`] is the place in it).
    pub const ALL: [Op; 14] = [
        Op::Write,
        Op::Read,
        Op::ReadRange,
        Op::Size,
        Op::Delete,
        Op::DeletePrefix,
        Op::List,
        Op::Health,
        Op::Close,
        Op::Open,
        Op::Config,
        Op::Job,
        Op::ParseKey,
        Op::Verify,
    ];

    /// The operation's name in messages, traces and metric labels: `write`, `read`,
    /// `read range`, `size`, `delete`, `delete prefix`, `list`, `health check`, `close`,
    /// `open`, `config`, `job`, `parse block key`, `verify`.
    pub fn name(self) -> &'static str {
        match self {
            Op::Write => "write",
            Op::Read => "read",
            Op::ReadRange => "read range",
            Op::Size => "size",
            Op::Delete => "delete",
            Op::DeletePrefix => "delete prefix",
            Op::List => "list",
            Op::Health => "health check",
            Op::Close => "close",
            Op::Open => "open",
            Op::Config => "config",
            Op::Job => "job",
            Op::ParseKey => "parse block key",
            Op::Verify => "verify",
        }
    }

    /// The operation's name as a trace field or metric label: `write`, `read`,
    /// `read_range`, `size`, `delete`, `delete_prefix`, `list`, `health`, `close`,
    /// `open`, `config`, `job`, `parse_key`, `verify`.
    pub fn label(self) -> &'static str {
        match self {
            Op::Write => "write",
            Op::Read => "read",
            Op::ReadRange => "read_range",
            Op::Size => "size",
            Op::Delete => "delete",
            Op::DeletePrefix => "delete_prefix",
            Op::List => "list",
            Op::Health => "health",
            Op::Close => "close",
            Op::Open => "open",
            Op::Config => "config",
            Op::Job => "job",
            Op::ParseKey => "parse_key",
            Op::Verify => "verify",
        }
    }

    /// The operation's place in [`Op::ALL`], for tables indexed by operation.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_its_own_place_and_name() {
        let mut names = std::collections::HashSet::new();
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(op.index(), i, "{op:?}");
            assert!(names.insert(op.name()), "{op:?} shares its name");
            assert_eq!(op.to_string(), op.name());
            assert!(
                op.label()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{op:?}"
            );
        }
    }
}
