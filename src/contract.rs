//! # The contract
//!
//! What every store of this crate does, the same way, so that a caller can swap the
//! memory store for the filesystem for S3 (or put any of them behind a [`Pool`]) and
//! see no difference but speed and durability. The conformance suite
//! (`blockstore::conformance`, feature `conformance`) is this page as tests; every
//! backend runs it, directly and through the pool. Where this page is silent, a
//! backend does what a careful user of an object store expects, and its own docs say
//! what it chose.
//!
//! [`Pool`]: crate::Pool
//!
//! ## Blocks and keys
//!
//! A block is 0 to [`BLOCK_SIZE`](crate::BLOCK_SIZE) (4 MiB) bytes. Writing more fails
//! with `BlockTooLarge`, writes nothing and keeps the old value of the key. An empty
//! block is a block. Writing a key again replaces it: the last writer wins.
//!
//! A key is valid UTF-8 and obeys every rule below; every store checks them before
//! any I/O and answers `InvalidKey` naming the rule that broke:
//!
//! - 1 to 1024 bytes (on S3, `key_prefix` and key together);
//! - `/`-separated segments, none empty (no leading, trailing or doubled `/`), none `.`
//!   or `..`, none longer than 255 bytes;
//! - no character XML 1.0 cannot carry (S3 listings are XML): no ASCII control
//!   character, no U+FFFE, no U+FFFF;
//! - a first segment other than `.blockstore`, where the filesystem store keeps its own
//!   files (refused by every store, so keys move between stores freely).
//!
//! Anything else goes: spaces, any Unicode, `+ % # ?`, `..x..`, a trailing `.`, a
//! segment ending in `.tmp` or starting with `.`, a segment of exactly 255 bytes.
//!
//! A prefix is valid when it is empty or when some valid key starts with it: `a/`,
//! `a/.` and `a/b-` are valid, `/a`, `a//` and `a/../` are not.
//!
//! Callers lay keys out as `{content_id}/chunk-{n}/block-{m}`;
//! [`block_key`](crate::block_key) builds one and
//! [`parse_block_key`](crate::parse_block_key) reads one back (strictly: decimal
//! digits, no sign, no leading zeros). Stores treat keys as opaque strings.
//!
//! ## Order of checks
//!
//! Every operation checks in this order: the store is open (`Closed`), the key or
//! prefix (`InvalidKey`), arguments that need no I/O (`BlockTooLarge`, a zero length
//! or empty buffer: `InvalidRange`), and only then the storage.
//!
//! ## Operations
//!
//! - `write_block(key, data)`: afterwards a read returns exactly `data`. A read never
//!   sees part of a block, and writers racing on one key leave one of their values
//!   whole, never a mix.
//! - `read_block(key)`: the whole block, or `NotFound`.
//! - `read_block_range(key, offset, length)`: bytes `[offset, min(offset + length,
//!   size))`. A zero `length` is `InvalidRange` before any I/O; an absent block is
//!   `NotFound`; `offset >= size` is `InvalidRange` (so is any range of an empty
//!   block). Any `length` up to `u64::MAX` ("to the end") is fine: no panic, and no
//!   allocation larger than the block.
//! - `read_block_range_into(key, offset, buf)`: reads `min(buf.len(), size - offset)`
//!   bytes into `buf` and returns the count; errors as above, an empty `buf` being the
//!   zero length.
//! - `block_size(key)`: the size without reading the block, or `NotFound`.
//! - `delete_block(key)`: `Ok`, also when the block is absent.
//! - `delete_by_prefix(prefix)`: the number of blocks this call removed. Prefixes are
//!   plain string prefixes: `a/b` matches `a/b/x`, `a/b-c` and `a/bc/y`; `a/b/` only
//!   the first. `""` deletes everything and the store stays usable. Blocks written
//!   while it runs may survive. If any block could not be deleted the call fails, says
//!   how many were deleted and names the first few that were not: a partial delete is
//!   never reported as success. It runs in bounded memory.
//! - `scan(prefix, start_after)`: the blocks under `prefix` whose keys sort after
//!   `start_after`, as an iterator of [`BlockRef`](crate::BlockRef) (full key and
//!   size), sorted bytewise, each key once, holding a page or a directory at a time,
//!   never the whole store. A key present for the whole scan appears exactly once;
//!   keys written or deleted during it may or may not. Each step of a scan is a call of
//!   its own: once the store is closed the next step fails with `Closed`, and `close`
//!   never waits for a scan left open.
//! - `list_by_prefix(prefix)` and `list_blocks(prefix)`: the same listing collected:
//!   full keys (never relative to the prefix, never with S3's `key_prefix`), sorted
//!   bytewise, each once, empty when nothing matches.
//! - `health_check()`: `Ok` when the store can serve reads and writes now, otherwise an
//!   error that says what is wrong (a missing base directory, a read-only mount, an
//!   unreachable endpoint, a missing bucket, bad credentials).
//! - `close()`: waits for the operations in flight, then every later call fails with
//!   `Closed`. Calling it again is fine.
//!
//! Buffers are the caller's own: changing a buffer after a write, or the block a read
//! returned, never changes what the store holds. Operations on different keys run in
//! parallel: no store-wide lock is held across I/O or across a copy of block data.
//!
//! A `Timeout` or transport error on a write or delete means "outcome unknown": the
//! change may still have happened. Callers that need certainty read back.
//!
//! A store used in a child process after `fork()` answers with an error instead of
//! hanging (open stores after daemonizing), and a child that closes or drops its copy
//! never disturbs the parent's store.
//!
//! ## Integrity
//!
//! With checksums on (the default of the filesystem and S3 stores), each block is
//! written with a CRC32C per chunk and of the whole, and a block whose bytes no longer
//! match them is never returned as data: `read_block`, `read_block_range`,
//! `read_block_range_into` and `read_at` fail with `Corrupt` (errno `EIO`), naming the
//! key, the chunk and both checksums, through the pool alike. A range that touches only
//! intact chunks still reads. A block whose length differs from the one its checksums
//! were written for is corrupt. Where the storage finds the damage first (a device that
//! cannot read a sector, a filesystem that checksums data itself, as btrfs and ZFS
//! do, and answers `EIO`) the read is `Corrupt` too. Blocks without checksums stay
//! readable, unverified.
//! `verify_block(key)` answers `Verified`, `Unverified` or `Corrupt`. The record's
//! layout and where each backend keeps it: [`crate::integrity`].
//!
//! ## Errors
//!
//! One error type, [`Error`](crate::Error), with [`kind()`](crate::Error::kind) (an
//! [`ErrorKind`](crate::ErrorKind) to branch on; never branch on the text) and
//! [`is_retryable()`](crate::Error::is_retryable). Each kind maps to one errno (the
//! table is on [`ErrorKind`](crate::ErrorKind)). Messages name the operation and the
//! key. No secret ever appears in an error, a log line or a `Debug` output: S3 errors
//! keep a reply's status, code and message, never its body.
//!
//! ## The filesystem store
//!
//! - The block for key `k` is the file `{base_path}/k`.
//! - Its own files (temporary files, probes, locks) live in `.blockstore/` at the top
//!   of the base, named independently of keys. Each open store works in a directory
//!   of its own there, held with `flock`; opening a store removes only what no live
//!   store holds, so a CLI opening a daemon's store never disturbs it. Any number of
//!   processes may open one base at once; one's clean-up, prefix delete or exit never
//!   makes another's write fail or report a wrong kind. If the area is removed under a
//!   live store, the store makes it again; a condition seen at open (a full disk, a
//!   read-only mount) is not remembered once it has cleared.
//! - A write goes to a new temporary file, written in full, then renamed over the
//!   block. With `fsync = true` (the default) the block and every directory on its path
//!   survive a power cut once `write_block` returns: the file is synced before the
//!   rename, its directory after, and each new directory's parent too. A delete syncs
//!   the directory it changed.
//! - Directories get exactly `dir_mode` and files exactly `file_mode`, whatever the
//!   umask. Deleting a block removes the directories it left empty, never the base; a
//!   write racing that clean-up still succeeds. A failed write leaves no new directory.
//! - The tree is hierarchical where S3 is flat: writing `a/b` while `a/b/c` exists (or
//!   the other way round) is `Conflict` and changes nothing; reading `a/b` when it is a
//!   directory is `NotFound`; deleting `a/b/c` when `a/b` is a file is `Ok`. The memory
//!   and S3 stores hold both keys.
//! - Ranges are read with positioned reads straight into the result, never through a
//!   memory map (a file truncated under a map kills the process). A file larger than
//!   `BLOCK_SIZE` (not written by the store) fails every read instead of being
//!   allocated.
//! - No key reaches outside the base, and no symbolic link inside it is followed.
//!   Anything at a key's path that is not a regular file (a link, FIFO, socket or
//!   device) is `NotFound` to every read, and nothing is opened in a way that can block
//!   or have side effects; listings skip it and names that are not valid keys.
//! - Opening: `create_dir = true` creates the base with `dir_mode`; a missing base with
//!   `create_dir = false`, or a path that is not a directory, is `Config`. A
//!   case-insensitive filesystem is refused at open.
//!
//! ## The S3 store
//!
//! - Built on rust-s3; no async runtime shows through, and a caller inside a tokio
//!   runtime works too. Opening contacts nobody; `health_check` does.
//! - Retried: 500, 502, 503, 504, 408, 429, 400 `RequestTimeout`, connection failures,
//!   timeouts and replies that fail a check; never 501, 403, 404, 416 or another 4xx.
//!   Exponential backoff with jitter, at most `max_retries` retries per request, each
//!   attempt bounded by `request_timeout_secs` and each call, however many requests it
//!   makes, by `operation_deadline_secs`. rust-s3's own retries are off.
//! - Throttling (503 `SlowDown`, 429, a 503 with `Retry-After` or without an S3 error
//!   body, `Throttling`-style codes) is told apart from other failures: it has a retry
//!   budget of its own, bounded only by the call's deadline, honours `Retry-After`,
//!   and slows the whole store down (one rate limiter per store, shared by all its
//!   threads), which speeds up again once throttling stops. A caller sees it (as a
//!   retryable `Busy`) only when the call's deadline is spent. This refines the
//!   `max_retries` rule above, which keeps applying to every other failure.
//! - `NotFound` only for 404 `NoSuchKey` (or a HEAD 404 in a bucket that exists). A
//!   missing bucket is `Config`, never `NotFound`, and never lets a delete "succeed".
//!   416 is `InvalidRange`; a server that ignores `Range` and answers 200 is handled by
//!   cutting the range out of the body.
//! - A reply is evidence, not truth: a read's status, `Content-Range` and body length,
//!   the keys a DeleteObjects reply confirms, and listing pages that advance, stay
//!   inside the prefix and come in order are all checked. A reply that fails a check
//!   is a retryable error, never data and never a reported success.
//! - Listings page through ListObjectsV2 holding one page; prefix deletes send each
//!   page as one DeleteObjects (with `Content-MD5`), read every key's answer, and fall
//!   back to one request per key where the server does not implement it.
//! - `health_check` is a one-key listing (so it needs `s3:ListBucket`) and tells a
//!   missing bucket, bad credentials and an unreachable endpoint apart.
//! - Connections are kept alive and shared by all threads.
//! - Credentials come from one source per store (`credentials`: static, environment,
//!   profile, web identity, container, IMDSv2, anonymous, or the AWS SDKs' chain of
//!   them), resolved at open without contacting anyone. Temporary keys are refreshed
//!   ahead of expiry once for all threads; a failed refresh keeps the current keys until
//!   they expire, then calls fail `PermissionDenied` naming the source; an
//!   `ExpiredToken` reply refreshes and retries once. No secret is ever shown.
//!
//! ## The worker pool
//!
//! - Wraps any store, is itself a store (its borrowed-buffer calls copy the data), and
//!   gives callers without an async runtime bounded concurrency: a fixed number of
//!   named workers take jobs from one bounded queue. A full queue blocks the
//!   submitter; `try_submit` answers `Busy` at once.
//! - A submission returns a handle to wait on (with a time limit: expiry is "not done
//!   yet", not an error of the job) or poll. Dropping a handle never cancels its job;
//!   `cancel()` cancels one that has not started.
//! - Jobs on one key take effect in the order they were submitted to the pool (a later
//!   write wins, a read sees the writes before it); jobs on different keys run in
//!   parallel.
//! - A batch runs many jobs side by side and gives one result per input (in input
//!   order when asked), one failure never hiding the others, holding at most `workers`
//!   blocks at once while it streams.
//! - A panic in a job becomes a `Backend` error for that job; the worker lives on.
//! - `close` stops taking jobs (a submitter blocked on a full queue gets `Closed`),
//!   finishes the queued ones, joins the workers and closes the inner store; dropping
//!   the pool does the same. Statistics count queued, running, done and failed jobs and
//!   time each operation.
//!
//! ## Configuration
//!
//! TOML, read with serde. An unknown key, a wrong type or a missing required key is a
//! `Config` error naming the key and its line, before any store is opened. Only the
//! section named by `type` is used; the others may be present (to switch back and
//! forth) and must still parse. The keys and defaults are on [`Config`](crate::Config)
//! and its sections.
