//! The one error type every store returns, its kinds, and their errno mapping.

use std::fmt;

use crate::op::Op;

/// The result type of every store operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, as a caller should branch on it. Match on this, never on the text.
///
/// # Errno
///
/// Each kind maps to one errno ([`ErrorKind::errno`]) that a FUSE or NFS server can
/// hand back to the kernel or the client:
///
/// | kind | errno |
/// |---|---|
/// | `NotFound` | `ENOENT` |
/// | `InvalidKey` | `EINVAL` |
/// | `InvalidRange` | `EINVAL` |
/// | `BlockTooLarge` | `EFBIG` |
/// | `Closed` | `ESHUTDOWN` |
/// | `Timeout` | `ETIMEDOUT` |
/// | `Conflict` | `EEXIST` |
/// | `Busy` | `EAGAIN` |
/// | `Config` | `EINVAL` |
/// | `NoSpace` | `ENOSPC` |
/// | `ReadOnly` | `EROFS` |
/// | `PermissionDenied` | `EACCES` |
/// | `Unavailable` | `EHOSTUNREACH` |
/// | `Backend` | `EIO` |
/// | `Corrupt` | `EIO` |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The block does not exist.
    NotFound,
    /// The key or prefix breaks one of the key rules.
    InvalidKey,
    /// A zero-length range, or an offset at or past the end of the block.
    InvalidRange,
    /// The block is larger than [`crate::BLOCK_SIZE`].
    BlockTooLarge,
    /// The store was closed.
    Closed,
    /// An attempt or the whole operation ran out of time; for writes and deletes the
    /// outcome is unknown.
    Timeout,
    /// The key collides with the hierarchy (filesystem backend: a file where a directory
    /// is needed, or the other way round, or a non-regular file such as a symlink).
    Conflict,
    /// The store cannot take more work right now (a full pool queue with `try_` calls).
    Busy,
    /// The configuration is invalid, or names something that does not exist (a missing
    /// base directory or bucket).
    Config,
    /// The device or quota is full.
    NoSpace,
    /// The storage is read-only.
    ReadOnly,
    /// The operating system or the server refused access.
    PermissionDenied,
    /// The endpoint cannot be reached or the server is down.
    Unavailable,
    /// Anything else the backend reported; the source is attached.
    Backend,
    /// The stored block does not match the checksums written with it (a flipped bit, a
    /// truncated or extended file, a damaged object): the detail names the chunk and
    /// both checksums. Its bytes are never returned.
    Corrupt,
}

impl ErrorKind {
    /// Every kind, in declaration order ([`ErrorKind::index`] is the place in it).
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::NotFound,
        ErrorKind::InvalidKey,
        ErrorKind::InvalidRange,
        ErrorKind::BlockTooLarge,
        ErrorKind::Closed,
        ErrorKind::Timeout,
        ErrorKind::Conflict,
        ErrorKind::Busy,
        ErrorKind::Config,
        ErrorKind::NoSpace,
        ErrorKind::ReadOnly,
        ErrorKind::PermissionDenied,
        ErrorKind::Unavailable,
        ErrorKind::Backend,
        ErrorKind::Corrupt,
    ];

    /// The kind's place in [`ErrorKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The kind as a trace field or metric label: `not_found`, `invalid_key`, ...
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::InvalidKey => "invalid_key",
            ErrorKind::InvalidRange => "invalid_range",
            ErrorKind::BlockTooLarge => "block_too_large",
            ErrorKind::Closed => "closed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Busy => "busy",
            ErrorKind::Config => "config",
            ErrorKind::NoSpace => "no_space",
            ErrorKind::ReadOnly => "read_only",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Backend => "backend",
            ErrorKind::Corrupt => "corrupt",
        }
    }

    /// The errno a FUSE or NFS server should return for this kind (see the table above).
    pub fn errno(self) -> i32 {
        match self {
            ErrorKind::NotFound => libc::ENOENT,
            ErrorKind::InvalidKey | ErrorKind::InvalidRange | ErrorKind::Config => libc::EINVAL,
            ErrorKind::BlockTooLarge => libc::EFBIG,
            ErrorKind::Closed => libc::ESHUTDOWN,
            ErrorKind::Timeout => libc::ETIMEDOUT,
            ErrorKind::Conflict => libc::EEXIST,
            ErrorKind::Busy => libc::EAGAIN,
            ErrorKind::NoSpace => libc::ENOSPC,
            ErrorKind::ReadOnly => libc::EROFS,
            ErrorKind::PermissionDenied => libc::EACCES,
            ErrorKind::Unavailable => libc::EHOSTUNREACH,
            ErrorKind::Backend | ErrorKind::Corrupt => libc::EIO,
        }
    }

    /// The errno a file system built on blocks (a FUSE or NFS server) should answer a
    /// `read`, `write` or `fsync` with, as file programs expect them: a missing block is
    /// `ENOENT`, a full disk `ENOSPC`, a read-only store `EROFS`, a refusal `EACCES`,
    /// running out of time `ETIMEDOUT`, a block too large `EFBIG`, a full pool queue
    /// `EAGAIN`, and everything that is the store's trouble rather than the caller's
    /// (a closed store, an unreachable endpoint, a conflict in the store's own layout,
    /// a configuration or backend error) `EIO`. [`ErrorKind::errno`] is the finer
    /// mapping for callers that report store errors as such.
    ///
    /// | kind | `file_errno` |
    /// |---|---|
    /// | `NotFound` | `ENOENT` |
    /// | `InvalidKey`, `InvalidRange` | `EINVAL` |
    /// | `BlockTooLarge` | `EFBIG` |
    /// | `Timeout` | `ETIMEDOUT` |
    /// | `Busy` | `EAGAIN` |
    /// | `NoSpace` | `ENOSPC` |
    /// | `ReadOnly` | `EROFS` |
    /// | `PermissionDenied` | `EACCES` |
    /// | `Closed`, `Conflict`, `Config`, `Unavailable`, `Backend`, `Corrupt` | `EIO` |
    pub fn file_errno(self) -> i32 {
        match self {
            ErrorKind::NotFound => libc::ENOENT,
            ErrorKind::InvalidKey | ErrorKind::InvalidRange => libc::EINVAL,
            ErrorKind::BlockTooLarge => libc::EFBIG,
            ErrorKind::Timeout => libc::ETIMEDOUT,
            ErrorKind::Busy => libc::EAGAIN,
            ErrorKind::NoSpace => libc::ENOSPC,
            ErrorKind::ReadOnly => libc::EROFS,
            ErrorKind::PermissionDenied => libc::EACCES,
            ErrorKind::Closed
            | ErrorKind::Conflict
            | ErrorKind::Config
            | ErrorKind::Unavailable
            | ErrorKind::Backend
            | ErrorKind::Corrupt => libc::EIO,
        }
    }

    /// Whether trying the same call again may succeed, unless the error says otherwise.
    fn retryable_by_default(self) -> bool {
        matches!(
            self,
            ErrorKind::Timeout | ErrorKind::Busy | ErrorKind::Unavailable
        )
    }

    /// A short lower-case description, used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::InvalidKey => "invalid key",
            ErrorKind::InvalidRange => "invalid range",
            ErrorKind::BlockTooLarge => "block too large",
            ErrorKind::Closed => "store is closed",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Conflict => "conflicts with the hierarchy",
            ErrorKind::Busy => "busy",
            ErrorKind::Config => "configuration error",
            ErrorKind::NoSpace => "no space left",
            ErrorKind::ReadOnly => "read-only storage",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Backend => "backend error",
            ErrorKind::Corrupt => "block is corrupt",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failed store operation: its kind, the operation and key it concerns, a detail, and
/// the underlying error where there is one.
///
/// Displays as `op key: kind[: detail]`, e.g. `read export/a/chunk-0/block-3: not found`;
/// an invalid key comes last, after the rule it broke, escaped and cut to 100 bytes:
/// `write: invalid key: has an empty segment ('//'): a//b`.
/// Never carries secrets: backends put only parsed, harmless fields into it.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub struct Error {
    kind: ErrorKind,
    op: Op,
    key: Option<Box<str>>,
    detail: Option<Box<str>>,
    retryable: bool,
    #[source]
    source: Option<Source>,
}

impl Error {
    /// An error of `kind` from operation `op`, with no key yet.
    pub fn new(kind: ErrorKind, op: Op) -> Self {
        Error {
            kind,
            op,
            key: None,
            detail: None,
            retryable: kind.retryable_by_default(),
            source: None,
        }
    }

    /// Says the error is of operation `op` (a backend step done for another
    /// operation: `verify_block` reads through the backend's read).
    pub(crate) fn with_op(mut self, op: Op) -> Self {
        self.op = op;
        self
    }

    /// Names the key (or prefix) the operation concerned.
    pub fn with_key(mut self, key: &str) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a human-readable detail (why it failed), shown after the kind. A detail
    /// that was already there stays, after the new one: `new: old`.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if let Some(old) = self.detail.take() {
            detail.push_str(": ");
            detail.push_str(&old);
        }
        self.detail = Some(detail.into_boxed_str());
        self
    }

    /// Attaches the underlying error.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Overrides whether retrying may help (e.g. an HTTP 503 is a retryable `Backend`).
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The S3 server's request id (`x-amz-request-id`) of the reply this error came
    /// from, if it came from one: what an S3 support case asks for. It is in the
    /// message too.
    pub fn request_id(&self) -> Option<&str> {
        #[cfg(feature = "s3")]
        return self
            .s3_failure()
            .map(|f| f.request_id.as_str())
            .filter(|id| !id.is_empty());
        #[cfg(not(feature = "s3"))]
        None
    }

    /// AWS's extended request id (`x-amz-id-2`) of the reply, if it had one.
    pub fn host_id(&self) -> Option<&str> {
        #[cfg(feature = "s3")]
        return self
            .s3_failure()
            .map(|f| f.host_id.as_str())
            .filter(|id| !id.is_empty());
        #[cfg(not(feature = "s3"))]
        None
    }

    /// The S3 reply behind this error, if one is among its sources.
    #[cfg(feature = "s3")]
    fn s3_failure(&self) -> Option<&crate::s3::S3Failure> {
        let mut source: Option<&(dyn std::error::Error + 'static)> =
            std::error::Error::source(self);
        while let Some(s) = source {
            if let Some(f) = s.downcast_ref::<crate::s3::S3Failure>() {
                return Some(f);
            }
            source = s.source();
        }
        None
    }

    /// Whether calling again may succeed: timeouts, busy pools, unreachable endpoints,
    /// and backend errors the backend marked as transient.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The operation that failed.
    pub fn op(&self) -> Op {
        self.op
    }

    /// The key or prefix the operation concerned, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The detail, if any.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The errno for this error's kind.
    pub fn errno(&self) -> i32 {
        self.kind.errno()
    }

    /// The errno a file system built on blocks should answer a file operation with
    /// ([`ErrorKind::file_errno`]).
    pub fn file_errno(&self) -> i32 {
        self.kind.file_errno()
    }

    /// Maps an I/O error onto a kind by its errno; anything unrecognised is `Backend`.
    /// Running out of file descriptors is a retryable `Backend` error that says so.
    pub fn from_io(op: Op, err: std::io::Error) -> Self {
        let exhausted = match err.raw_os_error() {
            Some(libc::EMFILE) => Some(
                "the process is out of file descriptors (EMFILE): raise its limit (ulimit -n) or do less at once",
            ),
            Some(libc::ENFILE) => Some("the system is out of file descriptors (ENFILE)"),
            _ => None,
        };
        if let Some(why) = exhausted {
            return Error::new(ErrorKind::Backend, op)
                .with_retryable(true)
                .with_detail(why)
                .with_source(err);
        }
        let kind = match err.raw_os_error() {
            Some(libc::ENOENT) => ErrorKind::NotFound,
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorKind::NoSpace,
            Some(libc::EROFS) => ErrorKind::ReadOnly,
            Some(libc::EACCES) | Some(libc::EPERM) => ErrorKind::PermissionDenied,
            Some(libc::ETIMEDOUT) => ErrorKind::Timeout,
            Some(libc::EEXIST) | Some(libc::ENOTDIR) | Some(libc::EISDIR) | Some(libc::ELOOP) => {
                ErrorKind::Conflict
            }
            _ => match err.kind() {
                std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
                std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
                _ => ErrorKind::Backend,
            },
        };
        Error::new(kind, op).with_source(err)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.op.name())?;
        // An invalid key comes last, after the rule it broke (it may be long or odd).
        let key_last = self.kind == ErrorKind::InvalidKey;
        if let Some(key) = self.key.as_ref().filter(|_| !key_last) {
            write!(f, " {key}")?;
        }
        write!(f, ": {}", self.kind)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        if let Some(key) = self.key.as_ref().filter(|_| key_last) {
            write!(f, ": {key}")?;
        }
        if let Some(source) = &self.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("op", &self.op)
            .field("key", &self.key)
            .field("detail", &self.detail)
            .field("retryable", &self.retryable)
            .field("source", &self.source)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_operation_key_and_kind() {
        let e = Error::new(ErrorKind::NotFound, Op::Read).with_key("export/a/chunk-0/block-3");
        assert_eq!(e.to_string(), "read export/a/chunk-0/block-3: not found");
        let e = Error::new(ErrorKind::InvalidKey, Op::Write)
            .with_key("a//b")
            .with_detail("empty segment");
        assert_eq!(e.to_string(), "write: invalid key: empty segment: a//b");
    }

    #[test]
    fn retryable_defaults_and_override() {
        assert!(Error::new(ErrorKind::Timeout, Op::Read).is_retryable());
        assert!(Error::new(ErrorKind::Unavailable, Op::Read).is_retryable());
        assert!(Error::new(ErrorKind::Busy, Op::Read).is_retryable());
        assert!(!Error::new(ErrorKind::NotFound, Op::Read).is_retryable());
        assert!(!Error::new(ErrorKind::Backend, Op::Read).is_retryable());
        assert!(Error::new(ErrorKind::Backend, Op::Read)
            .with_retryable(true)
            .is_retryable());
    }

    #[test]
    fn every_kind_has_its_place_and_label() {
        let mut labels = std::collections::HashSet::new();
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i, "{kind:?}");
            assert!(labels.insert(kind.label()), "{kind:?}");
        }
    }

    #[test]
    fn errno_table() {
        let table = [
            (ErrorKind::NotFound, libc::ENOENT),
            (ErrorKind::InvalidKey, libc::EINVAL),
            (ErrorKind::InvalidRange, libc::EINVAL),
            (ErrorKind::BlockTooLarge, libc::EFBIG),
            (ErrorKind::Closed, libc::ESHUTDOWN),
            (ErrorKind::Timeout, libc::ETIMEDOUT),
            (ErrorKind::Conflict, libc::EEXIST),
            (ErrorKind::Busy, libc::EAGAIN),
            (ErrorKind::Config, libc::EINVAL),
            (ErrorKind::NoSpace, libc::ENOSPC),
            (ErrorKind::ReadOnly, libc::EROFS),
            (ErrorKind::PermissionDenied, libc::EACCES),
            (ErrorKind::Unavailable, libc::EHOSTUNREACH),
            (ErrorKind::Backend, libc::EIO),
        ];
        for (kind, errno) in table {
            assert_eq!(kind.errno(), errno, "{kind:?}");
        }
    }

    #[test]
    fn file_errno_table() {
        let table = [
            (ErrorKind::NotFound, libc::ENOENT),
            (ErrorKind::InvalidKey, libc::EINVAL),
            (ErrorKind::InvalidRange, libc::EINVAL),
            (ErrorKind::BlockTooLarge, libc::EFBIG),
            (ErrorKind::Closed, libc::EIO),
            (ErrorKind::Timeout, libc::ETIMEDOUT),
            (ErrorKind::Conflict, libc::EIO),
            (ErrorKind::Busy, libc::EAGAIN),
            (ErrorKind::Config, libc::EIO),
            (ErrorKind::NoSpace, libc::ENOSPC),
            (ErrorKind::ReadOnly, libc::EROFS),
            (ErrorKind::PermissionDenied, libc::EACCES),
            (ErrorKind::Unavailable, libc::EIO),
            (ErrorKind::Backend, libc::EIO),
        ];
        for (kind, errno) in table {
            assert_eq!(kind.file_errno(), errno, "{kind:?}");
            assert_eq!(Error::new(kind, Op::Read).file_errno(), errno, "{kind:?}");
        }
        // Never an errno a file program misreads: no "No route to host", no "File
        // exists" for a write.
        for (kind, _) in table {
            assert!(
                ![libc::EHOSTUNREACH, libc::EEXIST, libc::ESHUTDOWN].contains(&kind.file_errno()),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn io_errors_map_by_errno() {
        let cases = [
            (libc::ENOENT, ErrorKind::NotFound),
            (libc::ENOSPC, ErrorKind::NoSpace),
            (libc::EDQUOT, ErrorKind::NoSpace),
            (libc::EROFS, ErrorKind::ReadOnly),
            (libc::EACCES, ErrorKind::PermissionDenied),
            (libc::EPERM, ErrorKind::PermissionDenied),
            (libc::EIO, ErrorKind::Backend),
        ];
        for (errno, kind) in cases {
            let e = Error::from_io(Op::Write, std::io::Error::from_raw_os_error(errno));
            assert_eq!(e.kind(), kind, "errno {errno}");
            assert!(!e.is_retryable(), "errno {errno}");
        }
        for (errno, says) in [(libc::EMFILE, "process"), (libc::ENFILE, "system")] {
            let e = Error::from_io(Op::Read, std::io::Error::from_raw_os_error(errno));
            assert_eq!(e.kind(), ErrorKind::Backend);
            assert!(e.is_retryable(), "errno {errno}");
            assert!(
                e.to_string()
                    .contains(&format!("the {says} is out of file descriptors")),
                "{e}"
            );
        }
    }

    #[test]
    fn details_add_up() {
        let e = Error::new(ErrorKind::Backend, Op::Write)
            .with_detail("inner")
            .with_detail("outer");
        assert_eq!(e.detail(), Some("outer: inner"));
    }
}
