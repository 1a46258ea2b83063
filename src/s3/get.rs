//! The reader: GetObject, whole or a byte range, into one buffer sized from the reply's
//! `Content-Length`.
//!
//! rust-s3's `get_object` gathers the body into `Bytes` and hands it back inside a
//! response that also copies every header into a map; turning that into the caller's
//! `Vec` could cost another pass over 4 MiB. Here each chunk is copied once, straight
//! from the connection into the block the caller gets.

use reqwest::header::{HeaderMap, HeaderValue, RANGE};
use reqwest::Method;
use s3::error::S3Error;
use s3::Bucket;

use super::sign::{header, signed, success, EMPTY_SHA256};

/// What a read got: the HTTP status (206 for a range the server honoured, 200 for a
/// whole object) and the bytes, at most `limit + 1` of them.
pub(crate) struct Got {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// One GetObject attempt. `range` is `(first, last)` with `last` inclusive or open.
/// Reading stops after `limit + 1` bytes, so an object larger than any block is
/// noticed without being downloaded whole.
pub(crate) async fn get_object(
    bucket: &Bucket,
    object_key: &str,
    range: Option<(u64, Option<u64>)>,
    limit: usize,
) -> Result<Got, S3Error> {
    let mut headers = HeaderMap::with_capacity(8);
    if let Some((first, last)) = range {
        let value = match last {
            Some(last) => format!("bytes={first}-{last}"),
            None => format!("bytes={first}-"),
        };
        headers.insert(RANGE, header(&value)?);
    }
    headers.insert(
        reqwest::header::ACCEPT,
        HeaderValue::from_static("application/octet-stream"),
    );
    let request = signed(bucket, Method::GET, object_key, EMPTY_SHA256, headers).await?;
    let mut reply = success(request.send().await?).await?;
    let status = reply.status().as_u16();
    let cap = limit.saturating_add(1);
    let expected = reply
        .content_length()
        .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut body = Vec::with_capacity(expected.min(cap));
    while let Some(chunk) = reply.chunk().await? {
        let room = cap - body.len();
        if chunk.len() >= room {
            body.extend_from_slice(&chunk[..room]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Got { status, body })
}
