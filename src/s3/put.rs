//! The writer: PutObject signed with one SHA-256 of the block, sent on the bucket's own
//! connection pool.
//!
//! rust-s3's `put_object` copies the body once more and hashes it three times: SHA-256
//! for the header, SHA-256 again for the signature, and MD5 for `Content-MD5`. On a
//! 4 MiB block that is about 10 ms of one core per write, which made our PUTs slower
//! than `object_store`'s. Here the payload hash is computed once per call (not per
//! attempt), and the request is signed with rust-s3's own SigV4 helpers.
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
use hmac::Mac;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH};
use reqwest::header::{CONTENT_TYPE, HOST};
use s3::error::S3Error;
use s3::signing;
use s3::Bucket;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use url::Url;

/// A block ready to be sent: the body and its digests, shared by every attempt.
#[derive(Clone)]
pub(crate) struct Upload {
    body: Bytes,
    /// Hex SHA-256, the signed payload hash.
    sha256: String,
    /// Base64 MD5 for `Content-MD5`, when asked for.
    md5: Option<String>,
}

impl Upload {
    /// Copies the block once (the request must own it) and hashes it once, or twice
    /// with `content_md5`.
    pub(crate) fn new(data: &[u8], content_md5: bool) -> Upload {
        let md5 =
            content_md5.then(|| BASE64_STANDARD.encode(<md5::Md5 as md5::Digest>::digest(data)));
        Upload {
            body: Bytes::copy_from_slice(data),
            sha256: hex::encode(Sha256::digest(data)),
            md5,
        }
    }
}

fn header(value: &str) -> Result<HeaderValue, S3Error> {
    Ok(HeaderValue::from_str(value)?)
}

/// The object's URL, encoded exactly as rust-s3 encodes it for reads and deletes.
fn object_url(bucket: &Bucket, object_key: &str) -> Result<Url, S3Error> {
    let mut url = bucket.url();
    url.push('/');
    url.push_str(&signing::uri_encode(object_key, false));
    Ok(Url::parse(&url)?)
}

/// One PutObject attempt; a reply other than 2xx is `HttpFailWithBody`, as rust-s3's
/// `fail-on-err` reports it for every other request.
pub(crate) async fn put_object(
    bucket: &Bucket,
    object_key: &str,
    upload: &Upload,
) -> Result<(), S3Error> {
    let url = object_url(bucket, object_key)?;
    let now = OffsetDateTime::now_utc();
    let region = bucket.region();
    let host = bucket.host();
    let authority = host.split('/').next().unwrap_or(&host);

    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(HOST, header(authority)?);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(upload.body.len()));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        HeaderName::from_static("x-amz-content-sha256"),
        header(&upload.sha256)?,
    );
    headers.insert(
        HeaderName::from_static("x-amz-date"),
        header(&long_date(&now)?)?,
    );
    if let Some(md5) = &upload.md5 {
        headers.insert(HeaderName::from_static("content-md5"), header(md5)?);
    }
    let token = match bucket.session_token().await? {
        Some(token) => Some(token),
        None => bucket.security_token().await?,
    };
    if let Some(token) = token {
        headers.insert(
            HeaderName::from_static("x-amz-security-token"),
            header(&token)?,
        );
    }
    if let (Some(access), Some(secret)) = (bucket.access_key().await?, bucket.secret_key().await?) {
        let canonical = signing::canonical_request("PUT", &url, &headers, &upload.sha256)?;
        let to_sign = signing::string_to_sign(&now, &region, &canonical)?;
        let key = signing::signing_key(&now, &secret, &region, "s3")?;
        let mut mac = signing::HmacSha256::new_from_slice(&key)?;
        mac.update(to_sign.as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        let authorization = signing::authorization_header(
            &access,
            &now,
            &region,
            &signing::signed_header_string(&headers),
            &signature,
        )?;
        headers.insert(AUTHORIZATION, header(&authorization)?);
    }

    let mut request = bucket
        .http_client()
        .put(url)
        .headers(headers)
        .body(upload.body.clone());
    if let Some(timeout) = bucket.request_timeout() {
        request = request.timeout(timeout);
    }
    let reply = request.send().await?;
    let status = reply.status();
    if status.is_success() {
        return Ok(());
    }
    let body = reply.text().await.unwrap_or_default();
    Err(S3Error::HttpFailWithBody(status.as_u16(), body))
}

/// `20261124T061900Z`, SigV4's timestamp.
fn long_date(now: &OffsetDateTime) -> Result<String, S3Error> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    Ok(now.format(format)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_hash_is_hex_sha256_of_the_block() {
        let upload = Upload::new(b"", false);
        assert_eq!(
            upload.sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(upload.md5, None);
        let upload = Upload::new(b"abc", true);
        assert_eq!(
            upload.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(upload.md5.as_deref(), Some("kAFQmDzST7DWlj99KOF/cg=="));
        assert_eq!(&upload.body[..], b"abc");
    }

    #[test]
    fn timestamp_is_sigv4s_long_date() {
        let t = OffsetDateTime::from_unix_timestamp(1_795_501_140).unwrap();
        assert_eq!(long_date(&t).unwrap(), "20261124T061900Z");
    }
}
