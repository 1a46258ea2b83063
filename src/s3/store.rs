//! `S3Store`: blocks as objects in an S3 bucket, under a key prefix.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{record_chunk, widen, Backend, Fields, Seal, Sealed};
use crate::checked::Checked;
use crate::error::{Error, ErrorKind, Result};
use crate::integrity::Checksums;
use crate::key::{validate_key, MAX_KEY_LEN};
use crate::op::Op;
use crate::store::{offset_past_end, BlockRef, Blocks, DeleteTally, BLOCK_SIZE};

use super::client::{Client, Target};
use super::config::S3Config;
use super::delete::{delete_object, delete_objects};
use super::error::{AttemptError, Changes, Place};
use super::get::{get_object, Got, Object, Want};
use super::head::{head_object, Head};
use super::limiter::{Limits, RateLimiter};
use super::list::{list_page, Cursor, Page};
use super::put::{put_object, Digests, Upload};
use super::retry::RetryPolicy;

/// Keys per ListObjectsV2 page and per DeleteObjects request (the S3 maximum).
const PAGE: usize = 1000;

/// What the store knows of its bucket, to tell a missing key from a missing bucket
/// after a HEAD 404 (which has no body) without asking every time.
const BUCKET_UNKNOWN: u8 = 0;
const BUCKET_EXISTS: u8 = 1;
/// The bucket could not be checked (the credentials may not list it): a HEAD 404 is
/// taken as a missing key.
const BUCKET_UNCHECKABLE: u8 = 2;

/// A store that keeps each block as the object `key_prefix + key` in one bucket.
///
/// # Client
///
/// Requests are signed with rust-s3's SigV4 helpers and sent on its bucket's reqwest
/// client, driven by a small tokio runtime owned by the store: calls are blocking,
/// connections are kept alive and shared by all threads, and a caller that is itself
/// inside a tokio runtime works too. Opening contacts nobody; [`crate::BlockStore::health_check`]
/// does. rust-s3's own retries are switched off (`s3::set_retries(0)`, which is
/// process-wide).
///
/// # Retries and time limits
///
/// 500, 502, 503, 504, 408, 400 `RequestTimeout`, connection failures, timeouts and
/// replies that fail the checks below are retried, at most `max_retries` times per
/// request, with exponential backoff and jitter; 501, 403, 404, 416 and other 4xx never
/// are. Throttling (429, 503 `SlowDown`, `Retry-After`) is retried until the deadline,
/// honouring `Retry-After`, and slows the whole store down through one rate limiter
/// shared by its threads (the README's S3 section gives the schedule and the figures). Each attempt is bounded by `request_timeout_secs`, and each call as a whole,
/// however many requests it makes (listing pages, delete batches, a bucket check), by
/// `operation_deadline_secs`. A write or delete that fails with `Timeout` or a
/// transport error may still take effect.
///
/// # Replies are checked
///
/// No reply is used before it is checked against its request: a read's status,
/// `Content-Range` and body length; a listing page's document, prefix, order and
/// continuation token; a DeleteObjects reply key by key (a key counts as deleted only
/// when the reply says so, and keys it does not mention are sent again). A reply that
/// fails a check is a retryable error, never data and never a reported success. Error
/// bodies are read up to 64 KiB; one that is cut is a transport failure, retried.
///
/// # Errors
///
/// `NotFound` only for 404 `NoSuchKey`, or a HEAD 404 once the bucket is known to exist
/// (checked once per store, and again after any `NoSuchBucket`); a missing bucket is
/// `Config` for every operation, deletes included; 416 is `InvalidRange`; 403
/// `PermissionDenied` (for a HEAD, AWS answers 403 also when the key is missing and
/// the credentials may not list the bucket: the message says so); an unreachable
/// endpoint `Unavailable`. Errors keep the status, code and message of a reply, never
/// its body.
///
/// # Prefix deletes
///
/// Each listing page is deleted with one DeleteObjects request (with `Content-MD5`),
/// or one request per key where the server does not implement it (a 501, or GCS's 400
/// `NotImplemented`), or with `batch_delete = false`. A block that another caller
/// deletes between the listing and the delete may be counted by both.
///
/// # Hierarchy
///
/// Object keys are flat: `a/b` and `a/b/c` can both exist.
///
/// # Permissions
///
/// `s3:GetObject`, `s3:PutObject`, `s3:DeleteObject` and `s3:ListBucket` (the health
/// check is a one-key listing).
///
/// ```no_run
/// use blockstore::{BlockStore, S3Config, S3Store};
///
/// let mut config = S3Config::new("my-bucket");
/// config.endpoint = "http://127.0.0.1:9000".into(); // MinIO, Ceph RGW, moto...
/// config.force_path_style = true;
/// let store = S3Store::open(config)?; // contacts nobody yet
/// store.health_check()?; // a one-key listing: bucket, credentials, endpoint
/// store.write_block("export/f/chunk-0/block-0", b"block")?;
/// # Ok::<(), blockstore::Error>(())
/// ```
pub type S3Store = Checked<S3Backend>;

/// The S3 backend's mechanism; use it as [`S3Store`].
pub struct S3Backend {
    client: Client,
    inner: Arc<Inner>,
}

/// What every request of the store needs, shared with the futures that make them.
struct Inner {
    target: Arc<Target>,
    /// The endpoint and bucket, as errors name them.
    place: Place,
    key_prefix: String,
    policy: RetryPolicy,
    /// Every request of the store takes a slot here first.
    limiter: RateLimiter,
    /// Writes are encrypted with SSE-KMS (for the hints of errors).
    sse_kms: bool,
    /// The digests every write sends.
    digests: Digests,
    /// Checksums written with each block, and whether `x-amz-checksum-crc32c` goes too.
    checksums: Checksums,
    checksum_header: bool,
    /// Cleared by `batch_delete = false`, or once the server said it does not
    /// implement DeleteObjects: single deletes from then on.
    batch_delete: AtomicBool,
    bucket_state: AtomicU8,
    counters: RequestCounters,
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Backend")
            .field("bucket", &self.inner.target.bucket.name())
            .field("key_prefix", &self.inner.key_prefix)
            .finish_non_exhaustive()
    }
}

impl Checked<S3Backend> {
    /// Builds the store. Contacts nobody: call `health_check` to test the connection.
    pub fn open(config: S3Config) -> Result<S3Store> {
        S3Backend::open(config).map(Checked::from_backend)
    }
}

impl S3Backend {
    /// Builds the backend. Contacts nobody.
    pub fn open(config: S3Config) -> Result<S3Backend> {
        config.validate()?;
        let client = Client::new(&config)?;
        let inner = Inner {
            target: client.target.clone(),
            place: Place {
                endpoint: client.target.endpoint.clone(),
                bucket: config.bucket.clone(),
                region: config.region.clone(),
                request_timeout_secs: config.request_timeout_secs,
                deadline_secs: config.operation_deadline_secs,
            },
            policy: RetryPolicy {
                max_retries: config.max_retries,
                attempt_timeout: Duration::from_secs(config.request_timeout_secs),
                deadline: Duration::from_secs(config.operation_deadline_secs),
            },
            sse_kms: config.sse == Some(super::config::Sse::AwsKms),
            limiter: RateLimiter::new(Limits {
                max_per_second: (config.max_requests_per_second > 0)
                    .then_some(f64::from(config.max_requests_per_second)),
                adaptive: config.adaptive_rate,
            }),
            key_prefix: config.key_prefix,
            digests: if config.content_md5 {
                Digests::WithMd5
            } else {
                Digests::Sha256
            },
            checksums: config.checksums,
            checksum_header: config.checksum_header,
            batch_delete: AtomicBool::new(config.batch_delete),
            bucket_state: AtomicU8::new(BUCKET_UNKNOWN),
            counters: RequestCounters::default(),
        };
        Ok(S3Backend {
            client,
            inner: Arc::new(inner),
        })
    }

    /// The object key of `key`, checked against the 1024-byte limit of S3.
    fn object_key(&self, op: Op, key: &str) -> Result<String> {
        let prefix = &self.inner.key_prefix;
        if prefix.len() + key.len() > MAX_KEY_LEN {
            return Err(Error::new(ErrorKind::InvalidKey, op)
                .with_key(key)
                .with_detail(format!(
                    "key_prefix + key is {} bytes, S3 allows {MAX_KEY_LEN}",
                    prefix.len() + key.len()
                )));
        }
        let mut full = String::with_capacity(prefix.len() + key.len());
        full.push_str(prefix);
        full.push_str(key);
        Ok(full)
    }

    /// Runs one call of the store on its runtime: `f` gets the shared state and the
    /// call's deadline.
    fn call<T, F, Fut>(&self, op: Op, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>, Instant) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let inner = self.inner.clone();
        let deadline = inner.policy.deadline();
        self.client.run(op, f(inner, deadline))?
    }

    /// HEAD of a block.
    fn head(&self, op: Op, key: &str) -> Result<Head> {
        let full = self.object_key(op, key)?;
        let key = key.to_owned();
        self.call(op, move |inner, deadline| async move {
            match inner
                .retry(deadline, "HEAD", |target| head_object(target, &full))
                .await
            {
                Ok(head) => Ok(head),
                // A HEAD reply has no body: a missing bucket looks like a missing key.
                Err(f) if f.status() == Some(404) => Err(inner.absent(op, &key, deadline, f).await),
                Err(f) if f.status() == Some(403) => Err(inner.fail(f, op, &key, Changes::None).with_detail(
                    "AWS also answers 403 to a HEAD of a missing key when the credentials may not list the bucket",
                )),
                Err(f) => Err(inner.fail(f, op, &key, Changes::None)),
            }
        })
    }
}

impl Inner {
    /// One request of a call, with the store's retry policy, until `deadline`: every
    /// request the store makes goes through here.
    async fn retry<'a, T, F, Fut>(
        &'a self,
        deadline: Instant,
        method: &'static str,
        attempt: F,
    ) -> Result<T, AttemptError>
    where
        F: Fn(&'a Target) -> Fut,
        Fut: std::future::Future<Output = Result<T, AttemptError>> + 'a,
    {
        let mut number = 0u32;
        // The span of the latest attempt: a retry records its wait there.
        let latest = AttemptSpan::default();
        let mut expired_once = false;
        loop {
            let result = self
                .policy
                .run(
                    deadline,
                    &self.limiter,
                    || {
                        number += 1;
                        self.counters.attempts.fetch_add(1, Ordering::Relaxed);
                        #[cfg(feature = "metrics")]
                        metrics::counter!("blockstore_s3_attempts_total", "method" => method)
                            .increment(1);
                        attempted(attempt(&self.target), number, method, &latest)
                    },
                    |failure, retry, wait| {
                        latest.retrying(failure, wait);
                        self.retrying(failure, retry, wait, method)
                    },
                )
                .await;
            match result {
                // The server says the keys expired before we thought: fetch new ones
                // and try once more.
                Err(AttemptError::Reply(r)) if r.is_expired_token() && !expired_once => {
                    expired_once = true;
                    self.target.credentials.invalidate();
                    #[cfg(feature = "tracing")]
                    tracing::warn!(
                        method,
                        credentials = self.target.credentials.describe(),
                        "the server says the credentials expired; refreshing them"
                    );
                }
                other => return other,
            }
        }
    }

    /// Counts a retry and says why, at `warn`.
    fn retrying(&self, failure: &AttemptError, retry: u32, wait: Duration, method: &'static str) {
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        if failure.is_throttle() {
            self.counters.throttled.fetch_add(1, Ordering::Relaxed);
        }
        #[cfg(feature = "metrics")]
        {
            metrics::counter!("blockstore_s3_retries_total", "cause" => failure.cause())
                .increment(1);
            if failure.is_throttle() {
                metrics::counter!("blockstore_s3_throttled_total").increment(1);
            }
        }
        #[cfg(feature = "tracing")]
        if failure.is_throttle() {
            // Throttling comes in floods: each retry at debug, a summary at warn at most
            // every THROTTLE_WARNING.
            tracing::debug!(
                method,
                retry,
                cause = failure.cause(),
                wait_ms = wait.as_millis() as u64,
                "S3 request throttled; retrying"
            );
            let throttled = self.counters.throttled.load(Ordering::Relaxed);
            let mut last = self.counters.throttle_warning.lock();
            let due = last.is_none_or(|(at, _)| at.elapsed() >= THROTTLE_WARNING);
            if due {
                let since = throttled - last.map_or(0, |(_, n)| n);
                *last = Some((std::time::Instant::now(), throttled));
                drop(last);
                tracing::warn!(
                    throttled = since,
                    rate_limit = self.limiter.current().map_or(0, |r| r.ceil() as u64),
                    "S3 is throttling the store: {since} requests throttled since the last warning; the store slows down and retries"
                );
            }
        } else {
            tracing::warn!(
                method,
                retry,
                cause = failure.cause(),
                wait_ms = wait.as_millis() as u64,
                failure = ?failure,
                "S3 request failed; retrying"
            );
        }
        #[cfg(not(feature = "tracing"))]
        let _ = (retry, wait, method);
    }

    /// The error a caller sees for `f`; a missing bucket makes the store check the
    /// bucket again at the next HEAD 404.
    fn fail(&self, f: AttemptError, op: Op, key: &str, changes: Changes) -> Error {
        let names_source = !matches!(f, AttemptError::Credentials(..));
        let status = f.status();
        let about_encryption = matches!(&f, AttemptError::Reply(r) if r.message.to_ascii_lowercase().contains("encryption"));
        let mut e = f.into_error_at(op, key, changes, &self.place);
        // With encryption configured, some refusals are about the keys of the
        // encryption, not of the credentials.
        let reads = matches!(op, Op::Read | Op::ReadRange | Op::Size);
        // A HEAD has no body to say why; a 400 to it is what SSE-C objects answer.
        let head_400 = op == Op::Size && status == Some(400);
        if (about_encryption || head_400 || !self.target.customer_key.is_empty())
            && reads
            && matches!(status, Some(400 | 403))
        {
            e = e.with_detail(
                "the block may have been written with another SSE-C key (sse_customer_key), or without one",
            );
        } else if self.sse_kms && op == Op::Write && status == Some(403) {
            e = e.with_detail(
                "or the server does not know the KMS key (sse_kms_key_id), or the credentials may not use it",
            );
        }
        if e.kind() == ErrorKind::PermissionDenied && names_source {
            e = e.with_detail(format!(
                "credentials: {}",
                self.target.credentials.describe()
            ));
        }
        if e.kind() == ErrorKind::Config {
            self.bucket_state.store(BUCKET_UNKNOWN, Ordering::Relaxed);
        }
        e
    }

    /// The error for a HEAD 404 of `key`: NotFound once the bucket is known to exist (or
    /// cannot be checked), a Config error when it is missing.
    async fn absent(&self, op: Op, key: &str, deadline: Instant, reply: AttemptError) -> Error {
        // The HEAD's reply stays the error's source: its request ids.
        let reply = match reply {
            AttemptError::Reply(r) => Some(r),
            _ => None,
        };
        let not_found = || {
            let e = Error::new(ErrorKind::NotFound, op).with_key(key);
            match &reply {
                Some(r) => e.with_source(super::error::S3Failure::clone(r)),
                None => e,
            }
        };
        match self.bucket_state.load(Ordering::Relaxed) {
            BUCKET_EXISTS => return not_found(),
            BUCKET_UNCHECKABLE => {
                return not_found()
                    .with_detail("the bucket's existence cannot be checked with these credentials")
            }
            _ => {}
        }
        let cursor = Cursor {
            prefix: self.key_prefix.clone(),
            ..Cursor::default()
        };
        match self
            .retry(deadline, "GET", |target| list_page(target, &cursor, 1))
            .await
        {
            Ok(_) => {
                self.bucket_state.store(BUCKET_EXISTS, Ordering::Relaxed);
                not_found()
            }
            Err(f) if f.status() == Some(403) => {
                self.bucket_state
                    .store(BUCKET_UNCHECKABLE, Ordering::Relaxed);
                not_found()
                    .with_detail("the bucket's existence cannot be checked with these credentials")
            }
            Err(f) => self.fail(f, op, key, Changes::None),
        }
    }

    /// The next listing page after `cursor`, checked.
    async fn page(
        &self,
        op: Op,
        shown: &str,
        cursor: &Cursor,
        max_keys: usize,
        deadline: Instant,
    ) -> Result<Page> {
        self.retry(deadline, "GET", |target| {
            list_page(target, cursor, max_keys)
        })
        .await
        .map_err(|f| self.fail(f, op, shown, Changes::None))
    }

    /// The blocks of a page: keys without the key prefix, valid keys only (other
    /// objects in the bucket are not blocks of this store).
    fn blocks(&self, page: Page) -> impl Iterator<Item = BlockRef> + '_ {
        page.objects.into_iter().filter_map(|(key, size)| {
            let key = key.strip_prefix(&self.key_prefix)?;
            validate_key(key).is_ok().then(|| BlockRef {
                key: key.to_owned(),
                size,
            })
        })
    }

    /// Every block under `prefix`, page by page, within one deadline.
    async fn list(&self, prefix: &str, deadline: Instant) -> Result<Vec<BlockRef>> {
        let mut cursor = Cursor {
            prefix: format!("{}{prefix}", self.key_prefix),
            ..Cursor::default()
        };
        let mut all = Vec::new();
        while !cursor.done {
            let page = self.page(Op::List, prefix, &cursor, PAGE, deadline).await?;
            cursor.advance(&page);
            all.extend(self.blocks(page));
        }
        Ok(all)
    }

    /// Deletes every block under `prefix`, page by page, within one deadline.
    /// Deletes every block under `prefix` within one deadline: pages are listed one
    /// after another, and each page's batch is deleted while the next pages are
    /// listed, with at most [`BATCHES_IN_FLIGHT`] batches (so that many pages of keys)
    /// in memory at once.
    async fn delete_prefix(self: &Arc<Self>, prefix: &str, deadline: Instant) -> Result<u64> {
        let mut cursor = Cursor {
            prefix: format!("{}{prefix}", self.key_prefix),
            ..Cursor::default()
        };
        let mut tally = DeleteTally::default();
        let mut batches = tokio::task::JoinSet::new();
        let mut stop: Option<Error> = None;
        while !cursor.done && stop.is_none() {
            if batches.len() >= BATCHES_IN_FLIGHT {
                if let Some(done) = batches.join_next().await {
                    absorb(done, &mut tally, &mut stop);
                }
                continue;
            }
            let page = match self
                .page(Op::DeletePrefix, prefix, &cursor, PAGE, deadline)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    stop = Some(e);
                    break;
                }
            };
            cursor.advance(&page);
            let keys: Vec<String> = self.blocks(page).map(|b| b.key).collect();
            let inner = self.clone();
            batches.spawn(async move {
                let mut batch = DeleteTally::default();
                let result = inner.delete_keys(keys, deadline, &mut batch).await;
                (batch, result)
            });
        }
        while let Some(done) = batches.join_next().await {
            absorb(done, &mut tally, &mut stop);
        }
        match stop {
            Some(e) => Err(tally.interrupted(e)),
            None => tally.outcome(prefix),
        }
    }

    /// Deletes one page of blocks, counting into `tally` only what the server
    /// confirmed. `Err` ends the whole prefix delete (a missing bucket, the deadline).
    async fn delete_keys(
        &self,
        keys: Vec<String>,
        deadline: Instant,
        tally: &mut DeleteTally,
    ) -> Result<()> {
        let mut remaining = keys;
        let mut rounds = 0;
        while !remaining.is_empty() && self.batch_delete.load(Ordering::Relaxed) {
            let full: Vec<String> = remaining
                .iter()
                .map(|k| format!("{}{k}", self.key_prefix))
                .collect();
            let reply = self
                .retry(deadline, "POST", |target| delete_objects(target, &full))
                .await;
            let outcome = match reply {
                Ok(outcome) => outcome,
                Err(f) if not_implemented(&f) => {
                    self.batch_delete.store(false, Ordering::Relaxed);
                    break;
                }
                Err(f) => {
                    let e = self.fail(f, Op::DeletePrefix, &remaining[0], Changes::Possible);
                    if e.kind() == ErrorKind::Config || e.kind() == ErrorKind::Timeout {
                        return Err(e);
                    }
                    for key in remaining {
                        tally.failed(key, like(&e, Op::Delete));
                    }
                    return Ok(());
                }
            };
            let strip = |k: String| match k.strip_prefix(&self.key_prefix) {
                Some(short) => short.to_owned(),
                None => k,
            };
            tally.removed(outcome.deleted.len() as u64);
            let mut again: Vec<String> = outcome.unconfirmed.into_iter().map(strip).collect();
            for (key, failure) in outcome.failed {
                let key = strip(key);
                if failure.is_retryable() && rounds < self.policy.max_retries {
                    again.push(key);
                } else {
                    let e = self.fail(
                        AttemptError::Reply(Box::new(failure)),
                        Op::Delete,
                        &key,
                        Changes::Possible,
                    );
                    tally.failed(key, e);
                }
            }
            remaining = again;
            rounds += 1;
            if !remaining.is_empty()
                && (rounds > self.policy.max_retries || Instant::now() >= deadline)
            {
                for key in remaining {
                    let e = Error::new(ErrorKind::Backend, Op::Delete)
                        .with_key(&key)
                        .with_detail("DeleteObjects confirmed neither its deletion nor an error")
                        .with_retryable(true);
                    tally.failed(key, e);
                }
                return Ok(());
            }
        }
        for key in remaining {
            let full = format!("{}{key}", self.key_prefix);
            match self
                .retry(deadline, "DELETE", |target| delete_object(target, &full))
                .await
            {
                Ok(()) => tally.removed(1),
                Err(f) => {
                    let e = self.fail(f, Op::Delete, &key, Changes::Possible);
                    if e.kind() == ErrorKind::Config || e.kind() == ErrorKind::Timeout {
                        return Err(e);
                    }
                    tally.failed(key, e);
                }
            }
        }
        Ok(())
    }
}

/// The `tracing` span of a call's latest attempt, kept so that the retry that follows
/// records its wait (and a timed-out attempt its status) there.
#[derive(Default)]
struct AttemptSpan {
    #[cfg(feature = "tracing")]
    span: parking_lot::Mutex<Option<tracing::Span>>,
    /// Whether the latest attempt recorded its status (one cut off by the attempt's
    /// time limit could not).
    #[cfg(feature = "tracing")]
    status_recorded: AtomicBool,
}

impl AttemptSpan {
    /// Records the wait before the next attempt in the latest attempt's span.
    fn retrying(&self, failure: &AttemptError, wait: Duration) {
        #[cfg(feature = "tracing")]
        if let Some(span) = self.span.lock().take() {
            if !self.status_recorded.load(Ordering::Relaxed) {
                span.record("status", failure.cause());
            }
            span.record("next_delay_ms", wait.as_millis() as u64);
        }
        #[cfg(not(feature = "tracing"))]
        let _ = (failure, wait);
    }
}

/// One attempt, with a `tracing` span of its own: attempt number and method, then the
/// status and request id of its reply and, when it is retried, the delay before the
/// next attempt.
async fn attempted<T>(
    attempt: impl std::future::Future<Output = Result<T, AttemptError>>,
    number: u32,
    method: &'static str,
    latest: &AttemptSpan,
) -> Result<T, AttemptError> {
    #[cfg(feature = "tracing")]
    {
        let span = tracing::debug_span!(
            "s3_attempt",
            attempt = number,
            method,
            status = tracing::field::Empty,
            request_id = tracing::field::Empty,
            next_delay_ms = tracing::field::Empty,
        );
        *latest.span.lock() = Some(span.clone());
        latest.status_recorded.store(false, Ordering::Relaxed);
        let result = tracing::Instrument::instrument(attempt, span.clone()).await;
        latest.status_recorded.store(true, Ordering::Relaxed);
        match &result {
            Ok(_) => span.record("status", "ok"),
            Err(AttemptError::Reply(r)) => {
                span.record("status", r.status);
                span.record("request_id", r.request_id.as_str())
            }
            Err(e) => span.record("status", e.cause()),
        };
        result
    }
    #[cfg(not(feature = "tracing"))]
    {
        let _ = (number, method, latest);
        attempt.await
    }
}

/// What the S3 backend counts of its requests, for its report.
#[derive(Debug, Default)]
struct RequestCounters {
    attempts: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    /// When throttling was last a warning, and the count then.
    throttle_warning: parking_lot::Mutex<Option<(std::time::Instant, u64)>>,
}

/// Throttling is a `warn` event at most this often per store.
const THROTTLE_WARNING: Duration = Duration::from_secs(10);

/// Delete batches of one prefix delete in flight at once.
const BATCHES_IN_FLIGHT: usize = 4;

/// Adds a finished delete batch to the prefix delete's count; the first batch that had
/// to stop the whole delete (a missing bucket, the deadline) is kept in `stop`.
fn absorb(
    done: std::result::Result<(DeleteTally, Result<()>), tokio::task::JoinError>,
    tally: &mut DeleteTally,
    stop: &mut Option<Error>,
) {
    match done {
        Ok((batch, result)) => {
            tally.merge(batch);
            if let Err(e) = result {
                stop.get_or_insert(e);
            }
        }
        Err(e) => {
            stop.get_or_insert(
                Error::new(ErrorKind::Backend, Op::DeletePrefix)
                    .with_detail(format!("a delete batch failed: {e}")),
            );
        }
    }
}

/// Whether a DeleteObjects failure says the server does not implement it: a 501, or
/// GCS's XML API's 400 `NotImplemented`.
fn not_implemented(f: &AttemptError) -> bool {
    match f {
        AttemptError::Reply(r) => {
            r.status == 501 || (r.status == 400 && r.code == "NotImplemented")
        }
        _ => false,
    }
}

/// An error of the same kind as `e`, for another key of the same batch.
fn like(e: &Error, op: Op) -> Error {
    Error::new(e.kind(), op)
        .with_detail(e.detail().unwrap_or_default().to_owned())
        .with_retryable(e.is_retryable())
}

/// An object under a block's key that is larger than any block: not ours to return.
/// The chunk of S3's checksums: 64 KiB. A range costs a request whatever its size, so
/// reading up to 64 KiB more costs little, and the record of a 4 MiB block stays at
/// 280 bytes (376 in base64) of the 2 KB of metadata AWS allows.
const S3_CHUNK: u64 = 64 * 1024;

fn oversized(op: Op, key: &str) -> Error {
    Error::new(ErrorKind::Backend, op)
        .with_key(key)
        .with_detail("the object holds more bytes than BLOCK_SIZE")
}

impl S3Backend {
    /// One PutObject call, retried.
    fn put(&self, key: &str, upload: Upload) -> Result<()> {
        let full = self.object_key(Op::Write, key)?;
        let key = key.to_owned();
        self.call(Op::Write, move |inner, deadline| async move {
            inner
                .retry(deadline, "PUT", |target| put_object(target, &full, &upload))
                .await
                .map_err(|f| inner.fail(f, Op::Write, &key, Changes::Possible))
        })
    }

    /// The whole object, and what the reply said of it.
    fn get_whole(&self, key: &str) -> Result<(Vec<u8>, Object)> {
        let full = self.object_key(Op::Read, key)?;
        let key = key.to_owned();
        self.call(Op::Read, move |inner, deadline| async move {
            let got = inner
                .retry(deadline, "GET", |target| {
                    get_object(target, &full, Want::Whole, BLOCK_SIZE)
                })
                .await
                .map_err(|f| inner.fail(f, Op::Read, &key, Changes::None))?;
            match got {
                Got::Bytes(body, object) => Ok((body, object)),
                Got::Oversized | Got::PastEnd { .. } => Err(oversized(Op::Read, &key)),
            }
        })
    }

    /// Bytes `[first, first + length)` (cut at the end), for a caller's read at
    /// `offset` (which errors name).
    fn get_range(
        &self,
        key: &str,
        offset: u64,
        first: u64,
        length: u64,
    ) -> Result<(Vec<u8>, Object)> {
        let full = self.object_key(Op::ReadRange, key)?;
        // Range ends are inclusive. A length past any block's end reads to the end.
        let last = first
            .checked_add(length - 1)
            .filter(|end| *end < BLOCK_SIZE as u64);
        let want = Want::Range { first, last };
        let key = key.to_owned();
        self.call(Op::ReadRange, move |inner, deadline| async move {
            let got = inner
                .retry(deadline, "GET", |target| {
                    get_object(target, &full, want, BLOCK_SIZE)
                })
                .await
                .map_err(|f| {
                    let e = inner.fail(f, Op::ReadRange, &key, Changes::None);
                    if e.kind() == ErrorKind::InvalidRange {
                        Error::new(ErrorKind::InvalidRange, Op::ReadRange)
                            .with_key(&key)
                            .with_detail(format!(
                                "offset {offset} is at or past the end of the block"
                            ))
                    } else {
                        e
                    }
                })?;
            match got {
                Got::Bytes(body, object) => Ok((body, object)),
                Got::PastEnd { size } => Err(offset_past_end(&key, offset, size)),
                Got::Oversized => Err(oversized(Op::ReadRange, &key)),
            }
        })
    }
}

impl Backend for S3Backend {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn write(&self, key: &str, data: &[u8]) -> Result<()> {
        // The future must own its data ('static): one copy, and one hash for all attempts.
        let upload = Upload::new(data, self.inner.digests, self.inner.target.unsigned_payload);
        self.put(key, upload)
    }

    fn read(&self, key: &str) -> Result<Vec<u8>> {
        Ok(self.get_whole(key)?.0)
    }

    fn read_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        Ok(self.get_range(key, offset, offset, length)?.0)
    }

    fn checksums(&self) -> Checksums {
        self.inner.checksums
    }

    fn checksum_chunk(&self) -> u64 {
        S3_CHUNK
    }

    fn write_sealed(&self, key: &str, data: &[u8], seal: &Seal) -> Result<()> {
        let upload = Upload::new(data, self.inner.digests, self.inner.target.unsigned_payload)
            .with_sums(
                seal.record(),
                self.inner.checksum_header.then_some(seal.crc32c()),
            );
        self.put(key, upload)
    }

    fn read_sealed(&self, key: &str, range: Option<(u64, u64)>) -> Result<Sealed> {
        let Some((offset, length)) = range else {
            let (data, object) = self.get_whole(key)?;
            return Ok(Sealed {
                data,
                start: 0,
                size: object.size,
                record: object.sums,
                remembered: false,
                crc32c: object.crc32c,
                granules: None,
            });
        };
        // Whole chunks, whether or not the object turns out to have checksums: one
        // request either way.
        let wide = widen(offset, length, S3_CHUNK);
        let (data, object) = match self.get_range(key, offset, wide.start, wide.end - wide.start) {
            Ok(got) => got,
            // Past the end: of the block, or of what is left of a truncated one? The
            // record's length tells.
            Err(e) if e.kind() == ErrorKind::InvalidRange => {
                let head = self.head(Op::ReadRange, key)?;
                if head.sums.is_none() {
                    return Err(e);
                }
                return Ok(Sealed {
                    data: Vec::new(),
                    start: head.size,
                    size: head.size,
                    record: head.sums,
                    remembered: false,
                    crc32c: None,
                    granules: None,
                });
            }
            Err(e) => return Err(e),
        };
        // A record from elsewhere (records are the same on every backend) may have
        // chunks larger than those this backend writes: then read the chunks it
        // names, with a second request that only such objects cost.
        if let Some(chunk) = object.sums.as_deref().and_then(record_chunk) {
            let needed = widen(offset, length, chunk);
            let got = wide.start + data.len() as u64;
            if needed.start < wide.start || needed.end.min(object.size) > got {
                let (data, object) =
                    self.get_range(key, offset, needed.start, needed.end - needed.start)?;
                return Ok(Sealed {
                    data,
                    start: needed.start,
                    size: object.size,
                    record: object.sums,
                    remembered: false,
                    crc32c: None,
                    granules: None,
                });
            }
        }
        Ok(Sealed {
            data,
            start: wide.start,
            size: object.size,
            record: object.sums,
            remembered: false,
            crc32c: None,
            granules: None,
        })
    }

    /// Damage seen by a read may have happened on the way: read once more.
    fn reread_corrupt(&self, _: &str, _: &Sealed) -> bool {
        true
    }

    fn size(&self, key: &str) -> Result<u64> {
        Ok(self.head(Op::Size, key)?.size)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let full = self.object_key(Op::Delete, key)?;
        let key = key.to_owned();
        self.call(Op::Delete, move |inner, deadline| async move {
            inner
                .retry(deadline, "DELETE", |target| delete_object(target, &full))
                .await
                .map_err(|f| inner.fail(f, Op::Delete, &key, Changes::Possible))
        })
    }

    fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        let prefix = prefix.to_owned();
        self.call(Op::DeletePrefix, move |inner, deadline| async move {
            inner.delete_prefix(&prefix, deadline).await
        })
    }

    fn scan(&self, prefix: &str, start_after: Option<&str>, _: Fields) -> Result<Blocks<'_>> {
        let full = |k: &str| format!("{}{k}", self.inner.key_prefix);
        Ok(Box::new(Scan {
            store: self,
            shown: prefix.to_owned(),
            cursor: Cursor {
                prefix: full(prefix),
                start_after: start_after.map(full),
                ..Cursor::default()
            },
            page: Vec::new().into_iter(),
        }))
    }

    fn list(&self, prefix: &str, _: Fields) -> Result<Vec<BlockRef>> {
        let prefix = prefix.to_owned();
        self.call(Op::List, move |inner, deadline| async move {
            inner.list(&prefix, deadline).await
        })
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = &self.inner.counters;
        vec![
            ("attempts", c.attempts.load(Ordering::Relaxed)),
            ("retries", c.retries.load(Ordering::Relaxed)),
            ("throttled", c.throttled.load(Ordering::Relaxed)),
            // The store's request rate limit now, rounded up; 0 while there is none.
            (
                "rate_limit",
                self.inner.limiter.current().map_or(0, |r| r.ceil() as u64),
            ),
        ]
    }

    fn about(&self) -> Vec<(&'static str, String)> {
        let target = &self.inner.target;
        let mut about = vec![
            ("endpoint", target.endpoint.clone()),
            ("bucket", self.inner.place.bucket.clone()),
            ("credentials", target.credentials.describe().to_owned()),
            ("checksums", self.inner.checksums.as_str().to_owned()),
        ];
        if let Some(e) = target.credentials.last_error() {
            about.push(("credentials_error", e));
        }
        about
    }

    fn health(&self) -> Result<()> {
        let name = self.inner.target.bucket.name();
        self.call(Op::Health, move |inner, deadline| async move {
            let cursor = Cursor {
                prefix: inner.key_prefix.clone(),
                ..Cursor::default()
            };
            inner
                .page(Op::Health, &name, &cursor, 1, deadline)
                .await
                .map(|_| ())
        })
    }
}

/// A scan of the bucket: one ListObjectsV2 page at a time, each page one call with a
/// deadline of its own.
struct Scan<'a> {
    store: &'a S3Backend,
    shown: String,
    cursor: Cursor,
    page: std::vec::IntoIter<BlockRef>,
}

impl Iterator for Scan<'_> {
    type Item = Result<BlockRef>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(block) = self.page.next() {
                return Some(Ok(block));
            }
            if self.cursor.done {
                return None;
            }
            let cursor = self.cursor.clone();
            let shown = self.shown.clone();
            let page = self
                .store
                .call(Op::List, move |inner, deadline| async move {
                    let page = inner
                        .page(Op::List, &shown, &cursor, PAGE, deadline)
                        .await?;
                    let mut cursor = cursor;
                    cursor.advance(&page);
                    let blocks: Vec<BlockRef> = inner.blocks(page).collect();
                    Ok((cursor, blocks))
                });
            match page {
                Ok((cursor, blocks)) => {
                    self.cursor = cursor;
                    self.page = blocks.into_iter();
                }
                Err(e) => {
                    self.cursor.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
