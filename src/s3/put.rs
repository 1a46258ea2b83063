//! The writer: PutObject signed with one SHA-256 of the block.
//!
//! rust-s3's `put_object` copies the body once more and hashes it three times: SHA-256
//! for the header, SHA-256 again for the signature, and MD5 for `Content-MD5`. Here the
//! payload hash is computed once per call (not per attempt), and the request is signed
//! by `sign`.
//!
//! # Integrity
//!
//! The signed `x-amz-content-sha256` covers the whole body, and servers that check
//! SigV4 payload hashes (AWS S3, Ceph RGW, MinIO) refuse a body that changed on the way
//! with 400 `XAmzContentSHA256Mismatch`: the protection `Content-MD5` gives, at one
//! hash instead of two. A server that checks no payload hash (moto checks none) would
//! store a damaged body; `content_md5 = true` adds the MD5 for servers that check only
//! that.

use base64::prelude::{Engine, BASE64_STANDARD};
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::Method;
use sha2::{Digest, Sha256};

use super::client::Target;
use super::error::AttemptError;
use super::reply::success;
use super::sign::{header, object_url, signed, UNSIGNED_PAYLOAD};

/// Which digests a write sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Digests {
    /// The signed SHA-256 payload hash only.
    Sha256,
    /// Also `Content-MD5`, for servers that check only that.
    WithMd5,
}

/// A block ready to be sent: the body and its digests, shared by every attempt.
#[derive(Clone)]
pub(crate) struct Upload {
    body: Bytes,
    /// Hex SHA-256, the signed payload hash.
    sha256: String,
    /// Base64 MD5 for `Content-MD5`, when asked for.
    md5: Option<String>,
    /// The checksum record for `x-amz-meta-blockstore-sums`, base64.
    sums: Option<String>,
    /// The whole block's CRC32C for `x-amz-checksum-crc32c`, base64 of its 4 bytes.
    crc32c: Option<String>,
}

impl Upload {
    /// Copies the block once (the request must own it) and hashes it once, or twice
    /// with [`Digests::WithMd5`]; `unsigned` signs `UNSIGNED-PAYLOAD` instead of the
    /// SHA-256 (no pass at all without MD5).
    pub(crate) fn new(data: &[u8], digests: Digests, unsigned: bool) -> Upload {
        let md5 =
            (digests == Digests::WithMd5).then(|| BASE64_STANDARD.encode(md5::Md5::digest(data)));
        Upload {
            body: Bytes::copy_from_slice(data),
            sha256: if unsigned {
                UNSIGNED_PAYLOAD.to_owned()
            } else {
                hex::encode(Sha256::digest(data))
            },
            md5,
            sums: None,
            crc32c: None,
        }
    }

    /// Sends the block's checksum `record` in its metadata, and its whole `crc32c` as
    /// `x-amz-checksum-crc32c` when given.
    pub(crate) fn with_sums(mut self, record: &[u8], crc32c: Option<u32>) -> Upload {
        self.sums = Some(BASE64_STANDARD.encode(record));
        self.crc32c = crc32c.map(|c| BASE64_STANDARD.encode(c.to_be_bytes()));
        self
    }
}

/// The metadata header that holds a block's checksum record.
pub(crate) const SUMS_HEADER: &str = "x-amz-meta-blockstore-sums";

/// One PutObject attempt.
pub(crate) async fn put_object(
    target: &Target,
    object_key: &str,
    upload: &Upload,
) -> Result<(), AttemptError> {
    let mut headers = HeaderMap::with_capacity(10);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(upload.body.len()));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(md5) = &upload.md5 {
        headers.insert(HeaderName::from_static("content-md5"), header(md5)?);
    }
    if let Some(sums) = &upload.sums {
        headers.insert(HeaderName::from_static(SUMS_HEADER), header(sums)?);
    }
    if let Some(crc) = &upload.crc32c {
        headers.insert(
            HeaderName::from_static("x-amz-checksum-crc32c"),
            header(crc)?,
        );
    }
    // Encryption and storage class, and the SSE-C key: signed like every header.
    headers.extend(target.write_headers.clone());
    headers.extend(target.customer_key.clone());
    let url = object_url(&target.bucket, object_key)?;
    let request = signed(target, Method::PUT, url, &upload.sha256, headers).await?;
    success(request.body(upload.body.clone()).send().await?).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_hash_is_hex_sha256_of_the_block() {
        let upload = Upload::new(b"", Digests::Sha256, false);
        assert_eq!(
            upload.sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(upload.md5, None);
        let upload = Upload::new(b"abc", Digests::WithMd5, false);
        assert_eq!(
            upload.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(upload.md5.as_deref(), Some("kAFQmDzST7DWlj99KOF/cg=="));
        assert_eq!(&upload.body[..], b"abc");
        let upload = Upload::new(b"abc", Digests::Sha256, true);
        assert_eq!(upload.sha256, "UNSIGNED-PAYLOAD");
    }
}
