//! The S3 backend believes no reply until it has checked it: a proxy in front of a real
//! server (moto by default, RGW in CI) answers in the ways gateways, load balancers and
//! buggy servers do — a range from another offset, a delete reply that confirms
//! nothing, a listing that repeats, cut error bodies, a huge error body, a slow server
//! against the call's deadline — and each must come out as a retry or a truthful error,
//! never as data or a reported success.

mod support;

use std::time::{Duration, Instant};

use blockstore::{BlockStore, ErrorKind, S3Config, S3Store};
use support::proxy::{Proxy, Seen};
use support::s3::{config, server, Cleanup};

/// A store that talks to the test server through `proxy`, with `tweak` applied.
fn via(proxy: &Proxy, tweak: impl FnOnce(&mut S3Config)) -> (S3Store, Cleanup) {
    let mut c = config();
    let cleanup = Cleanup(c.clone());
    c.endpoint = proxy.endpoint();
    c.max_retries = 3;
    tweak(&mut c);
    (S3Store::open(c).expect("open S3Store"), cleanup)
}

fn no_retries(c: &mut S3Config) {
    c.max_retries = 0;
}

fn methods(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .map(|s| match &s.fault {
            Some(f) => format!("{} ({f})", s.method),
            None => s.method.clone(),
        })
        .collect()
}

fn kind<T>(r: blockstore::Result<T>) -> Option<ErrorKind> {
    r.err().map(|e| e.kind())
}

/// A raw reply with these headers and body, its `Content-Length` given.
fn reply(status: &str, headers: &[&str], body: &str) -> String {
    let mut raw = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for h in headers {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    raw
}

// -------------------------------------------------------------------------------------
// 1. range replies

/// Range replies that do not match the request are retried, never returned: a 206 from
/// another offset, a 206 with fewer bytes than asked when the block is longer, a 206
/// to a whole read, a 200 with `Content-Range`, a body shorter than its `Content-Range`
/// that ends at connection close. After each, the next attempt returns the right bytes.
#[test]
fn range_replies_that_do_not_match_the_request_are_never_data() {
    let proxy = Proxy::start(&server().endpoint);
    let (store, _cleanup) = via(&proxy, |_| {});
    store.write_block("g/k", b"0123456789").unwrap();
    let wrong: [(&str, String, bool); 5] = [
        (
            "another offset",
            reply(
                "206 Partial Content",
                &["Content-Range: bytes 0-3/10"],
                "0123",
            ),
            false,
        ),
        (
            "fewer bytes than asked",
            reply(
                "206 Partial Content",
                &["Content-Range: bytes 3-4/10"],
                "34",
            ),
            false,
        ),
        (
            "a 200 with Content-Range",
            reply("200 OK", &["Content-Range: bytes 3-6/10"], "3456"),
            false,
        ),
        (
            "a body cut at close, without Content-Length",
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 3-6/10\r\n\r\n34".to_owned(),
            true,
        ),
        (
            "a 206 without Content-Range",
            reply("206 Partial Content", &[], "3456789"),
            false,
        ),
    ];
    for (what, raw, close) in wrong {
        proxy.take_seen();
        proxy.reply_raw_next("GET", None, &raw, close);
        assert_eq!(
            store.read_block_range("g/k", 3, 4).unwrap(),
            b"3456",
            "{what}"
        );
        assert_eq!(
            methods(&proxy.take_seen()),
            ["GET (canned)", "GET"],
            "{what}: retried once"
        );
    }
    proxy.reply_raw_next(
        "GET",
        None,
        &reply(
            "206 Partial Content",
            &["Content-Range: bytes 0-3/10"],
            "0123",
        ),
        false,
    );
    assert_eq!(
        store.read_block("g/k").unwrap(),
        b"0123456789",
        "a 206 to a whole read"
    );
    // With no retries left, the mismatch is a retryable error, never the bytes.
    let (strict, _c2) = via(&proxy, no_retries);
    strict.write_block("g/k", b"0123456789").unwrap();
    proxy.reply_raw_next(
        "GET",
        None,
        &reply(
            "206 Partial Content",
            &["Content-Range: bytes 0-3/10"],
            "0123",
        ),
        false,
    );
    let e = strict.read_block_range("g/k", 3, 4).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend, "{e}");
    assert!(e.is_retryable(), "{e}");
    // The request named (bytes=3-6, or the whole 64 KiB chunk around it when the
    // store reads whole chunks to check their checksums) and what came instead.
    assert!(
        e.to_string().contains("asked for bytes=")
            && e.to_string().contains("holds bytes 0-3 of 10"),
        "{e}"
    );
    // A reply that does honour the range at the end of the block is fine.
    assert_eq!(strict.read_block_range("g/k", 8, 100).unwrap(), b"89");
}

// -------------------------------------------------------------------------------------
// 2. DeleteObjects replies

fn delete_result(prefix: &str, deleted: &[&str], errors: &[(&str, &str)]) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><DeleteResult>");
    for k in deleted {
        xml.push_str(&format!("<Deleted><Key>{prefix}{k}</Key></Deleted>"));
    }
    for (k, code) in errors {
        xml.push_str(&format!(
            "<Error><Key>{prefix}{k}</Key><Code>{code}</Code><Message>m</Message></Error>"
        ));
    }
    xml.push_str("</DeleteResult>");
    xml
}

fn three_blocks(store: &S3Store) {
    for i in 0..3 {
        store.write_block(&format!("d/{i}"), b"x").unwrap();
    }
}

/// A DeleteObjects reply counts only what it confirms: an empty `<DeleteResult/>`, a
/// 200 holding `<Error>`, a reply confirming 1 of 3 keys are never "deleted 3"; with
/// retries the keys it did not confirm are sent again, without them they are reported
/// as failed, and the blocks are still there.
#[test]
fn delete_replies_count_only_what_they_confirm() {
    let proxy = Proxy::start(&server().endpoint);
    let (strict, cleanup) = via(&proxy, no_retries);
    let p = cleanup.0.key_prefix.clone();
    let cases: [(&str, String, &str); 3] = [
        (
            "an empty DeleteResult",
            delete_result(&p, &[], &[]),
            "deleted 0, failed 3",
        ),
        (
            "a 200 holding an Error",
            "<?xml version=\"1.0\"?><Error><Code>InternalError</Code><Message>x</Message></Error>"
                .to_owned(),
            "deleted 0, failed 3",
        ),
        (
            "1 of 3 confirmed",
            delete_result(&p, &["d/0"], &[]),
            "deleted 1, failed 2",
        ),
    ];
    for (what, body, says) in cases {
        three_blocks(&strict);
        proxy.reply_next_method("POST", 200, &["Content-Type: application/xml"], &body);
        let e = strict.delete_by_prefix("d/").unwrap_err();
        assert!(e.to_string().contains(says), "{what}: {e}");
        assert_eq!(
            strict.list_by_prefix("d/").unwrap().len(),
            3,
            "{what}: the blocks are all still there"
        );
    }
    // With retries, what was not confirmed is sent again and the count is exact.
    let (store, _c2) = via(&proxy, |_| {});
    let p2 = _c2.0.key_prefix.clone();
    // (reply, the keys it falsely confirms, the count then)
    let cases: [(String, &[&str], u64); 3] = [
        (delete_result(&p2, &[], &[]), &[], 3),
        (
            "<Error><Code>InternalError</Code></Error>".to_owned(),
            &[],
            3,
        ),
        (delete_result(&p2, &["d/0"], &[]), &["d/0"], 3),
    ];
    for (body, lied, count) in cases {
        three_blocks(&store);
        proxy.take_seen();
        proxy.reply_next_method("POST", 200, &["Content-Type: application/xml"], &body);
        assert_eq!(store.delete_by_prefix("d/").unwrap(), count, "{body}");
        // A key the reply names as deleted is taken at its word; every other key was
        // sent again and is gone.
        assert_eq!(store.list_by_prefix("d/").unwrap(), lied, "{body}");
        let seen = methods(&proxy.take_seen());
        assert_eq!(
            seen.iter().filter(|m| m.starts_with("POST")).count(),
            2,
            "{seen:?}"
        );
        store.delete_by_prefix("d/").unwrap();
    }
}

/// Four errors for three keys, and confirmations of keys never sent: the count stays
/// within what was sent and never wraps.
#[test]
fn delete_replies_with_more_answers_than_keys_never_wrap() {
    let proxy = Proxy::start(&server().endpoint);
    let (store, cleanup) = via(&proxy, no_retries);
    let p = cleanup.0.key_prefix.clone();
    three_blocks(&store);
    let body = delete_result(
        &p,
        &["other/1", "other/2"],
        &[
            ("d/0", "AccessDenied"),
            ("d/0", "AccessDenied"),
            ("d/0", "AccessDenied"),
            ("d/0", "AccessDenied"),
        ],
    );
    proxy.reply_next_method("POST", 200, &["Content-Type: application/xml"], &body);
    let e = store.delete_by_prefix("d/").unwrap_err();
    let shown = e.to_string();
    assert!(shown.contains("deleted 0, failed 3"), "{shown}");
    assert!(!shown.contains("18446744073709551615"), "{shown}");
    assert_eq!(
        e.kind(),
        ErrorKind::PermissionDenied,
        "the first failure's kind: {e}"
    );
}

// -------------------------------------------------------------------------------------
// 3. listings

fn page(prefix: &str, keys: &[&str], truncated: bool, token: Option<&str>) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult>");
    xml.push_str(&format!("<IsTruncated>{truncated}</IsTruncated>"));
    if let Some(t) = token {
        xml.push_str(&format!(
            "<NextContinuationToken>{t}</NextContinuationToken>"
        ));
    }
    for k in keys {
        xml.push_str(&format!(
            "<Contents><Key>{prefix}{k}</Key><Size>1</Size></Contents>"
        ));
    }
    xml.push_str("</ListBucketResult>");
    xml
}

/// A listing that would loop (a token that repeats, a page that goes back), one that
/// claims more pages without a token, and one with keys outside the prefix are errors,
/// quickly; a prefix delete over such a listing deletes nothing outside the prefix.
#[test]
fn listings_that_lie_are_errors_and_delete_nothing_outside_the_prefix() {
    let proxy = Proxy::start(&server().endpoint);
    let (store, cleanup) = via(&proxy, no_retries);
    let p = cleanup.0.key_prefix.clone();
    for key in ["a/1", "ab/1", "b/1"] {
        store.write_block(key, b"x").unwrap();
    }
    let list = "list-type=2";
    // The same token again: the page is not new.
    proxy.reply_next_n(1, "GET", list, 200, &page(&p, &["a/1"], true, Some("T1")));
    proxy.reply_next_n(1, "GET", list, 200, &page(&p, &["a/2"], true, Some("T1")));
    let started = Instant::now();
    let e = store.list_by_prefix("a/").unwrap_err();
    assert!(e.to_string().contains("repeats"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A page that goes back.
    proxy.reply_next_n(1, "GET", list, 200, &page(&p, &["a/5"], true, Some("T1")));
    proxy.reply_next_n(1, "GET", list, 200, &page(&p, &["a/4"], false, None));
    let e = store.list_by_prefix("a/").unwrap_err();
    assert!(e.to_string().contains("does not advance"), "{e}");
    // Truncated without a token: not the end of the listing.
    proxy.reply_next_n(1, "GET", list, 200, &page(&p, &["a/1"], true, None));
    let e = store.list_by_prefix("a/").unwrap_err();
    assert!(
        e.to_string().contains("without a continuation token"),
        "{e}"
    );
    proxy.reply_next_n(1, "GET", list, 200, &page(&p, &["a/1"], true, None));
    assert!(
        store.delete_by_prefix("a/").is_err(),
        "a cut listing is not a finished delete"
    );
    // A server that ignores `prefix=`.
    proxy.reply_next_n(
        1,
        "GET",
        list,
        200,
        &page(&p, &["a/1", "ab/1", "b/1"], false, None),
    );
    let e = store.delete_by_prefix("a/").unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(e.to_string().contains("outside the prefix"), "{e}");
    assert_eq!(
        store.list_by_prefix("").unwrap(),
        vec!["a/1", "ab/1", "b/1"]
    );
    // And the honest listing after all that.
    assert_eq!(store.delete_by_prefix("a/").unwrap(), 1);
    assert_eq!(store.list_by_prefix("").unwrap(), vec!["ab/1", "b/1"]);
}

// -------------------------------------------------------------------------------------
// 4. one deadline per call

/// `operation_deadline_secs` bounds a whole call, however many requests it makes: a
/// prefix delete that falls back to one request per key, a 12-page listing, a HEAD 404
/// followed by the bucket check.
#[test]
fn one_deadline_bounds_every_request_of_a_call() {
    let proxy = Proxy::start(&server().endpoint);
    let deadline = |c: &mut S3Config| {
        c.operation_deadline_secs = 3;
        c.request_timeout_secs = 3;
    };
    let (store, cleanup) = via(&proxy, deadline);
    let p = cleanup.0.key_prefix.clone();
    for i in 0..12 {
        store.write_block(&format!("s/{i:02}"), b"x").unwrap();
    }
    let within = |what: &str, started: Instant| {
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(3900),
            "{what} took {took:?} against a 3 s deadline"
        );
    };
    // Single deletes, each 0.6 s: 7.2 s in all without one deadline.
    proxy.fail_next_method("POST", 1, 501, "NotImplemented");
    proxy.delay_each_response(Some(Duration::from_millis(600)));
    let started = Instant::now();
    let e = store.delete_by_prefix("s/").unwrap_err();
    within("a prefix delete", started);
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(
        e.to_string().contains("before this"),
        "says how far it got: {e}"
    );
    // Twelve listing pages of 0.6 s each.
    for n in 0..12 {
        let token = format!("T{n}");
        let last = n == 11;
        let body = page(
            &p,
            &[&format!("s/{n:02}")],
            !last,
            (!last).then_some(token.as_str()),
        );
        proxy.reply_next_n(1, "GET", "list-type=2", 200, &body);
    }
    let started = Instant::now();
    let e = store.list_by_prefix("s/").unwrap_err();
    within("a 12-page listing", started);
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    proxy.take_seen();
    proxy.delay_each_response(None);
    // A HEAD 404 (2 s) then the bucket check (2 s).
    proxy.delay_each_response(Some(Duration::from_secs(2)));
    let (fresh, _c) = via(&proxy, deadline);
    let started = Instant::now();
    let e = fresh.block_size("absent/k").unwrap_err();
    within("block_size of a missing key", started);
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    proxy.delay_each_response(None);
}

// -------------------------------------------------------------------------------------
// 5. error replies

/// An error reply whose body is cut keeps nobody from the truth: it is a transport
/// failure, retried, so a missing key is still NotFound and a cut 400 RequestTimeout is
/// retried. A 503 with a 256 MiB body is not read whole.
#[test]
fn cut_and_huge_error_bodies_are_retried() {
    let proxy = Proxy::start(&server().endpoint);
    let (store, _cleanup) = via(&proxy, |_| {});
    proxy.reply_raw_next(
        "GET",
        None,
        "HTTP/1.1 404 Not Found\r\nContent-Length: 200\r\n\r\n<Error><Code>NoSu",
        true,
    );
    assert_eq!(
        kind(store.read_block("missing/k")),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(methods(&proxy.take_seen()), ["GET (canned)", "GET"]);
    store.write_block("c/k", b"value").unwrap();
    proxy.take_seen();
    proxy.reply_raw_next(
        "GET",
        None,
        "HTTP/1.1 400 Bad Request\r\nContent-Length: 300\r\n\r\n<Error><Code>RequestTimeout</Code><Mess",
        true,
    );
    assert_eq!(store.read_block("c/k").unwrap(), b"value");
    assert_eq!(methods(&proxy.take_seen()), ["GET (canned)", "GET"]);
    proxy.huge_error_next("GET", 503, 256 << 20);
    assert_eq!(store.read_block("c/k").unwrap(), b"value");
    let taken = proxy.streamed();
    assert!(
        taken < 32 << 20,
        "the client took {taken} bytes of a 256 MiB error body"
    );
}

// -------------------------------------------------------------------------------------
// 6. servers without DeleteObjects

/// GCS's XML API answers DeleteObjects with 400 NotImplemented: the store falls back to
/// one delete per key, as for a 501, and remembers. `batch_delete = false` never tries.
#[test]
fn gcs_not_implemented_and_batch_delete_off_use_single_deletes() {
    let proxy = Proxy::start(&server().endpoint);
    let (store, _cleanup) = via(&proxy, |_| {});
    three_blocks(&store);
    proxy.take_seen();
    proxy.fail_next_method("POST", 1, 400, "NotImplemented");
    assert_eq!(store.delete_by_prefix("d/").unwrap(), 3);
    assert_eq!(
        methods(&proxy.take_seen()),
        [
            "GET",
            "POST (400 NotImplemented)",
            "DELETE",
            "DELETE",
            "DELETE"
        ]
    );
    three_blocks(&store);
    proxy.take_seen();
    assert_eq!(store.delete_by_prefix("d/").unwrap(), 3);
    assert_eq!(
        methods(&proxy.take_seen()),
        ["GET", "DELETE", "DELETE", "DELETE"]
    );
    let (off, _c2) = via(&proxy, |c| c.batch_delete = false);
    three_blocks(&off);
    proxy.take_seen();
    assert_eq!(off.delete_by_prefix("d/").unwrap(), 3);
    assert_eq!(
        methods(&proxy.take_seen()),
        ["GET", "DELETE", "DELETE", "DELETE"]
    );
    // Another 400 is an answer, not a reason to give up DeleteObjects.
    let (other, _c3) = via(&proxy, no_retries);
    three_blocks(&other);
    proxy.fail_next_method("POST", 1, 400, "MalformedXML");
    assert!(other.delete_by_prefix("d/").is_err());
    proxy.take_seen();
    assert_eq!(other.delete_by_prefix("d/").unwrap(), 3);
    assert_eq!(methods(&proxy.take_seen()), ["GET", "POST"]);
}

// -------------------------------------------------------------------------------------
// 7. HEAD 404 and the bucket

/// A HEAD 404 costs a bucket check once per store, not per probe; a `NoSuchBucket`
/// anywhere makes the next HEAD 404 check again; a bucket check the credentials may not
/// make leaves a HEAD 404 as NotFound; a HEAD 403 says it may be a missing key.
#[test]
fn head_404_checks_the_bucket_once_per_store() {
    let proxy = Proxy::start(&server().endpoint);
    let (store, _cleanup) = via(&proxy, |_| {});
    proxy.take_seen();
    for i in 0..3 {
        assert_eq!(
            kind(store.block_size(&format!("absent/{i}"))),
            Some(ErrorKind::NotFound)
        );
    }
    assert_eq!(methods(&proxy.take_seen()), ["HEAD", "GET", "HEAD", "HEAD"]);
    // The bucket went away (as far as a read can tell): the next HEAD 404 checks again.
    proxy.fail_next_method("GET", 1, 404, "NoSuchBucket");
    assert_eq!(kind(store.read_block("absent/k")), Some(ErrorKind::Config));
    proxy.take_seen();
    assert_eq!(
        kind(store.block_size("absent/k")),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(methods(&proxy.take_seen()), ["HEAD", "GET"]);
    // A role without s3:ListBucket on a server that answers the HEAD with 404.
    let (denied, _c2) = via(&proxy, |_| {});
    proxy.fail_next_method("GET", 1, 403, "AccessDenied");
    assert_eq!(
        kind(denied.block_size("absent/k")),
        Some(ErrorKind::NotFound)
    );
    proxy.take_seen();
    assert_eq!(
        kind(denied.block_size("absent/k2")),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(methods(&proxy.take_seen()), ["HEAD"]);
    // Only NoSuchBucket on the check means the bucket is gone; another 404 there is a
    // server failure, not a configuration error.
    let (odd, _c3) = via(&proxy, |_| {});
    proxy.fail_next_method("GET", 1, 404, "NoSuchUpload");
    assert_eq!(kind(odd.block_size("absent/k")), Some(ErrorKind::Backend));
    proxy.fail_next_method("GET", 1, 404, "NoSuchBucket");
    assert_eq!(kind(odd.block_size("absent/k")), Some(ErrorKind::Config));
    // AWS answers a HEAD of a missing key with 403 when the caller may not list.
    proxy.fail_next_method("HEAD", 1, 403, "AccessDenied");
    let e = store.block_size("absent/k").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert!(e.to_string().contains("missing key"), "{e}");
}
