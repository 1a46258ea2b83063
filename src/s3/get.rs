//! The reader: GetObject, whole or a byte range, into one buffer sized from the reply,
//! checked against the request before a byte of it is used.
//!
//! rust-s3's `get_object` gathers the body into `Bytes` and hands it back inside a
//! response that also copies every header into a map; turning that into the caller's
//! `Vec` could cost another pass over 4 MiB. Here each chunk is copied once, straight
//! from the connection into the block the caller gets.
//!
//! # Checks
//!
//! - A whole read must be answered 200 without `Content-Range`.
//! - A range `first-last` answered 206 must carry `Content-Range: bytes a-b/total` with
//!   `a = first`, `b ≤ last` (or `b = total - 1` for an open range or one that runs
//!   past the end), `b < total`, and a body of exactly `b - a + 1` bytes.
//! - A range answered 200 (a server that ignores `Range`) must be the whole object,
//!   without `Content-Range`; the range is cut out of it.
//! - A body must hold exactly its `Content-Length`; one without (ended by closing the
//!   connection) is held to the length the range promised.
//!
//! A reply that fails a check is `AttemptError::Invalid`: retried, never returned as data.

use reqwest::header::{HeaderMap, HeaderValue, RANGE};
use reqwest::Method;
use reqwest::Response;

use super::client::Target;
use super::error::AttemptError;
use super::reply::{header, success};
use super::sign::{header as header_value, object_url, signed, EMPTY_SHA256};
use crate::crc::Running;

/// What to read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Want {
    /// The whole object.
    Whole,
    /// Bytes `first..=last`, or `first..` to the end.
    Range { first: u64, last: Option<u64> },
}

/// What a checked read found.
#[derive(Debug)]
pub(crate) enum Got {
    /// The bytes asked for, and what the reply said of the object.
    Bytes(Vec<u8>, Object),
    /// The object is larger than any block: not ours to return.
    Oversized,
    /// The range starts at or past the end of an object of this size (a server that
    /// ignored `Range` and sent the whole object).
    PastEnd { size: u64 },
}

/// What a reply said of the whole object besides the bytes.
#[derive(Debug)]
pub(crate) struct Object {
    /// Its size.
    pub(crate) size: u64,
    /// Its checksum record (`x-amz-meta-blockstore-sums`, decoded; empty when it is not
    /// base64, which the checks call corrupt).
    pub(crate) sums: Option<std::sync::Arc<[u8]>>,
    /// The CRC32C of the bytes returned, taken as they arrived: only for a whole object
    /// that carries a record, so its check overlaps the wait for the network.
    pub(crate) crc32c: Option<u32>,
}

/// The checksum record a reply carries, if any.
pub(crate) fn sums_of(reply: &Response) -> Option<std::sync::Arc<[u8]>> {
    use base64::prelude::{Engine, BASE64_STANDARD};
    header(reply, super::put::SUMS_HEADER)
        .map(|v| BASE64_STANDARD.decode(v.trim()).unwrap_or_default().into())
}

/// `Content-Range: bytes a-b/total`; a `*` total is `None`.
fn content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let total = match total {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((a.parse().ok()?, b.parse().ok()?, total))
}

/// One GetObject attempt, checked. Objects larger than `limit` are not downloaded
/// whole: reading stops after `limit + 1` bytes.
pub(crate) async fn get_object(
    target: &Target,
    object_key: &str,
    want: Want,
    limit: usize,
) -> Result<Got, AttemptError> {
    let mut headers = HeaderMap::with_capacity(8);
    if let Want::Range { first, last } = want {
        let value = match last {
            Some(last) => format!("bytes={first}-{last}"),
            None => format!("bytes={first}-"),
        };
        headers.insert(RANGE, header_value(&value)?);
    }
    headers.insert(
        reqwest::header::ACCEPT,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.extend(target.customer_key.clone());
    let url = object_url(&target.bucket, object_key)?;
    let request = signed(target, Method::GET, url, EMPTY_SHA256, headers).await?;
    let reply = success(request.send().await?).await?;
    let status = reply.status().as_u16();
    let range = header(&reply, "content-range").map(str::to_owned);
    let declared = reply.content_length();
    let sums = sums_of(&reply);
    match (want, status, range) {
        (Want::Whole, 200, None) => {
            let mut running = sums.is_some().then(Running::new);
            let body = read(reply, limit.saturating_add(1), running.as_mut()).await?;
            if body.len() > limit {
                return Ok(Got::Oversized);
            }
            check_declared(declared, body.len())?;
            let size = body.len() as u64;
            let crc32c = running.map(|r| r.value());
            Ok(Got::Bytes(body, Object { size, sums, crc32c }))
        }
        (Want::Range { first, last }, 200, None) => {
            // The server ignored `Range`: this is the whole object.
            let mut body = read(reply, limit.saturating_add(1), None).await?;
            if body.len() > limit {
                return Ok(Got::Oversized);
            }
            check_declared(declared, body.len())?;
            let size = body.len() as u64;
            if first >= size {
                return Ok(Got::PastEnd { size });
            }
            let end = last.map_or(size, |l| l.saturating_add(1).min(size));
            body.truncate(end as usize);
            body.drain(..first as usize);
            Ok(Got::Bytes(
                body,
                Object {
                    size,
                    sums,
                    crc32c: None,
                },
            ))
        }
        (Want::Range { first, last }, 206, Some(range)) => {
            let Some((a, b, total)) = content_range(&range) else {
                return Err(AttemptError::Invalid(format!(
                    "a 206 reply with Content-Range {range:?}"
                )));
            };
            let total = total.ok_or_else(|| {
                AttemptError::Invalid(format!("a 206 reply with no total in {range:?}"))
            })?;
            if total > limit as u64 {
                return Ok(Got::Oversized);
            }
            let asked = match last {
                Some(last) => format!("bytes={first}-{last}"),
                None => format!("bytes={first}-"),
            };
            // The reply must start where asked and end where asked, or at the end.
            let ends_right = match last {
                Some(last) => b == last || (b < last && b + 1 == total),
                None => b + 1 == total,
            };
            if a != first || b < a || b >= total || !ends_right {
                return Err(AttemptError::Invalid(format!(
                    "asked for {asked}, the reply holds bytes {a}-{b} of {total}"
                )));
            }
            let expected = (b - a + 1) as usize;
            let body = read(reply, expected.saturating_add(1), None).await?;
            if body.len() != expected {
                return Err(AttemptError::Invalid(format!(
                    "asked for {asked}, the reply's Content-Range promised {expected} bytes and its body held {}",
                    if body.len() > expected {
                        format!("more than {expected}")
                    } else {
                        body.len().to_string()
                    }
                )));
            }
            Ok(Got::Bytes(
                body,
                Object {
                    size: total,
                    sums,
                    crc32c: None,
                },
            ))
        }
        (Want::Whole, 206, _) => Err(AttemptError::Invalid(
            "a 206 partial reply to a whole-object read".into(),
        )),
        (_, 200, Some(range)) => Err(AttemptError::Invalid(format!(
            "a 200 reply carrying Content-Range {range:?}"
        ))),
        (_, 206, None) => Err(AttemptError::Invalid(
            "a 206 reply without Content-Range".into(),
        )),
        (_, status, _) => Err(AttemptError::Invalid(format!(
            "HTTP {status} to a GetObject request"
        ))),
    }
}

/// A body whose `Content-Length` was given must hold exactly that.
fn check_declared(declared: Option<u64>, got: usize) -> Result<(), AttemptError> {
    match declared {
        Some(n) if n != got as u64 => Err(AttemptError::Invalid(format!(
            "Content-Length was {n}, the body held {got} bytes"
        ))),
        _ => Ok(()),
    }
}

/// Reads at most `cap` bytes of the body into a buffer sized from `Content-Length`,
/// feeding `running` the bytes kept.
async fn read(
    mut reply: Response,
    cap: usize,
    mut running: Option<&mut Running>,
) -> Result<Vec<u8>, AttemptError> {
    let expected = reply
        .content_length()
        .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut body = Vec::with_capacity(expected.min(cap));
    while let Some(chunk) = reply.chunk().await? {
        let room = cap - body.len();
        let kept = &chunk[..chunk.len().min(room)];
        if let Some(running) = running.as_deref_mut() {
            running.update(kept);
        }
        body.extend_from_slice(kept);
        if chunk.len() >= room {
            break;
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses_what_s3_sends() {
        assert_eq!(content_range("bytes 0-9/10"), Some((0, 9, Some(10))));
        assert_eq!(content_range("bytes 5-5/*"), Some((5, 5, None)));
        assert_eq!(content_range("bytes */10"), None);
        assert_eq!(content_range("bytes 1-x/10"), None);
        assert_eq!(content_range("items 0-9/10"), None);
    }
}
