//! Reading replies: a 2xx goes on to the caller's checks; anything else becomes the
//! [`AttemptError`] it describes, from at most [`ERROR_BODY_LIMIT`] bytes of its body.
//!
//! An error body that is cut mid-way (the connection reset, or it ends before its
//! `Content-Length`) is a transport failure and is retried: its code may be the very
//! thing that says "not found" or "retry". A huge error body is never read whole.

use std::time::Duration;

use reqwest::header::HeaderName;
use reqwest::Response;

use super::error::{chain, request_id, AttemptError, S3Failure};

/// The most of an error reply's body that is read; a real one is a few hundred bytes.
pub(crate) const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// The reply if its status is 2xx; otherwise the failure it describes.
pub(crate) async fn success(reply: Response) -> Result<Response, AttemptError> {
    if reply.status().is_success() {
        Ok(reply)
    } else {
        Err(failure(reply).await)
    }
}

/// The failure an error reply describes: its status, and the code and message of the
/// first [`ERROR_BODY_LIMIT`] bytes of its body.
async fn failure(mut reply: Response) -> AttemptError {
    let status = reply.status().as_u16();
    let ids = (
        header(&reply, "x-amz-request-id").map(request_id),
        header(&reply, "x-amz-id-2").map(request_id),
    );
    let retry_after = header(&reply, "retry-after").and_then(retry_after);
    let region = header(&reply, "x-amz-bucket-region").map(request_id);
    let mut body = Vec::new();
    loop {
        match reply.chunk().await {
            Ok(Some(chunk)) => {
                let room = ERROR_BODY_LIMIT - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() == ERROR_BODY_LIMIT {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                return AttemptError::Transport(format!(
                    "the body of an HTTP {status} reply was cut: {}",
                    chain(&e.without_url())
                ))
            }
        }
    }
    let mut failure = S3Failure::parse(status, &String::from_utf8_lossy(&body));
    if let Some(id) = ids.0.filter(|id| !id.is_empty()) {
        failure.request_id = id;
    }
    if let Some(id) = ids.1.filter(|id| !id.is_empty()) {
        failure.host_id = id;
    }
    failure.retry_after = retry_after;
    if let Some(region) = region.filter(|r| !r.is_empty()) {
        failure.region = region;
    }
    AttemptError::Reply(Box::new(failure))
}

/// The longest `Retry-After` taken as given; the call's deadline bounds it anyway.
const RETRY_AFTER_LIMIT: Duration = Duration::from_secs(3600);

/// A `Retry-After` value: delay-seconds, or an HTTP date (a date in the past is no
/// wait). `None` when it is neither.
pub(crate) fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(RETRY_AFTER_LIMIT))
}

/// Reads a 2xx reply's body whole; a body longer than `limit` is not a reply to this
/// request.
pub(crate) async fn body(mut reply: Response, limit: usize) -> Result<Vec<u8>, AttemptError> {
    let mut body = Vec::new();
    while let Some(chunk) = reply.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(AttemptError::Invalid(format!(
                "a reply body longer than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A header's value as text, if the reply has it.
pub(crate) fn header<'a>(reply: &'a Response, name: &'static str) -> Option<&'a str> {
    reply
        .headers()
        .get(HeaderName::from_static(name))
        .and_then(|v| v.to_str().ok())
}

/// The name of the root element of an XML document (`ListBucketResult`, `Error`, …).
pub(crate) fn root_element(body: &[u8]) -> Option<String> {
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e)) => {
                return Some(String::from_utf8_lossy(e.local_name().as_ref()).into_owned())
            }
            Ok(quick_xml::events::Event::Eof) | Err(_) => return None,
            Ok(_) => buf.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(retry_after("99999999"), Some(RETRY_AFTER_LIMIT));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        let wait = retry_after(&later).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert_eq!(retry_after("soon"), None);
        assert_eq!(retry_after("-1"), None);
    }

    #[test]
    fn root_element_names_the_document() {
        let list = b"<?xml version=\"1.0\"?>\n<ListBucketResult xmlns=\"x\"><Name>b</Name></ListBucketResult>";
        assert_eq!(root_element(list).as_deref(), Some("ListBucketResult"));
        assert_eq!(
            root_element(b"<DeleteResult/>").as_deref(),
            Some("DeleteResult")
        );
        assert_eq!(
            root_element(b"<Error><Code>x</Code>").as_deref(),
            Some("Error")
        );
        assert_eq!(root_element(b"not xml"), None);
        assert_eq!(root_element(b""), None);
    }
}
