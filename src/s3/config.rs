//! `S3Config`: the `[block_store.s3]` section.

use std::fmt;

use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};
use crate::key::validate_prefix;
use crate::op::Op;

/// Settings of the S3 backend, as in the `[block_store.s3]` section of the configuration.
///
/// # Credentials
///
/// `credentials` picks the source (default `"chain"`: the configuration's keys, the
/// `AWS_*` variables, web identity, the shared files' profile, container credentials,
/// the EC2 instance metadata service, in that order). `Debug` never shows the secret
/// key, the session token or the SSE-C key.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The bucket; required.
    pub bucket: String,
    /// The signing region; default `us-east-1`.
    #[serde(default = "default_region")]
    pub region: String,
    /// The endpoint URL; empty means AWS. Without a scheme, `https://` is assumed.
    #[serde(default)]
    pub endpoint: String,
    /// Prepended to every key; empty or a valid prefix ending in `/`. Default `blocks/`.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Retries after the first attempt of failures other than throttling; `0` means
    /// one attempt. Default 3. Throttling is retried until `operation_deadline_secs`.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// A fixed cap on the store's requests per second, shared by all its threads; `0`
    /// (the default) means none.
    #[serde(default)]
    pub max_requests_per_second: u32,
    /// Whether throttling slows the whole store down (then lets it speed up again).
    /// Default `true`.
    #[serde(default = "yes")]
    pub adaptive_rate: bool,
    /// Path-style addressing (`endpoint/bucket/key`), needed by MinIO, Ceph RGW and
    /// Localstack. Default `false`.
    #[serde(default)]
    pub force_path_style: bool,
    /// Where the keys come from (see [`CredentialSource`]); default `"chain"`.
    #[serde(default)]
    pub credentials: CredentialSource,
    /// The shared files' profile for `credentials = "profile"` (and the chain); empty:
    /// `AWS_PROFILE`, else `default`.
    #[serde(default)]
    pub profile: String,
    /// Let the instance metadata source fall back to IMDSv1 (no session token) when
    /// IMDSv2 is refused. Default `false`.
    #[serde(default)]
    pub imds_v1: bool,
    /// Access key id (static keys); with `credentials = "chain"` these come first.
    #[serde(default)]
    pub access_key_id: String,
    /// Secret access key (static keys).
    #[serde(default)]
    pub secret_access_key: String,
    /// Session token of temporary static keys; empty: none.
    #[serde(default)]
    pub session_token: String,
    /// Time limit of one attempt, in seconds. Default 30.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Time limit of a whole call, retries included, in seconds. Default 120.
    #[serde(default = "default_operation_deadline")]
    pub operation_deadline_secs: u64,
    /// Also send `Content-MD5` with every write. Default `false`: the signed SHA-256
    /// payload hash already lets AWS S3, Ceph RGW and MinIO refuse a body damaged on the
    /// way. Turn it on for a server that checks `Content-MD5` but not payload hashes;
    /// it costs one more pass over each block.
    #[serde(default)]
    pub content_md5: bool,
    /// Delete by prefix with DeleteObjects, 1,000 keys a request. Default `true`. Set
    /// `false` for a server that mishandles it; the store also falls back to one request
    /// per key by itself when a server answers that it does not implement it (a 501,
    /// or GCS's 400 `NotImplemented`).
    #[serde(default = "yes")]
    pub batch_delete: bool,
    /// Server-side encryption of every write with keys the server manages: `"AES256"`
    /// (SSE-S3) or `"aws:kms"` (SSE-KMS, with `sse_kms_key_id`). Unset: the bucket's
    /// default.
    #[serde(default)]
    pub sse: Option<Sse>,
    /// The KMS key for `sse = "aws:kms"`; empty: the account's default key.
    #[serde(default)]
    pub sse_kms_key_id: String,
    /// SSE-C: a 256-bit key of the caller's, base64, sent with every write, read and
    /// size (never with listings or deletes). The server keeps only its MD5: a block is
    /// unreadable without the key. Never shown by `Debug`, errors or logs.
    #[serde(default)]
    pub sse_customer_key: String,
    /// The storage class of every write (`STANDARD_IA`, `INTELLIGENT_TIERING`, a
    /// server's own class, …); empty: the bucket's default. Archive classes whose
    /// objects cannot be read at once (`GLACIER`, `DEEP_ARCHIVE`) are refused.
    #[serde(default)]
    pub storage_class: String,
    /// A PEM file of CA certificates to trust besides the built-in roots, for an
    /// endpoint behind a private CA; empty: `AWS_CA_BUNDLE` if set.
    #[serde(default)]
    pub ca_file: String,
    /// Sign writes with `UNSIGNED-PAYLOAD` instead of the block's SHA-256, saving a
    /// pass over every block; only over `https`, whose TLS then protects the body on the
    /// way (and `content_md5` can add a digest the server checks). Default `false`.
    #[serde(default)]
    pub unsigned_payload: bool,
    /// Keep a CRC32C per 64 KiB chunk with each block, in the object's metadata
    /// (`x-amz-meta-blockstore-sums`), and verify it on each read. Default `"crc32c"`.
    #[serde(default)]
    pub checksums: crate::Checksums,
    /// With checksums on, also send the whole block's CRC32C as
    /// `x-amz-checksum-crc32c`, so that a server that checks it (AWS S3) refuses a body
    /// damaged on the way. Default `true`; turn it off for a server that refuses the
    /// header.
    #[serde(default = "yes")]
    pub checksum_header: bool,
}

/// `block_store.s3.credentials`: where the keys come from.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CredentialSource {
    /// The AWS SDKs' order: the configuration's keys, the `AWS_*` variables, web
    /// identity, the shared files' profile, container credentials, then the EC2
    /// instance metadata service.
    #[default]
    Chain,
    /// The configuration's `access_key_id` and `secret_access_key`.
    Static,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
    Env,
    /// A profile of the shared files (`profile`, else `AWS_PROFILE`, else `default`).
    Profile,
    /// `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN` through STS (EKS IRSA).
    WebIdentity,
    /// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `_FULL_URI` (ECS, EKS Pod Identity).
    Container,
    /// The EC2 instance metadata service (IMDSv2).
    Imds,
    /// No signature: a public bucket.
    Anonymous,
}

/// Server-side encryption with keys the server manages.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum Sse {
    /// `"AES256"`: SSE-S3.
    #[serde(rename = "AES256")]
    Aes256,
    /// `"aws:kms"`: SSE-KMS.
    #[serde(rename = "aws:kms")]
    AwsKms,
}

impl Sse {
    /// The value of `x-amz-server-side-encryption`.
    pub fn header_value(self) -> &'static str {
        match self {
            Sse::Aes256 => "AES256",
            Sse::AwsKms => "aws:kms",
        }
    }
}

fn yes() -> bool {
    true
}

fn default_region() -> String {
    "us-east-1".to_owned()
}
fn default_key_prefix() -> String {
    "blocks/".to_owned()
}
fn default_max_retries() -> u32 {
    3
}
fn default_request_timeout() -> u64 {
    30
}
fn default_operation_deadline() -> u64 {
    120
}

impl S3Config {
    /// The defaults of every key, for `bucket`.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Config {
            bucket: bucket.into(),
            region: default_region(),
            endpoint: String::new(),
            key_prefix: default_key_prefix(),
            max_retries: default_max_retries(),
            max_requests_per_second: 0,
            adaptive_rate: true,
            force_path_style: false,
            credentials: CredentialSource::Chain,
            profile: String::new(),
            imds_v1: false,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            session_token: String::new(),
            request_timeout_secs: default_request_timeout(),
            operation_deadline_secs: default_operation_deadline(),
            content_md5: false,
            batch_delete: true,
            sse: None,
            sse_kms_key_id: String::new(),
            sse_customer_key: String::new(),
            storage_class: String::new(),
            ca_file: String::new(),
            unsigned_payload: false,
            checksums: crate::Checksums::Crc32c,
            checksum_header: true,
        }
    }

    /// Checks the rules the types cannot express.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| {
            Err(Error::new(ErrorKind::Config, Op::Config)
                .with_key(&format!("block_store.s3.{key}"))
                .with_detail(why))
        };
        if let Err(why) = self.check_bucket_name() {
            return bad("bucket", why);
        }
        if self.region.is_empty() {
            return bad("region", "must not be empty".into());
        }
        if !self.key_prefix.is_empty() {
            if !self.key_prefix.ends_with('/') {
                return bad("key_prefix", "must be empty or end with '/'".into());
            }
            if let Err(rule) = validate_prefix(&self.key_prefix) {
                return bad("key_prefix", rule.describe().into());
            }
        }
        if self.request_timeout_secs == 0 {
            return bad("request_timeout_secs", "must be at least 1".into());
        }
        if self.operation_deadline_secs == 0 {
            return bad("operation_deadline_secs", "must be at least 1".into());
        }
        if !self.sse_kms_key_id.is_empty() && self.sse != Some(Sse::AwsKms) {
            return bad("sse_kms_key_id", "needs sse = \"aws:kms\"".into());
        }
        if !self.sse_customer_key.is_empty() {
            if self.sse.is_some() {
                return bad(
                    "sse_customer_key",
                    "SSE-C and sse cannot both be set: choose one kind of encryption".into(),
                );
            }
            #[cfg(feature = "s3")]
            if let Err(why) = customer_key_bytes(&self.sse_customer_key) {
                return bad("sse_customer_key", why);
            }
        }
        if !self.storage_class.is_empty() {
            let class = self.storage_class.as_str();
            if !class
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                || class.len() > 64
            {
                return bad(
                    "storage_class",
                    format!("{class:?} is not a storage class: upper-case letters, digits and '_' (e.g. STANDARD_IA)"),
                );
            }
            if matches!(class, "GLACIER" | "DEEP_ARCHIVE") {
                return bad(
                    "storage_class",
                    format!("objects in {class} must be restored before they can be read; a block store needs them readable at once (GLACIER_IR is)"),
                );
            }
        }
        if self.unsigned_payload
            && !self.endpoint.is_empty()
            && self.endpoint.starts_with("http://")
        {
            return bad(
                "unsigned_payload",
                "needs an https endpoint: over plain http nothing would protect the body on the way".into(),
            );
        }
        Ok(())
    }
}

impl S3Config {
    /// Whether requests address the bucket as a host name (`bucket.endpoint`), the
    /// AWS default, rather than as the first path segment.
    pub fn virtual_hosted(&self) -> bool {
        !self.force_path_style
    }

    /// The bucket name rules of the addressing in use: as a host name label for
    /// virtual-hosted requests (3 to 63 lower-case letters, digits, `-` and `.`, a letter
    /// or digit at each end, not an IP address, and no `.` over https, where the
    /// certificate covers one label); S3's older rules in a path (up to 255 letters,
    /// digits, `.`, `-` and `_`).
    fn check_bucket_name(&self) -> std::result::Result<(), String> {
        let name = self.bucket.as_str();
        if name.is_empty() {
            return Err("must not be empty".into());
        }
        if !self.virtual_hosted() {
            if name.len() > 255
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            {
                return Err(format!(
                    "{name:?} is not a bucket name: up to 255 letters, digits, '.', '-' and '_'"
                ));
            }
            return Ok(());
        }
        let hint = "; or set force_path_style = true to address it in the path";
        if !(3..=63).contains(&name.len())
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
            || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
            || name.contains("..")
            || name.contains(".-")
            || name.contains("-.")
        {
            return Err(format!(
                "{name:?} cannot be a host name for virtual-hosted requests: 3 to 63 lower-case letters, digits, '-' and '.', starting and ending with a letter or digit{hint}"
            ));
        }
        if name.parse::<std::net::Ipv4Addr>().is_ok() {
            return Err(format!("{name:?} looks like an IP address{hint}"));
        }
        // The bucket goes before the endpoint's host, which must then be a name.
        let host = self
            .endpoint
            .split("://")
            .last()
            .unwrap_or_default()
            .split(['/', ':'])
            .next()
            .unwrap_or_default();
        if !self.endpoint.is_empty()
            && (host.parse::<std::net::Ipv4Addr>().is_ok() || self.endpoint.contains('['))
        {
            return Err(format!(
                "virtual-hosted requests put the bucket before the endpoint's host, and {:?} is an IP address{hint}",
                self.endpoint
            ));
        }
        let https = self.endpoint.is_empty() || !self.endpoint.starts_with("http://");
        if https && name.contains('.') {
            return Err(format!(
                "{name:?} has a '.', which breaks virtual-hosted https: the endpoint's certificate covers one label (*.host){hint}"
            ));
        }
        Ok(())
    }
}

/// The 32 bytes of a base64 SSE-C key, or why it is not one.
#[cfg(feature = "s3")]
pub(crate) fn customer_key_bytes(key: &str) -> std::result::Result<Vec<u8>, String> {
    use base64::prelude::{Engine, BASE64_STANDARD};
    let bytes = BASE64_STANDARD
        .decode(key.trim())
        .map_err(|_| "is not base64".to_owned())?;
    if bytes.len() != 32 {
        return Err(format!(
            "is {} bytes once decoded; SSE-C keys are 32 bytes (256 bits)",
            bytes.len()
        ));
    }
    Ok(bytes)
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("key_prefix", &self.key_prefix)
            .field("max_retries", &self.max_retries)
            .field("max_requests_per_second", &self.max_requests_per_second)
            .field("adaptive_rate", &self.adaptive_rate)
            .field("force_path_style", &self.force_path_style)
            .field("credentials", &self.credentials)
            .field("profile", &self.profile)
            .field("imds_v1", &self.imds_v1)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("session_token", &redact(&self.session_token))
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("operation_deadline_secs", &self.operation_deadline_secs)
            .field("content_md5", &self.content_md5)
            .field("batch_delete", &self.batch_delete)
            .field("sse", &self.sse)
            .field("sse_kms_key_id", &self.sse_kms_key_id)
            .field("sse_customer_key", &redact(&self.sse_customer_key))
            .field("storage_class", &self.storage_class)
            .field("ca_file", &self.ca_file)
            .field("unsigned_payload", &self.unsigned_payload)
            .field("checksums", &self.checksums)
            .field("checksum_header", &self.checksum_header)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let mut c = S3Config::new("b");
        c.access_key_id = "AKIDEXAMPLE".into();
        c.secret_access_key = "wJalrXUtnFEMI".into();
        c.session_token = "FwoGZXIvYXdzEBY".into();
        let shown = format!("{c:?}");
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        assert!(!shown.contains("FwoGZXIvYXdzEBY"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn bucket_names_follow_the_addressing() {
        let check = |bucket: &str, path_style: bool, endpoint: &str| {
            let mut c = S3Config::new(bucket);
            c.force_path_style = path_style;
            c.endpoint = endpoint.into();
            c.validate().map_err(|e| e.to_string())
        };
        let e = check("bucket", false, "http://127.0.0.1:9000").unwrap_err();
        assert!(
            e.contains("IP address") && e.contains("force_path_style"),
            "{e}"
        );
        for ok in ["abc", "my-bucket", "a.b.c", "x1", "0ab", &"a".repeat(63)] {
            let ok_https = !ok.contains('.');
            assert_eq!(
                check(ok, false, "http://localhost:9000").is_ok(),
                ok.len() >= 3,
                "{ok}"
            );
            assert_eq!(
                check(ok, false, "").is_ok(),
                ok_https && ok.len() >= 3,
                "{ok}"
            );
            assert!(check(ok, true, "").is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "My-Bucket",
            "-ab",
            "ab-",
            "a..b",
            "a.-b",
            "a_b",
            "192.168.1.1",
            &"a".repeat(64),
        ] {
            let e = check(bad, false, "http://localhost:9000").unwrap_err();
            assert!(
                e.contains("bucket") && e.contains("force_path_style"),
                "{bad}: {e}"
            );
        }
        let e = check("a.b.c", false, "https://s3.example.com").unwrap_err();
        assert!(e.contains("certificate"), "{e}");
        // Path style takes the older, wider rules, still without '/' or spaces.
        for ok in ["My_Bucket", "ab", "a..b"] {
            assert!(check(ok, true, "http://h").is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "a b", &"a".repeat(256)] {
            assert!(check(bad, true, "http://h").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_prefix_rules() {
        for ok in ["", "blocks/", "a/b/"] {
            let mut c = S3Config::new("bucket");
            c.key_prefix = ok.into();
            assert!(c.validate().is_ok(), "{ok:?}");
        }
        for bad in ["blocks", "/blocks/", "a//", "../"] {
            let mut c = S3Config::new("bucket");
            c.key_prefix = bad.into();
            let e = c.validate().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{bad:?}");
            assert!(e.to_string().contains("key_prefix"), "{e}");
        }
    }
}
