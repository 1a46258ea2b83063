//! Throttling, through a proxy in front of a real server (moto by default, RGW in CI)
//! that answers 503 SlowDown above a request rate: callers wait instead of failing,
//! `Retry-After` is honoured, throttling has a budget of its own bounded by the call's
//! deadline, and `max_requests_per_second` keeps a store under a server's limit.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use blockstore::{BlockStore, ErrorKind, S3Config, S3Store};
use support::proxy::Proxy;
use support::s3::{config, server, Cleanup};

fn via(proxy: &Proxy, tweak: impl FnOnce(&mut S3Config)) -> (S3Store, Cleanup) {
    let mut c = config();
    let cleanup = Cleanup(c.clone());
    c.endpoint = proxy.endpoint();
    tweak(&mut c);
    (S3Store::open(c).expect("open S3Store"), cleanup)
}

fn rate_throttles(proxy: &Proxy) -> usize {
    proxy
        .take_seen()
        .iter()
        .filter(|s| s.fault.as_deref() == Some("rate 503 SlowDown"))
        .count()
}

/// Sixteen threads against a server that allows 40 requests a second: every call
/// succeeds although many requests are throttled, even with `max_retries = 0`, and the
/// store ends up limiting its own rate.
#[test]
fn sixteen_threads_under_a_rate_limit_see_no_errors() {
    let proxy = Proxy::start(&server().endpoint);
    let (store, _cleanup) = via(&proxy, |c| c.max_retries = 0);
    proxy.limit_rate(Some(40.0));
    let errors = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..16 {
            let (store, errors) = (&store, &errors);
            s.spawn(move || {
                for i in 0..4 {
                    let key = format!("t{t}/b{i}");
                    let data = format!("{t}-{i}").into_bytes();
                    let ok = store.write_block(&key, &data).is_ok()
                        && store.read_block(&key).ok() == Some(data);
                    if !ok {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert_eq!(errors.load(Ordering::SeqCst), 0);
    let report = store.report();
    assert!(rate_throttles(&proxy) > 0, "the server did throttle");
    assert!(report.counter("throttled") > 0, "{report:?}");
    assert_eq!(
        report.op(blockstore::Op::Write).map(|o| o.errors.len()),
        Some(0)
    );
}

/// A 503 with `Retry-After: 2` is throttling: the read waits at least two seconds and
/// then succeeds.
#[test]
fn retry_after_is_honoured() {
    let proxy = Proxy::start(&server().endpoint);
    let (store, _cleanup) = via(&proxy, |_| {});
    store.write_block("r/k", b"value").unwrap();
    let body = "<Error><Code>ServiceUnavailable</Code><Message>busy</Message></Error>";
    proxy.reply_next_method(
        "GET",
        503,
        &["Retry-After: 2", "Content-Type: application/xml"],
        body,
    );
    let started = Instant::now();
    assert_eq!(store.read_block("r/k").unwrap(), b"value");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(store.report().counter("throttled"), 1);
}

/// A server that throttles every request: the call gives up when its deadline is spent
/// (not after `max_retries`), with a retryable `Busy` that says so.
#[test]
fn throttling_reaches_the_caller_only_when_the_deadline_is_spent() {
    let proxy = Proxy::start(&server().endpoint);
    let (store, _cleanup) = via(&proxy, |c| {
        c.max_retries = 1;
        c.operation_deadline_secs = 3;
    });
    proxy.limit_rate(Some(0.001));
    // The one request of the server's burst.
    store.write_block("d/first", b"x").unwrap();
    let started = Instant::now();
    let e = store.write_block("d/k", b"x").unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert!(e.is_retryable());
    assert!(e.to_string().contains("SlowDown"), "{e}");
    assert!(e.to_string().contains("operation_deadline_secs"), "{e}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(rate_throttles(&proxy) > 2, "retried beyond max_retries = 1");
}

/// `max_requests_per_second` keeps the whole store, all threads together, under a
/// server's limit: below it, nothing is throttled.
#[test]
fn a_fixed_rate_keeps_a_store_under_the_servers_limit() {
    let proxy = Proxy::start(&server().endpoint);
    let (store, _cleanup) = via(&proxy, |c| c.max_requests_per_second = 8);
    store.write_block("f/k", b"x").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    proxy.take_seen();
    proxy.limit_rate(Some(12.0));
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..4 {
                    store.block_size("f/k").unwrap();
                }
            });
        }
    });
    let seen = proxy.take_seen();
    assert_eq!(seen.len(), 16, "{seen:?}");
    assert!(seen.iter().all(|s| s.fault.is_none()), "{seen:?}");
    assert_eq!(store.report().counter("rate_limit"), 8);
}
