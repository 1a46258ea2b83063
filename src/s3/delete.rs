//! The deleter: DeleteObject for one key, DeleteObjects for up to 1,000 at once.
//!
//! A DeleteObjects reply is taken key by key: a key counts as deleted only when the
//! reply lists it under `<Deleted>`, as failed when it lists it under `<Error>`, and a
//! key the reply does not mention at all is neither (the caller sends it again). A 200
//! whose document is not a `DeleteResult` (an `<Error>`, an empty or cut body) confirms
//! nothing and is retried.

use std::collections::HashSet;

use base64::prelude::{Engine, BASE64_STANDARD};
use bytes::Bytes;
use md5::Md5;
use reqwest::header::{HeaderMap, HeaderName, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::Method;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::client::Target;
use super::error::{AttemptError, S3Failure};
use super::reply::{body, root_element, success};
use super::sign::{bucket_url, header, object_url, signed, EMPTY_SHA256};

/// The most bytes a DeleteObjects reply may hold (1,000 keys of 1,024 bytes each).
const REPLY_BYTES: usize = 8 << 20;

/// One DeleteObject attempt.
pub(crate) async fn delete_object(target: &Target, object_key: &str) -> Result<(), AttemptError> {
    let url = object_url(&target.bucket, object_key)?;
    let request = signed(target, Method::DELETE, url, EMPTY_SHA256, HeaderMap::new()).await?;
    success(request.send().await?).await?;
    Ok(())
}

/// What a DeleteObjects reply said of the keys sent, each key in at most one list.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) deleted: Vec<String>,
    pub(crate) failed: Vec<(String, S3Failure)>,
    /// Keys the reply mentioned neither way.
    pub(crate) unconfirmed: Vec<String>,
}

#[derive(Deserialize)]
struct DeleteResult {
    #[serde(rename = "$value", default)]
    items: Vec<Item>,
}

#[derive(Deserialize)]
enum Item {
    Deleted(Deleted),
    Error(KeyError),
}

#[derive(Deserialize)]
struct Deleted {
    #[serde(rename = "Key")]
    key: String,
}

#[derive(Deserialize)]
struct KeyError {
    #[serde(rename = "Key", default)]
    key: String,
    #[serde(rename = "Code", default)]
    code: String,
    #[serde(rename = "Message", default)]
    message: String,
}

/// The request body for `keys`.
fn request_body(keys: &[String]) -> String {
    let mut xml = String::with_capacity(64 + keys.iter().map(|k| k.len() + 32).sum::<usize>());
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete><Quiet>false</Quiet>");
    for key in keys {
        xml.push_str("<Object><Key>");
        xml.push_str(&quick_xml::escape::escape(key.as_str()));
        xml.push_str("</Key></Object>");
    }
    xml.push_str("</Delete>");
    xml
}

/// One DeleteObjects attempt for `keys` (full object keys, at most 1,000).
pub(crate) async fn delete_objects(
    target: &Target,
    keys: &[String],
) -> Result<Outcome, AttemptError> {
    let xml = Bytes::from(request_body(keys));
    let mut headers = HeaderMap::with_capacity(10);
    headers.insert(CONTENT_LENGTH, xml.len().into());
    headers.insert(CONTENT_TYPE, header("application/xml")?);
    // S3-compatible servers require it on DeleteObjects.
    headers.insert(
        HeaderName::from_static("content-md5"),
        header(&BASE64_STANDARD.encode(Md5::digest(&xml)))?,
    );
    let sha = hex::encode(Sha256::digest(&xml));
    let url = bucket_url(&target.bucket, &[("delete", "")])?;
    let request = signed(target, Method::POST, url, &sha, headers).await?;
    let reply = success(request.body(xml).send().await?).await?;
    let bytes = body(reply, REPLY_BYTES).await?;
    read_outcome(keys, &bytes)
}

/// Sorts the keys sent by what the reply says of each.
fn read_outcome(keys: &[String], bytes: &[u8]) -> Result<Outcome, AttemptError> {
    let root = root_element(bytes);
    if root.as_deref() != Some("DeleteResult") {
        let shown = match root.as_deref() {
            Some("Error") => {
                let e = S3Failure::parse(200, &String::from_utf8_lossy(bytes));
                format!("a 200 reply holding an error ({} {})", e.code, e.message)
            }
            Some(other) => format!("a reply whose document is <{other}>"),
            None => "a reply that is not XML".to_owned(),
        };
        return Err(AttemptError::Invalid(format!(
            "DeleteObjects confirmed nothing: {shown}"
        )));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| AttemptError::Invalid("a DeleteObjects reply that is not UTF-8".into()))?;
    let parsed: DeleteResult = quick_xml::de::from_str(text).map_err(|e| {
        AttemptError::Invalid(format!("a DeleteObjects reply that does not parse: {e}"))
    })?;
    let mut pending: HashSet<&str> = keys.iter().map(String::as_str).collect();
    let mut outcome = Outcome::default();
    for item in parsed.items {
        match item {
            // Only a key that was sent, and only once.
            Item::Deleted(d) => {
                if pending.remove(d.key.as_str()) {
                    outcome.deleted.push(d.key);
                }
            }
            Item::Error(e) => {
                if pending.remove(e.key.as_str()) {
                    let failure = S3Failure {
                        status: if e.code == "AccessDenied" { 403 } else { 500 },
                        code: e.code,
                        message: e.message,
                        ..S3Failure::default()
                    };
                    outcome.failed.push((e.key, failure));
                }
            }
        }
    }
    outcome.unconfirmed = keys
        .iter()
        .filter(|k| pending.contains(k.as_str()))
        .cloned()
        .collect();
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_what_the_reply_confirms_counts() {
        let sent = keys(&["a", "b", "c"]);
        let reply = "<DeleteResult><Deleted><Key>a</Key></Deleted>\
            <Error><Key>b</Key><Code>AccessDenied</Code><Message>no</Message></Error>\
            <Deleted><Key>a</Key></Deleted><Deleted><Key>zzz</Key></Deleted></DeleteResult>";
        let o = read_outcome(&sent, reply.as_bytes()).unwrap();
        assert_eq!(o.deleted, ["a"]);
        assert_eq!(o.failed.len(), 1);
        assert_eq!((o.failed[0].0.as_str(), o.failed[0].1.status), ("b", 403));
        assert_eq!(o.unconfirmed, ["c"]);
        let o = read_outcome(&sent, b"<DeleteResult/>").unwrap();
        assert_eq!(o.unconfirmed, sent);
        let more_errors = "<DeleteResult>".to_owned()
            + &"<Error><Key>a</Key><Code>InternalError</Code></Error>".repeat(4)
            + "</DeleteResult>";
        let o = read_outcome(&sent, more_errors.as_bytes()).unwrap();
        assert_eq!((o.failed.len(), o.unconfirmed.len()), (1, 2));
        for bad in [
            &b"<Error><Code>InternalError</Code></Error>"[..],
            b"",
            b"{}",
        ] {
            assert!(
                matches!(read_outcome(&sent, bad), Err(AttemptError::Invalid(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A cut reply confirms nothing, whether or not it parses.
        match read_outcome(&sent, b"<DeleteResult><Deleted><Key>a") {
            Err(AttemptError::Invalid(_)) => {}
            Ok(o) => assert!(o.deleted.is_empty() && o.unconfirmed.len() == 3, "{o:?}"),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn request_body_escapes_keys() {
        let body = request_body(&keys(&["a&b<c>"]));
        assert!(body.contains("<Key>a&amp;b&lt;c&gt;</Key>"), "{body}");
    }
}
