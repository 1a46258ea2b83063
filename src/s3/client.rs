//! The S3 client: a rust-s3 `Bucket` driven by a small tokio runtime that the store owns,
//! so callers stay synchronous and connections are kept alive and shared by all threads.
//!
//! A caller outside any tokio runtime drives the request itself with `block_on`; a
//! caller inside one (where `block_on` would panic) hands it to the store's runtime and
//! waits on a channel.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use s3::creds::Credentials;
use s3::region::Region;
use s3::Bucket;
use tokio::runtime::{Handle, Runtime};

use crate::error::{Error, ErrorKind, Result};
use crate::op::Op;

use super::config::S3Config;
use super::credentials;

/// What every request needs: the bucket (its URLs, region and credentials), the HTTP
/// client, and the headers the configuration adds to some requests.
pub(crate) struct Target {
    pub(crate) bucket: Bucket,
    /// Ours, not rust-s3's: its trusted roots include `ca_file`.
    pub(crate) http: reqwest::Client,
    /// Headers of every write: server-side encryption, storage class.
    pub(crate) write_headers: HeaderMap,
    /// SSE-C headers: on writes, reads and sizes, never on listings or deletes.
    pub(crate) customer_key: HeaderMap,
    /// Writes signed `UNSIGNED-PAYLOAD` instead of with the body's SHA-256.
    pub(crate) unsigned_payload: bool,
    /// The endpoint, as errors name it.
    pub(crate) endpoint: String,
    /// Where the keys come from, and the keys.
    pub(crate) credentials: Arc<credentials::Provider>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the customer key's headers.
        f.debug_struct("Target")
            .field("bucket", &self.bucket.name())
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The bucket handle and the runtime that drives it.
pub(crate) struct Client {
    /// Shared by every request's future: cloning it is one reference count.
    pub(crate) target: Arc<Target>,
    runtime: Option<Runtime>,
    /// The process that built the runtime: its threads do not survive `fork()`.
    pid: u32,
}

fn config_error(key: &str, why: String) -> Error {
    Error::new(ErrorKind::Config, Op::Open)
        .with_key(key)
        .with_detail(why)
}

/// The CA certificates `ca_file` names, else `AWS_CA_BUNDLE`, if either is set.
fn extra_roots(config: &S3Config) -> Result<Vec<reqwest::Certificate>> {
    let (key, path) = if !config.ca_file.is_empty() {
        ("block_store.s3.ca_file", config.ca_file.clone())
    } else {
        match std::env::var("AWS_CA_BUNDLE") {
            Ok(path) if !path.is_empty() => ("AWS_CA_BUNDLE", path),
            _ => return Ok(Vec::new()),
        }
    };
    let pem =
        std::fs::read(&path).map_err(|e| config_error(key, format!("cannot read {path}: {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| config_error(key, format!("{path} is not a PEM bundle: {e}")))?;
    if certs.is_empty() {
        return Err(config_error(
            key,
            format!("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        ));
    }
    Ok(certs)
}

/// The HTTP client every request goes through: rustls with the built-in roots and
/// any from [`extra_roots`], connections kept alive, no redirects followed; time
/// limits are per request.
fn http_client(config: &S3Config) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tcp_nodelay(true)
        // A redirect to another host would carry a signature made for this one.
        .redirect(reqwest::redirect::Policy::none());
    for cert in extra_roots(config)? {
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|e| {
        Error::new(ErrorKind::Backend, Op::Open)
            .with_detail("cannot build the HTTP client")
            .with_source(e)
    })
}

/// The headers every write carries: server-side encryption and storage class.
fn write_headers(config: &S3Config) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    let value = |key: &str, v: &str| {
        HeaderValue::from_str(v)
            .map_err(|_| config_error(key, format!("{v:?} cannot be sent in a header")))
    };
    if let Some(sse) = config.sse {
        headers.insert(
            HeaderName::from_static("x-amz-server-side-encryption"),
            HeaderValue::from_static(sse.header_value()),
        );
        if !config.sse_kms_key_id.is_empty() {
            headers.insert(
                HeaderName::from_static("x-amz-server-side-encryption-aws-kms-key-id"),
                value("block_store.s3.sse_kms_key_id", &config.sse_kms_key_id)?,
            );
        }
    }
    if !config.storage_class.is_empty() {
        headers.insert(
            HeaderName::from_static("x-amz-storage-class"),
            value("block_store.s3.storage_class", &config.storage_class)?,
        );
    }
    Ok(headers)
}

/// The SSE-C headers: the algorithm, the key and its MD5, all marked sensitive so no
/// `Debug` of a request shows them.
fn customer_key_headers(config: &S3Config) -> Result<HeaderMap> {
    use base64::prelude::{Engine, BASE64_STANDARD};
    use md5::Digest;
    let mut headers = HeaderMap::new();
    if config.sse_customer_key.is_empty() {
        return Ok(headers);
    }
    let key = super::config::customer_key_bytes(&config.sse_customer_key)
        .map_err(|why| config_error("block_store.s3.sse_customer_key", why))?;
    let secret = |text: String| {
        let mut v = HeaderValue::from_str(&text).map_err(|_| {
            config_error(
                "block_store.s3.sse_customer_key",
                "not a header value".into(),
            )
        })?;
        v.set_sensitive(true);
        Ok::<_, Error>(v)
    };
    headers.insert(
        HeaderName::from_static("x-amz-server-side-encryption-customer-algorithm"),
        HeaderValue::from_static("AES256"),
    );
    headers.insert(
        HeaderName::from_static("x-amz-server-side-encryption-customer-key"),
        secret(BASE64_STANDARD.encode(&key))?,
    );
    headers.insert(
        HeaderName::from_static("x-amz-server-side-encryption-customer-key-md5"),
        secret(BASE64_STANDARD.encode(md5::Md5::digest(&key)))?,
    );
    Ok(headers)
}

impl Client {
    /// Builds the bucket handle and the runtime; contacts nobody.
    pub(crate) fn new(config: &S3Config) -> Result<Client> {
        // rust-s3's own retries (fixed, unjittered, GETs only) are replaced by ours.
        s3::set_retries(0);
        // The endpoint with its scheme: as requests go out, and as errors name it.
        let endpoint = if config.endpoint.is_empty() {
            format!("https://s3.{}.amazonaws.com", config.region)
        } else if config.endpoint.contains("://") {
            config.endpoint.trim_end_matches('/').to_owned()
        } else {
            format!("https://{}", config.endpoint.trim_end_matches('/'))
        };
        let region = if config.endpoint.is_empty() {
            config
                .region
                .parse::<Region>()
                .map_err(|e| config_error("block_store.s3.region", e.to_string()))?
        } else {
            Region::Custom {
                region: config.region.clone(),
                endpoint: endpoint.clone(),
            }
        };
        // The bucket handle builds URLs; keys come from our provider, not from it.
        let anonymous =
            Credentials::anonymous().map_err(|e| config_error("block_store.s3", e.to_string()))?;
        let mut bucket = Bucket::new(&config.bucket, region, anonymous)
            .map_err(|e| config_error("block_store.s3", e.to_string()))?;
        if config.force_path_style {
            bucket.set_path_style();
        }
        bucket.set_request_timeout(Some(Duration::from_secs(config.request_timeout_secs)));
        let http = http_client(config)?;
        let source = credentials::resolve(config, &credentials::process_env)?;
        let clients = credentials::Clients::new(
            http.clone(),
            Duration::from_secs(config.request_timeout_secs),
        )?;
        // Errors name the host requests go to: with virtual-hosted addressing, the
        // bucket's own (whose name may be the one that does not resolve).
        let endpoint = if config.force_path_style {
            endpoint
        } else {
            bucket.url()
        };
        let target = Target {
            credentials: Arc::new(credentials::Provider::new(source, clients)),
            http,
            write_headers: write_headers(config)?,
            customer_key: customer_key_headers(config)?,
            unsigned_payload: config.unsigned_payload,
            endpoint,
            bucket: *bucket,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("blockstore-s3")
            .enable_all()
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Backend, Op::Open)
                    .with_detail("cannot start the S3 runtime")
                    .with_source(e)
            })?;
        Ok(Client {
            target: Arc::new(target),
            runtime: Some(runtime),
            pid: std::process::id(),
        })
    }

    /// Runs `fut` to completion on behalf of a synchronous caller.
    pub(crate) fn run<T, F>(&self, op: Op, fut: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::Closed, op))?;
        if std::process::id() != self.pid {
            return Err(Error::new(ErrorKind::Backend, op).with_detail(
                "the S3 store was opened by the parent process; open a new store after fork()",
            ));
        }
        if Handle::try_current().is_err() {
            return Ok(runtime.block_on(fut));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        // The caller's span goes with the request to the runtime's thread.
        #[cfg(feature = "tracing")]
        let fut = tracing::Instrument::in_current_span(fut);
        runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| {
            Error::new(ErrorKind::Backend, op).with_detail("the S3 runtime dropped the request")
        })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            if std::process::id() == self.pid {
                // Never blocks, so dropping the store inside an async context is safe.
                runtime.shutdown_background();
            } else {
                // A forked child does not own the runtime's threads.
                std::mem::forget(runtime);
            }
        }
    }
}
