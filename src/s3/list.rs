//! The lister: ListObjectsV2, one page at a time, each page checked against the
//! request and against the pages before it.
//!
//! # Checks
//!
//! - The reply is a `ListBucketResult` document (a 200 holding `<Error>` is not a page).
//! - Every key starts with the requested prefix: a server that ignores `prefix=` must
//!   never make a prefix delete remove a key outside it.
//! - Keys come in strictly ascending order, each after the last key of the page before
//!   and after `start-after`: a page that repeats or goes back does not advance.
//! - A truncated page names a continuation token, and not the one just used: a token
//!   that repeats would loop for ever.
//!
//! A page that fails a check is `AttemptError::Invalid`, and is asked for again.

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde::Deserialize;

use super::client::Target;
use super::error::AttemptError;
use super::reply::{body, root_element, success};
use super::sign::{bucket_url, signed, EMPTY_SHA256};

/// The most bytes one listing page may hold: 1,000 keys of 1,024 bytes with their XML
/// stay well under it.
const PAGE_BYTES: usize = 16 << 20;

/// Where a listing stands: what it asks for and what it has seen.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cursor {
    /// The full object-key prefix (the store's `key_prefix` included).
    pub(crate) prefix: String,
    /// Start after this full object key.
    pub(crate) start_after: Option<String>,
    /// The token of the next page, once the first page is read.
    pub(crate) token: Option<String>,
    /// The last key seen: every later key must sort after it.
    pub(crate) last: Option<String>,
    /// The last page said it was the last.
    pub(crate) done: bool,
}

/// One checked page: full object keys and their sizes, in order.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) objects: Vec<(String, u64)>,
    pub(crate) next: Option<String>,
}

#[derive(Deserialize)]
struct ListBucketResult {
    #[serde(rename = "IsTruncated", default)]
    is_truncated: bool,
    #[serde(rename = "NextContinuationToken", default)]
    next_continuation_token: Option<String>,
    #[serde(rename = "Contents", default)]
    contents: Vec<Object>,
}

#[derive(Deserialize)]
struct Object {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Size", default)]
    size: u64,
}

/// One ListObjectsV2 attempt for the page after `cursor`, checked.
pub(crate) async fn list_page(
    target: &Target,
    cursor: &Cursor,
    max_keys: usize,
) -> Result<Page, AttemptError> {
    let max = max_keys.to_string();
    let mut query = vec![("list-type", "2"), ("prefix", cursor.prefix.as_str())];
    match (&cursor.token, &cursor.start_after) {
        (Some(token), _) => query.push(("continuation-token", token)),
        (None, Some(after)) => query.push(("start-after", after)),
        (None, None) => {}
    }
    query.push(("max-keys", &max));
    let url = bucket_url(&target.bucket, &query)?;
    let request = signed(target, Method::GET, url, EMPTY_SHA256, HeaderMap::new()).await?;
    let reply = success(request.send().await?).await?;
    let bytes = body(reply, PAGE_BYTES).await?;
    check_page(cursor, &bytes)
}

/// Parses a page and checks it against the cursor it was asked for with.
fn check_page(cursor: &Cursor, bytes: &[u8]) -> Result<Page, AttemptError> {
    let root = root_element(bytes);
    if root.as_deref() != Some("ListBucketResult") {
        return Err(AttemptError::Invalid(format!(
            "a listing reply whose document is {}",
            root.map_or("not XML".to_owned(), |r| format!("<{r}>"))
        )));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| AttemptError::Invalid("a listing reply that is not UTF-8".into()))?;
    let parsed: ListBucketResult = quick_xml::de::from_str(text)
        .map_err(|e| AttemptError::Invalid(format!("a listing reply that does not parse: {e}")))?;
    let mut last = cursor.last.as_deref().or(cursor.start_after.as_deref());
    for object in &parsed.contents {
        if !object.key.starts_with(&cursor.prefix) {
            return Err(AttemptError::Invalid(format!(
                "listed {:?}, which is outside the prefix {:?}",
                object.key, cursor.prefix
            )));
        }
        if let Some(last) = last {
            if object.key.as_str() <= last {
                return Err(AttemptError::Invalid(format!(
                    "listed {:?} after {last:?}: the listing does not advance in order",
                    object.key
                )));
            }
        }
        last = Some(&object.key);
    }
    let next = parsed
        .next_continuation_token
        .filter(|t| !t.is_empty() && parsed.is_truncated);
    if parsed.is_truncated {
        match &next {
            None => {
                return Err(AttemptError::Invalid(
                    "a page marked truncated without a continuation token".into(),
                ))
            }
            Some(token) if cursor.token.as_ref() == Some(token) => {
                return Err(AttemptError::Invalid(
                    "the continuation token repeats the one just used".into(),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(Page {
        objects: parsed
            .contents
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect(),
        next,
    })
}

impl Cursor {
    /// Moves past `page`.
    pub(crate) fn advance(&mut self, page: &Page) {
        if let Some((key, _)) = page.objects.last() {
            self.last = Some(key.clone());
        }
        match &page.next {
            Some(token) => self.token = Some(token.clone()),
            None => self.done = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(keys: &[&str], truncated: bool, token: Option<&str>) -> String {
        let mut xml = String::from("<?xml version=\"1.0\"?><ListBucketResult>");
        xml.push_str(&format!("<IsTruncated>{truncated}</IsTruncated>"));
        if let Some(t) = token {
            xml.push_str(&format!(
                "<NextContinuationToken>{t}</NextContinuationToken>"
            ));
        }
        for k in keys {
            xml.push_str(&format!(
                "<Contents><Key>{k}</Key><Size>3</Size></Contents>"
            ));
        }
        xml.push_str("</ListBucketResult>");
        xml
    }

    fn cursor(prefix: &str) -> Cursor {
        Cursor {
            prefix: prefix.into(),
            ..Cursor::default()
        }
    }

    fn refused(cursor: &Cursor, xml: &str) -> String {
        match check_page(cursor, xml.as_bytes()) {
            Err(AttemptError::Invalid(why)) => why,
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn pages_that_lie_are_refused() {
        let c = cursor("p/");
        let ok = check_page(&c, page(&["p/a", "p/b"], true, Some("t1")).as_bytes()).unwrap();
        assert_eq!(ok.objects.len(), 2);
        assert_eq!(ok.next.as_deref(), Some("t1"));
        assert!(refused(&c, &page(&["p/a", "q/b"], false, None)).contains("outside the prefix"));
        assert!(refused(&c, &page(&["p/b", "p/a"], false, None)).contains("does not advance"));
        assert!(refused(&c, &page(&["p/a", "p/a"], false, None)).contains("does not advance"));
        assert!(refused(&c, &page(&["p/a"], true, None)).contains("without a continuation token"));
        let mut later = c.clone();
        later.advance(&ok);
        assert!(refused(&later, &page(&["p/c"], true, Some("t1"))).contains("repeats"));
        assert!(refused(&later, &page(&["p/b", "p/c"], false, None)).contains("does not advance"));
        assert!(check_page(&later, page(&["p/c"], false, None).as_bytes()).is_ok());
        assert!(refused(&c, "<Error><Code>InternalError</Code></Error>").contains("<Error>"));
        let after = Cursor {
            start_after: Some("p/m".into()),
            ..cursor("p/")
        };
        assert!(refused(&after, &page(&["p/a"], false, None)).contains("does not advance"));
    }
}
