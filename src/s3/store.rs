//! `S3Store`: blocks as objects in an S3 bucket, under a key prefix.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use s3::serde_types::ObjectIdentifier;
use s3::Bucket;

use crate::error::{Error, ErrorKind, Result};
use crate::gate::Gate;
use crate::key::{check_key, check_prefix, validate_key, MAX_KEY_LEN};
use crate::store::{
    check_block_len, check_range_len, clamp_range, op, BlockRef, BlockStore, DeleteTally,
    BLOCK_SIZE,
};

use super::client::Client;
use super::config::S3Config;
use super::error::{Failure, S3Failure};
use super::get::{get_object, Got};
use super::put::{put_object, Upload};
use super::retry::RetryPolicy;

/// Keys per ListObjectsV2 page and per DeleteObjects request (the S3 maximum).
const PAGE: usize = 1000;

/// A store that keeps each block as the object `key_prefix + key` in one bucket.
///
/// # Client
///
/// rust-s3's async API on a small tokio runtime owned by the store: calls are blocking,
/// connections are kept alive and shared by all threads, and a caller that is itself
/// inside a tokio runtime works too. Opening contacts nobody; [`BlockStore::health_check`]
/// does. rust-s3's own retries are switched off (`s3::set_retries(0)`, which is
/// process-wide).
///
/// # Retries and time limits
///
/// 500, 502, 503, 504, 408, 429, 400 `RequestTimeout`, connection failures and timeouts
/// are retried, at most `max_retries` times, with exponential backoff and jitter; 501,
/// 403, 404, 416 and other 4xx never are. Each attempt is bounded by
/// `request_timeout_secs` and the whole call by `operation_deadline_secs`. A write or
/// delete that fails with `Timeout` or a transport error may still take effect.
///
/// # Errors
///
/// `NotFound` only for 404 `NoSuchKey` (or a HEAD 404 in a bucket that exists); a
/// missing bucket is `Config` for every operation, deletes included; 416 is
/// `InvalidRange`; 403 `PermissionDenied`; an unreachable endpoint `Unavailable`.
/// Errors keep the status, code and message of a reply, never its body.
///
/// # Hierarchy
///
/// Object keys are flat: `a/b` and `a/b/c` can both exist.
///
/// # Permissions
///
/// `s3:GetObject`, `s3:PutObject`, `s3:DeleteObject` and `s3:ListBucket` (the health
/// check is a one-key listing).
pub struct S3Store {
    client: Client,
    key_prefix: String,
    policy: RetryPolicy,
    /// Send `Content-MD5` with writes too.
    content_md5: bool,
    /// Set once the server answered DeleteObjects with 501: single deletes from then on.
    no_multi_delete: AtomicBool,
    gate: Gate,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.client.bucket.name())
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Builds the store. Contacts nobody: call `health_check` to test the connection.
    pub fn open(config: S3Config) -> Result<S3Store> {
        config.validate()?;
        let client = Client::new(&config)?;
        Ok(S3Store {
            client,
            policy: RetryPolicy {
                max_retries: config.max_retries,
                attempt_timeout: Duration::from_secs(config.request_timeout_secs),
                deadline: Duration::from_secs(config.operation_deadline_secs),
            },
            key_prefix: config.key_prefix,
            content_md5: config.content_md5,
            no_multi_delete: AtomicBool::new(false),
            gate: Gate::default(),
        })
    }

    /// The object key of `key`, checked against the 1024-byte limit of S3.
    fn object_key(&self, op: &'static str, key: &str) -> Result<String> {
        if self.key_prefix.len() + key.len() > MAX_KEY_LEN {
            return Err(Error::new(ErrorKind::InvalidKey, op)
                .with_key(key)
                .with_detail(format!(
                    "key_prefix + key is {} bytes, S3 allows {MAX_KEY_LEN}",
                    self.key_prefix.len() + key.len()
                )));
        }
        let mut full = String::with_capacity(self.key_prefix.len() + key.len());
        full.push_str(&self.key_prefix);
        full.push_str(key);
        Ok(full)
    }

    /// The bucket handle for a request's future, which must own what it uses.
    fn bucket(&self) -> Arc<Bucket> {
        self.client.bucket.clone()
    }

    /// Whether the bucket exists (to tell a missing key from a missing bucket after a
    /// HEAD 404, which has no body).
    fn bucket_missing(&self, op: &'static str, key: &str) -> Result<bool> {
        let bucket = self.bucket();
        let policy = self.policy;
        let prefix = self.key_prefix.clone();
        let listed = self.client.run(op, async move {
            policy
                .run(|| bucket.list_page(prefix.clone(), None, None, None, Some(1)))
                .await
        })?;
        match listed {
            Ok(_) => Ok(false),
            Err(Failure::Reply(S3Failure {
                status: 404,
                ref code,
                ..
            })) if code == "NoSuchBucket" => Ok(true),
            Err(f) => Err(f.into_error(op, key, false)),
        }
    }

    fn missing_bucket(op: &'static str, key: &str) -> Error {
        Error::new(ErrorKind::Config, op)
            .with_key(key)
            .with_detail("the bucket does not exist")
    }

    /// Walks the listing of `prefix` page by page, handing each page's (key, size)
    /// pairs, without the key prefix and valid keys only, to `each`.
    fn pages(
        &self,
        op: &'static str,
        prefix: &str,
        mut each: impl FnMut(Vec<BlockRef>) -> Result<()>,
    ) -> Result<()> {
        let full_prefix = format!("{}{prefix}", self.key_prefix);
        let mut token: Option<String> = None;
        loop {
            let bucket = self.bucket();
            let policy = self.policy;
            let (p, t) = (full_prefix.clone(), token.clone());
            let page = self
                .client
                .run(op, async move {
                    policy
                        .run(|| bucket.list_page(p.clone(), None, t.clone(), None, Some(PAGE)))
                        .await
                })?
                .map_err(|f| f.into_error(op, prefix, false))?
                .0;
            let blocks = page
                .contents
                .into_iter()
                .filter_map(|o| {
                    let key = o.key.strip_prefix(&self.key_prefix)?;
                    validate_key(key).is_ok().then(|| BlockRef {
                        key: key.to_owned(),
                        size: o.size,
                    })
                })
                .collect();
            each(blocks)?;
            match (page.is_truncated, page.next_continuation_token) {
                (true, Some(next)) => token = Some(next),
                _ => return Ok(()),
            }
        }
    }

    /// Deletes one page of keys; returns how many were deleted and the failures.
    fn delete_page(&self, keys: Vec<String>) -> Result<(u64, Vec<(String, Error)>)> {
        if keys.is_empty() {
            return Ok((0, Vec::new()));
        }
        if !self.no_multi_delete.load(Ordering::Relaxed) {
            let bucket = self.bucket();
            let policy = self.policy;
            let objects: Vec<ObjectIdentifier> = keys
                .iter()
                .map(|k| ObjectIdentifier::new(format!("{}{k}", self.key_prefix)))
                .collect();
            let result = self.client.run(op::DELETE_PREFIX, async move {
                policy.run(|| bucket.delete_objects(objects.clone())).await
            })?;
            match result {
                Ok(reply) => {
                    let failed = reply
                        .errors
                        .into_iter()
                        .map(|e| {
                            let key = e
                                .key
                                .strip_prefix(&self.key_prefix)
                                .unwrap_or(&e.key)
                                .to_owned();
                            let failure = Failure::Reply(S3Failure {
                                status: if e.code == "AccessDenied" { 403 } else { 500 },
                                code: e.code,
                                message: e.message,
                            });
                            let err = failure.into_error(op::DELETE, &key, true);
                            (key, err)
                        })
                        .collect::<Vec<_>>();
                    let deleted = (keys.len() - failed.len()) as u64;
                    return Ok((deleted, failed));
                }
                Err(f) if f.status() == Some(501) => {
                    self.no_multi_delete.store(true, Ordering::Relaxed);
                }
                Err(f) => {
                    return Err(f.into_error(
                        op::DELETE_PREFIX,
                        keys.first().map_or("", |k| k),
                        true,
                    ))
                }
            }
        }
        let mut deleted = 0;
        let mut failed = Vec::new();
        for key in keys {
            match self.delete_one(op::DELETE_PREFIX, &key) {
                Ok(()) => deleted += 1,
                Err(e) if e.kind() == ErrorKind::Config => return Err(e),
                Err(e) => failed.push((key, e)),
            }
        }
        Ok((deleted, failed))
    }

    /// HEAD of a block; a 404 is NotFound when the bucket exists, else Config.
    fn head(&self, op: &'static str, key: &str) -> Result<s3::serde_types::HeadObjectResult> {
        let full = self.object_key(op, key)?;
        let bucket = self.bucket();
        let policy = self.policy;
        let head = self.client.run(op, async move {
            policy.run(|| bucket.head_object(full.clone())).await
        })?;
        match head {
            Ok((head, _)) => Ok(head),
            // A HEAD reply has no body: a missing bucket looks like a missing key.
            Err(f) if f.status() == Some(404) => {
                if self.bucket_missing(op, key)? {
                    Err(Self::missing_bucket(op, key))
                } else {
                    Err(Error::new(ErrorKind::NotFound, op).with_key(key))
                }
            }
            Err(f) => Err(f.into_error(op, key, false)),
        }
    }

    fn delete_one(&self, op: &'static str, key: &str) -> Result<()> {
        let full = self.object_key(op, key)?;
        let bucket = self.bucket();
        let policy = self.policy;
        self.client
            .run(op, async move {
                policy.run(|| bucket.delete_object(full.clone())).await
            })?
            .map(|_| ())
            .map_err(|f| f.into_error(op, key, true))
    }
}

/// An object under a block's key that is larger than any block: not ours to return.
fn oversized(op: &'static str, key: &str) -> Error {
    Error::new(ErrorKind::Backend, op)
        .with_key(key)
        .with_detail("the object holds more bytes than BLOCK_SIZE")
}

impl BlockStore for S3Store {
    fn write_block(&self, key: &str, data: &[u8]) -> Result<()> {
        let _pass = self.gate.enter(op::WRITE)?;
        check_key(op::WRITE, key)?;
        check_block_len(key, data.len())?;
        let full = self.object_key(op::WRITE, key)?;
        let bucket = self.bucket();
        let policy = self.policy;
        // The future must own its data ('static): one copy, and one hash for all attempts.
        let upload = Upload::new(data, self.content_md5);
        self.client
            .run(op::WRITE, async move {
                policy.run(|| put_object(&bucket, &full, &upload)).await
            })?
            .map_err(|f| f.into_error(op::WRITE, key, true))
    }

    fn read_block(&self, key: &str) -> Result<Vec<u8>> {
        let _pass = self.gate.enter(op::READ)?;
        check_key(op::READ, key)?;
        let full = self.object_key(op::READ, key)?;
        let bucket = self.bucket();
        let policy = self.policy;
        let got = self
            .client
            .run(op::READ, async move {
                policy
                    .run(|| get_object(&bucket, &full, None, BLOCK_SIZE))
                    .await
            })?
            .map_err(|f| f.into_error(op::READ, key, false))?;
        if got.body.len() > BLOCK_SIZE {
            return Err(oversized(op::READ, key));
        }
        Ok(got.body)
    }

    fn read_block_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let _pass = self.gate.enter(op::READ_RANGE)?;
        check_key(op::READ_RANGE, key)?;
        check_range_len(key, length)?;
        let full = self.object_key(op::READ_RANGE, key)?;
        // Range ends are inclusive. A length past any block's end reads to the end.
        let end = offset
            .checked_add(length - 1)
            .filter(|end| *end < BLOCK_SIZE as u64);
        let bucket = self.bucket();
        let policy = self.policy;
        let got = self
            .client
            .run(op::READ_RANGE, async move {
                policy
                    .run(|| get_object(&bucket, &full, Some((offset, end)), BLOCK_SIZE))
                    .await
            })?
            .map_err(|f| {
                let e = f.into_error(op::READ_RANGE, key, false);
                if e.kind() == ErrorKind::InvalidRange {
                    Error::new(ErrorKind::InvalidRange, op::READ_RANGE)
                        .with_key(key)
                        .with_detail(format!(
                            "offset {offset} is at or past the end of the block"
                        ))
                } else {
                    e
                }
            })?;
        let Got { status, mut body } = got;
        if status == 200 {
            // The server ignored the Range header and sent the whole object.
            if body.len() > BLOCK_SIZE {
                return Err(oversized(op::READ_RANGE, key));
            }
            let range = clamp_range(key, body.len() as u64, offset, length)?;
            body.truncate(range.end);
            body.drain(..range.start);
            return Ok(body);
        }
        if body.len() as u64 > length {
            return Err(Error::new(ErrorKind::Backend, op::READ_RANGE)
                .with_key(key)
                .with_detail("the server sent more bytes than the range asked for"));
        }
        Ok(body)
    }

    fn block_size(&self, key: &str) -> Result<u64> {
        let _pass = self.gate.enter(op::SIZE)?;
        check_key(op::SIZE, key)?;
        self.head(op::SIZE, key)?
            .content_length
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| {
                Error::new(ErrorKind::Backend, op::SIZE)
                    .with_key(key)
                    .with_detail("no Content-Length in the reply")
            })
    }

    fn content_md5(&self, key: &str) -> Result<Option<[u8; 16]>> {
        let _pass = self.gate.enter(op::SIZE)?;
        check_key(op::SIZE, key)?;
        // A single-part upload's ETag is the MD5 of its content, in hex and quotes; a
        // multipart ETag ends in `-N` and is not.
        let etag = self.head(op::SIZE, key)?.e_tag.unwrap_or_default();
        let hex = etag.trim_matches('"');
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let mut md5 = [0u8; 16];
        for (i, byte) in md5.iter_mut().enumerate() {
            match u8::from_str_radix(&hex[2 * i..2 * i + 2], 16) {
                Ok(b) => *byte = b,
                Err(_) => return Ok(None),
            }
        }
        Ok(Some(md5))
    }

    fn delete_block(&self, key: &str) -> Result<()> {
        let _pass = self.gate.enter(op::DELETE)?;
        check_key(op::DELETE, key)?;
        self.delete_one(op::DELETE, key)
    }

    fn delete_by_prefix(&self, prefix: &str) -> Result<u64> {
        let _pass = self.gate.enter(op::DELETE_PREFIX)?;
        check_prefix(op::DELETE_PREFIX, prefix)?;
        let mut tally = DeleteTally::default();
        self.pages(op::DELETE_PREFIX, prefix, |page| {
            let (n, errors) = self.delete_page(page.into_iter().map(|b| b.key).collect())?;
            tally.removed(n);
            for (key, e) in errors {
                tally.failed(key, e);
            }
            Ok(())
        })?;
        tally.outcome(prefix)
    }

    fn list_blocks(&self, prefix: &str) -> Result<Vec<BlockRef>> {
        let _pass = self.gate.enter(op::LIST)?;
        check_prefix(op::LIST, prefix)?;
        let mut all = Vec::new();
        self.pages(op::LIST, prefix, |page| {
            all.extend(page);
            Ok(())
        })?;
        Ok(all)
    }

    fn health_check(&self) -> Result<()> {
        let _pass = self.gate.enter(op::HEALTH)?;
        let name = self.client.bucket.name();
        let bucket = self.bucket();
        let policy = self.policy;
        let prefix = self.key_prefix.clone();
        self.client
            .run(op::HEALTH, async move {
                policy
                    .run(|| bucket.list_page(prefix.clone(), None, None, None, Some(1)))
                    .await
            })?
            .map(|_| ())
            .map_err(|f| f.into_error(op::HEALTH, &name, false))
    }

    fn close(&self) -> Result<()> {
        self.gate.close();
        Ok(())
    }
}
