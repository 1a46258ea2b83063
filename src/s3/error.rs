//! Mapping rust-s3's errors onto error kinds, keeping only what is safe to show.
//!
//! An S3 error body can echo request details (AWS repeats the security token in some),
//! so an error keeps the HTTP status and the parsed `<Code>` and `<Message>` only.

use std::fmt;

use s3::error::S3Error;
use serde::Deserialize;

use crate::error::{Error, ErrorKind};
use crate::op::Op;

/// An S3 error reply: status, code, message and the server's request ids, never the
/// raw body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Failure {
    /// The HTTP status.
    pub status: u16,
    /// The S3 error code (`NoSuchKey`, `SlowDown`, …), empty when the reply had no body.
    pub code: String,
    /// The server's message, shortened.
    pub message: String,
    /// `x-amz-request-id` (or the body's `RequestId`): what a support case asks for.
    pub request_id: String,
    /// `x-amz-id-2`, AWS's extended request id.
    pub host_id: String,
    /// The wait the server asked for with `Retry-After`, if it did.
    pub retry_after: Option<std::time::Duration>,
    /// The bucket's region when the server says it is another one
    /// (`x-amz-bucket-region`, or the body's `<Region>`); empty otherwise.
    pub region: String,
}

impl fmt::Display for S3Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if !self.code.is_empty() {
            write!(f, " {}", self.code)?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        match (self.request_id.is_empty(), self.host_id.is_empty()) {
            (false, false) => write!(
                f,
                " (request id {}, host id {})",
                self.request_id, self.host_id
            ),
            (false, true) => write!(f, " (request id {})", self.request_id),
            (true, false) => write!(f, " (host id {})", self.host_id),
            (true, true) => Ok(()),
        }
    }
}

impl std::error::Error for S3Failure {}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(rename = "Code", default)]
    code: String,
    #[serde(rename = "Message", default)]
    message: String,
}

/// The text of the first `<name>…</name>` in `body`, unescaped: enough to read the code
/// and message of an error body that was cut at the reading limit.
fn element(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = start + body[start..].find(&format!("</{name}>"))?;
    quick_xml::escape::unescape(&body[start..end])
        .ok()
        .map(|s| s.into_owned())
}

/// A request id as it may be shown: the characters ids are made of, at most 128.
pub(crate) fn request_id(raw: &str) -> String {
    raw.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "+/=-_.".contains(*c))
        .take(128)
        .collect()
}

impl S3Failure {
    /// Parses an error reply's body, keeping only its code, message and request ids.
    pub(crate) fn parse(status: u16, body: &str) -> S3Failure {
        let parsed: ErrorBody = quick_xml::de::from_str(body).unwrap_or_else(|_| ErrorBody {
            code: element(body, "Code").unwrap_or_default(),
            message: element(body, "Message").unwrap_or_default(),
        });
        let mut shown = parsed.message.chars().filter(|c| !c.is_control());
        let mut message: String = shown.by_ref().take(200).collect();
        if shown.next().is_some() {
            message.push_str("...");
        }
        S3Failure {
            status,
            code: parsed
                .code
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(64)
                .collect(),
            message,
            request_id: element(body, "RequestId")
                .map(|id| request_id(&id))
                .unwrap_or_default(),
            host_id: element(body, "HostId")
                .map(|id| request_id(&id))
                .unwrap_or_default(),
            retry_after: None,
            region: element(body, "Region")
                .map(|r| request_id(&r))
                .unwrap_or_default(),
        }
    }

    /// Whether the reply says the bucket is addressed wrongly: another region (AWS's
    /// 301 `PermanentRedirect`, 400 `AuthorizationHeaderMalformed` naming the region,
    /// `IllegalLocationConstraintException`) or another endpoint (any 301 or 307).
    fn misaddressed(&self) -> bool {
        matches!(self.status, 301 | 307)
            || (self.status == 400
                && (self.code == "IllegalLocationConstraintException"
                    || (self.code == "AuthorizationHeaderMalformed" && !self.region.is_empty())))
    }

    /// Whether the server asked us to slow down: 429; 503 `SlowDown`, 503 with
    /// `Retry-After`, or 503 without an S3 error code (the reply to a HEAD has no body,
    /// and AWS throttles HEADs that way); or a throttling code whatever the status
    /// (`Throttling`, `RequestLimitExceeded`, … as AWS services and gateways spell it).
    pub fn is_throttle(&self) -> bool {
        self.status == 429
            || (self.status == 503 && (self.retry_after.is_some() || self.code.is_empty()))
            || matches!(
                self.code.as_str(),
                "SlowDown"
                    | "Throttling"
                    | "ThrottlingException"
                    | "ThrottledException"
                    | "RequestThrottled"
                    | "RequestLimitExceeded"
                    | "TooManyRequests"
                    | "TooManyRequestsException"
            )
    }

    /// Whether the server says the request's keys expired.
    pub(crate) fn is_expired_token(&self) -> bool {
        matches!(
            self.code.as_str(),
            "ExpiredToken" | "ExpiredTokenException" | "TokenRefreshRequired"
        )
    }

    /// Whether another attempt may succeed (the contract's retry list).
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self.status, 500 | 502 | 503 | 504 | 408 | 429)
            || (self.status == 400 && self.code == "RequestTimeout")
            || self.is_throttle()
    }

    pub(crate) fn kind(&self) -> ErrorKind {
        match (self.status, self.code.as_str()) {
            (404, "NoSuchKey") => ErrorKind::NotFound,
            (404, "NoSuchBucket") => ErrorKind::Config,
            _ if self.misaddressed() => ErrorKind::Config,
            (403, _) => ErrorKind::PermissionDenied,
            (416, _) => ErrorKind::InvalidRange,
            _ if self.is_throttle() => ErrorKind::Busy,
            (503, _) => ErrorKind::Unavailable,
            (400, "RequestTimeout") | (408, _) => ErrorKind::Timeout,
            _ => ErrorKind::Backend,
        }
    }
}

/// Whether a failed request may still have changed the store: a write or delete that
/// timed out or lost its connection may have taken effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Changes {
    /// A read: nothing changes whatever happened.
    None,
    /// A write or delete: the outcome of a failure may be unknown.
    Possible,
}

/// Where a store's requests go, as errors name it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Place {
    pub(crate) endpoint: String,
    pub(crate) bucket: String,
    pub(crate) region: String,
    /// The time limits, as timeout errors name them.
    pub(crate) request_timeout_secs: u64,
    pub(crate) deadline_secs: u64,
}

/// What one failed attempt was, before it becomes an [`Error`].
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// The server answered with an error.
    Reply(Box<S3Failure>),
    /// The endpoint could not be reached (connection refused, DNS).
    Connect(String),
    /// The attempt ran out of time.
    TimedOut,
    /// The connection failed mid-request (reset, truncated body).
    Transport(String),
    /// The reply does not match the request (a range from another offset, a listing
    /// page that does not advance, a delete reply that confirms nothing): never used
    /// as data or as success, and retried.
    Invalid(String),
    /// The endpoint's TLS certificate was refused: not retried.
    Tls(String),
    /// No keys could be had from the credential source (the message names it), and
    /// whether that may pass (the source did not answer).
    Credentials(String, bool),
    /// The store's own rate limit (after throttling, or `max_requests_per_second`)
    /// left no slot before the call's deadline: the request was never sent.
    RateLimited(f64),
    /// Anything else: not retried.
    Other(String),
}

impl From<S3Error> for AttemptError {
    fn from(e: S3Error) -> Self {
        AttemptError::from_s3(e)
    }
}

impl From<reqwest::Error> for AttemptError {
    fn from(e: reqwest::Error) -> Self {
        AttemptError::from_s3(S3Error::Reqwest(e))
    }
}

impl AttemptError {
    /// Sorts a rust-s3 error. Only the status and parsed fields of a reply are kept.
    pub(crate) fn from_s3(err: S3Error) -> AttemptError {
        match err {
            S3Error::HttpFailWithBody(status, body) => {
                AttemptError::Reply(Box::new(S3Failure::parse(status, &body)))
            }
            S3Error::HttpFail => AttemptError::Reply(Box::new(S3Failure {
                message: "request failed".into(),
                ..S3Failure::default()
            })),
            S3Error::Reqwest(e) => {
                // reqwest's message can include the URL, never credentials: keep it
                // without the URL anyway.
                let e = e.without_url();
                if e.is_timeout() {
                    AttemptError::TimedOut
                } else if e.is_connect() {
                    let why = chain(&e);
                    // A certificate refused, or an endpoint that does not speak TLS at
                    // all (rustls reads its plain HTTP reply as a corrupt record).
                    if why.contains("certificate")
                        || why.contains("InvalidContentType")
                        || why.contains("corrupt message")
                    {
                        AttemptError::Tls(why)
                    } else {
                        AttemptError::Connect(why)
                    }
                } else if e.is_builder() {
                    AttemptError::Other(chain(&e))
                } else {
                    AttemptError::Transport(chain(&e))
                }
            }
            S3Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => AttemptError::TimedOut,
            S3Error::Io(e) => AttemptError::Transport(e.to_string()),
            S3Error::Credentials(e) => AttemptError::Other(format!("credentials: {e}")),
            other => AttemptError::Other(other.to_string()),
        }
    }

    /// Whether another attempt may succeed.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            AttemptError::Reply(r) => r.is_retryable(),
            AttemptError::Connect(_) | AttemptError::TimedOut | AttemptError::Transport(_) => true,
            AttemptError::Invalid(_) => true,
            AttemptError::Tls(_)
            | AttemptError::Credentials(..)
            | AttemptError::RateLimited(_)
            | AttemptError::Other(_) => false,
        }
    }

    /// Whether the server asked us to slow down (see [`S3Failure::is_throttle`]).
    pub(crate) fn is_throttle(&self) -> bool {
        matches!(self, AttemptError::Reply(r) if r.is_throttle())
    }

    /// The wait the server asked for, if it did.
    pub(crate) fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            AttemptError::Reply(r) => r.retry_after,
            _ => None,
        }
    }

    /// What went wrong, as a metric label and a trace field: `throttled`, `http_500`,
    /// `connect`, `timeout`, `transport`, `invalid_reply`, `rate_limited`, `other`.
    pub(crate) fn cause(&self) -> &'static str {
        match self {
            _ if self.is_throttle() => "throttled",
            AttemptError::Reply(r) => match r.status {
                500 => "http_500",
                502 => "http_502",
                503 => "http_503",
                504 => "http_504",
                408 => "http_408",
                400 => "http_400",
                _ => "http_other",
            },
            AttemptError::Connect(_) => "connect",
            AttemptError::Tls(_) => "tls",
            AttemptError::Credentials(..) => "credentials",
            AttemptError::TimedOut => "timeout",
            AttemptError::Transport(_) => "transport",
            AttemptError::Invalid(_) => "invalid_reply",
            AttemptError::RateLimited(_) => "rate_limited",
            AttemptError::Other(_) => "other",
        }
    }

    /// The HTTP status of a reply, if it was one.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            AttemptError::Reply(r) => Some(r.status),
            _ => None,
        }
    }

    /// The error a caller sees for operation `op` on `key`.
    #[cfg(test)]
    pub(crate) fn into_error(self, op: Op, key: &str, changes: Changes) -> Error {
        self.into_error_at(op, key, changes, &Place::default())
    }

    /// The error a caller sees for operation `op` on `key` of the store at `place`,
    /// which errors about the endpoint or the bucket name.
    pub(crate) fn into_error_at(self, op: Op, key: &str, changes: Changes, place: &Place) -> Error {
        // Waiting longer than the deadline may well succeed.
        let retryable = self.is_retryable()
            || matches!(
                self,
                AttemptError::RateLimited(_) | AttemptError::Credentials(_, true)
            );
        let unknown = if changes == Changes::Possible {
            "; the outcome is unknown: the change may still take effect"
        } else {
            ""
        };
        let e = match self {
            AttemptError::Reply(reply) => {
                let kind = reply.kind();
                let mut e = Error::new(kind, op).with_source(S3Failure::clone(&reply));
                if reply.misaddressed() {
                    e = e.with_detail(if !reply.region.is_empty() && reply.region != place.region {
                        format!(
                            "bucket {:?} is in region {}, not {}: set block_store.s3.region = \"{}\"",
                            place.bucket, reply.region, place.region, reply.region
                        )
                    } else {
                        format!(
                            "{} sends requests for bucket {:?} elsewhere: the bucket is in another region, or needs another endpoint",
                            place.endpoint, place.bucket
                        )
                    });
                } else if kind == ErrorKind::Config && reply.code == "NoSuchBucket" {
                    e = e.with_detail(format!(
                        "bucket {:?} does not exist at {}",
                        place.bucket, place.endpoint
                    ));
                } else if kind == ErrorKind::PermissionDenied {
                    e = e.with_detail("access denied: check the credentials and the bucket policy");
                } else if kind == ErrorKind::Timeout {
                    e = e.with_detail(format!("the server timed out{unknown}"));
                } else if reply.is_throttle() {
                    e = e.with_detail(
                        "the server kept throttling until the call's deadline (operation_deadline_secs)",
                    );
                }
                e
            }
            AttemptError::Connect(why) => Error::new(ErrorKind::Unavailable, op)
                .with_detail(format!("cannot reach the endpoint {}: {why}", place.endpoint)),
            AttemptError::Tls(why) if !why.contains("certificate") => Error::new(ErrorKind::Config, op)
                .with_detail(format!(
                    "{} does not speak TLS ({why}): if it serves plain HTTP, write the endpoint with http://",
                    place.endpoint
                )),
            AttemptError::Tls(why) => Error::new(ErrorKind::Config, op).with_detail(format!(
                "the TLS certificate of {} is not trusted ({why}); for an endpoint behind a private CA, set block_store.s3.ca_file (or AWS_CA_BUNDLE) to the CA's PEM file",
                place.endpoint
            )),
            AttemptError::TimedOut => Error::new(ErrorKind::Timeout, op).with_detail(format!(
                "no answer from {} within request_timeout_secs = {} (or the call's operation_deadline_secs = {}){unknown}",
                place.endpoint, place.request_timeout_secs, place.deadline_secs
            )),
            AttemptError::Transport(why) => Error::new(ErrorKind::Backend, op)
                .with_detail(format!("connection failed: {why}{unknown}")),
            AttemptError::Invalid(why) => Error::new(ErrorKind::Backend, op).with_detail(format!(
                "the server's reply does not match the request: {why}{unknown}"
            )),
            // No keys: a permission problem, retryable when the source only failed to
            // answer (it may answer later).
            AttemptError::Credentials(why, _) => Error::new(ErrorKind::PermissionDenied, op).with_detail(why),
            AttemptError::RateLimited(rate) => Error::new(ErrorKind::Busy, op).with_detail(format!(
                "throttled: the store's request rate limit ({rate:.1}/s) left no slot before the call's deadline (operation_deadline_secs)"
            )),
            AttemptError::Other(why) => Error::new(ErrorKind::Backend, op).with_detail(why),
        };
        e.with_key(key).with_retryable(retryable)
    }
}

/// An error and its sources, as one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_keep_only_status_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message>\
                    <RequestId>1</RequestId><Token-0>FwoGZXIvYXdzEBYaSECRETTOKEN</Token-0></Error>";
        let f = AttemptError::from_s3(S3Error::HttpFailWithBody(403, body.into()));
        let e = f.into_error(Op::Read, "k", Changes::None);
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(!e.is_retryable());
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("SECRETTOKEN"), "{shown}");
        assert!(
            shown.contains("AccessDenied") && shown.contains("403"),
            "{shown}"
        );
    }

    #[test]
    fn messages_lose_control_characters_and_are_cut_at_200() {
        let parse = |message: &str| {
            let body = format!("<Error><Code>SlowDown</Code><Message>{message}</Message></Error>");
            S3Failure::parse(503, &body)
        };
        let f = parse("Please\treduce\u{7}your rate");
        assert_eq!(f.message, "Pleasereduceyour rate");
        assert_eq!(f.code, "SlowDown");
        assert_eq!(parse(&"m".repeat(200)).message, "m".repeat(200));
        assert_eq!(
            parse(&"m".repeat(201)).message,
            format!("{}...", "m".repeat(200))
        );
        assert_eq!(S3Failure::parse(502, "not xml").code, "");
    }

    #[test]
    fn display_shows_what_the_reply_had() {
        let f = |status, code: &str, message: &str| {
            S3Failure {
                status,
                code: code.into(),
                message: message.into(),
                ..S3Failure::default()
            }
            .to_string()
        };
        assert_eq!(f(502, "", ""), "HTTP 502");
        assert_eq!(f(503, "SlowDown", ""), "HTTP 503 SlowDown");
        assert_eq!(f(503, "SlowDown", "reduce"), "HTTP 503 SlowDown: reduce");
        assert_eq!(f(500, "", "oops"), "HTTP 500: oops");
    }

    #[test]
    fn io_timeouts_and_other_io_errors() {
        use std::io::{Error as IoError, ErrorKind as Io};
        let timed_out = AttemptError::from_s3(S3Error::Io(IoError::new(Io::TimedOut, "slow")));
        assert!(matches!(timed_out, AttemptError::TimedOut), "{timed_out:?}");
        let reset = AttemptError::from_s3(S3Error::Io(IoError::new(Io::ConnectionReset, "rst")));
        assert!(
            matches!(&reset, AttemptError::Transport(m) if m.contains("rst")),
            "{reset:?}"
        );
    }

    #[test]
    fn details_name_the_cause() {
        let reply = |status, code: &str, changes| {
            AttemptError::Reply(Box::new(S3Failure {
                status,
                code: code.into(),
                message: String::new(),
                ..S3Failure::default()
            }))
            .into_error(Op::Write, "k", changes)
            .to_string()
        };
        assert!(reply(404, "NoSuchBucket", Changes::None).contains("does not exist at"));
        assert!(!reply(404, "NoSuchKey", Changes::None).contains("does not exist at"));
        // Only the 404 that maps to Config says so; the same code elsewhere is a
        // server failure reported as it came.
        assert!(!reply(400, "NoSuchBucket", Changes::None).contains("does not exist at"));
        assert!(reply(403, "AccessDenied", Changes::None).contains("check the credentials"));
        assert!(!reply(500, "InternalError", Changes::None).contains("check the credentials"));
        let timeout = reply(400, "RequestTimeout", Changes::Possible);
        assert!(timeout.contains("the server timed out"), "{timeout}");
        assert!(timeout.contains("outcome is unknown"), "{timeout}");
        assert!(!reply(400, "RequestTimeout", Changes::None).contains("outcome is unknown"));
        assert!(!reply(503, "SlowDown", Changes::Possible).contains("the server timed out"));
    }

    #[test]
    fn chain_joins_every_source() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("request failed")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("connection reset"));
        assert_eq!(chain(&e), "request failed: connection reset");
    }

    #[test]
    fn retry_rules() {
        let reply = |status, code: &str| {
            AttemptError::Reply(Box::new(S3Failure {
                status,
                code: code.into(),
                message: String::new(),
                ..S3Failure::default()
            }))
        };
        for (status, code) in [
            (500, "InternalError"),
            (502, ""),
            (503, "SlowDown"),
            (504, ""),
            (408, ""),
            (429, ""),
            (400, "RequestTimeout"),
        ] {
            assert!(reply(status, code).is_retryable(), "{status} {code}");
        }
        for (status, code) in [
            (501, "NotImplemented"),
            (403, "AccessDenied"),
            (404, "NoSuchKey"),
            (416, "InvalidRange"),
            (400, "InvalidArgument"),
            (409, ""),
        ] {
            assert!(!reply(status, code).is_retryable(), "{status} {code}");
        }
        assert!(AttemptError::TimedOut.is_retryable());
        assert!(AttemptError::Connect("refused".into()).is_retryable());
        assert!(!AttemptError::Other("x".into()).is_retryable());
    }

    #[test]
    fn kinds() {
        let kind = |status, code: &str| {
            AttemptError::Reply(Box::new(S3Failure {
                status,
                code: code.into(),
                message: String::new(),
                ..S3Failure::default()
            }))
            .into_error(Op::Read, "k", Changes::None)
            .kind()
        };
        assert_eq!(kind(404, "NoSuchKey"), ErrorKind::NotFound);
        assert_eq!(kind(404, "NoSuchBucket"), ErrorKind::Config);
        assert_eq!(kind(404, ""), ErrorKind::Backend);
        assert_eq!(kind(416, "InvalidRange"), ErrorKind::InvalidRange);
        assert_eq!(kind(503, "SlowDown"), ErrorKind::Busy, "throttling");
        assert_eq!(kind(503, ""), ErrorKind::Busy, "a HEAD's 503 has no body");
        assert_eq!(kind(503, "ServiceUnavailable"), ErrorKind::Unavailable);
        assert_eq!(kind(400, "Throttling"), ErrorKind::Busy);
        assert_eq!(kind(501, "NotImplemented"), ErrorKind::Backend);
        assert_eq!(kind(429, ""), ErrorKind::Busy);
        assert_eq!(kind(408, ""), ErrorKind::Timeout);
        assert_eq!(kind(400, "RequestTimeout"), ErrorKind::Timeout);
        assert_eq!(kind(400, "InvalidArgument"), ErrorKind::Backend);
        assert_eq!(kind(403, "AccessDenied"), ErrorKind::PermissionDenied);
        let e = AttemptError::TimedOut.into_error(Op::Write, "k", Changes::Possible);
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(e.to_string().contains("outcome is unknown"), "{e}");
    }
}
