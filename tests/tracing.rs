//! The spans a store leaves, seen by a test subscriber: a write and a read that fails
//! NotFound on every local backend, and an S3 call retried through the fault proxy in
//! front of a real server, attempt by attempt.
#![cfg(feature = "tracing")]

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use blockstore::{BlockStore, ErrorKind, FsConfig, FsStore, MemoryStore};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// A span as the subscriber saw it: its name and every field recorded.
#[derive(Debug, Clone, Default)]
struct Seen {
    name: String,
    fields: BTreeMap<String, String>,
    parent: Option<String>,
}

/// An event as the subscriber saw it: its level and fields.
type SeenEvent = (String, BTreeMap<String, String>);

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
}

/// Collects closed spans and events.
#[derive(Clone, Default)]
struct Collect {
    spans: Arc<Mutex<BTreeMap<u64, Seen>>>,
    closed: Arc<Mutex<Vec<Seen>>>,
    events: Arc<Mutex<Vec<SeenEvent>>>,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Collect {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent().map(|p| p.name().to_owned()));
        self.spans.lock().unwrap().insert(
            id.into_u64(),
            Seen {
                name: attrs.metadata().name().to_owned(),
                fields: fields.0,
                parent,
            },
        );
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let Some(span) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            span.fields.extend(fields.0);
        }
    }
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.events
            .lock()
            .unwrap()
            .push((event.metadata().level().to_string(), fields.0));
    }
    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        if let Some(span) = self.spans.lock().unwrap().remove(&id.into_u64()) {
            self.closed.lock().unwrap().push(span);
        }
    }
}

/// Runs `f` with the collector as this thread's subscriber; the closed spans.
fn traced(f: impl FnOnce()) -> (Vec<Seen>, Vec<SeenEvent>) {
    let collect = Collect::default();
    let subscriber = tracing_subscriber::registry().with(collect.clone());
    tracing::subscriber::with_default(subscriber, f);
    let spans = collect.closed.lock().unwrap().clone();
    let events = collect.events.lock().unwrap().clone();
    (spans, events)
}

fn field<'a>(span: &'a Seen, name: &str) -> &'a str {
    span.fields
        .get(name)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no {name} in {span:?}"))
}

fn write_then_missing_read(store: &dyn BlockStore, backend: &str) {
    let (spans, _) = traced(|| {
        store
            .write_block("t/chunk-0/block-0", b"twelve bytes")
            .unwrap();
        assert_eq!(
            store.read_block("t/absent").unwrap_err().kind(),
            ErrorKind::NotFound
        );
    });
    let calls: Vec<&Seen> = spans.iter().filter(|s| s.name == "blockstore").collect();
    assert_eq!(calls.len(), 2, "{spans:?}");
    let write = calls[0];
    assert_eq!(field(write, "backend"), backend);
    assert_eq!(field(write, "op"), "write");
    assert_eq!(field(write, "key"), "t/chunk-0/block-0");
    assert_eq!(field(write, "bytes"), "12");
    assert_eq!(field(write, "outcome"), "ok");
    assert!(field(write, "elapsed_us").parse::<u64>().is_ok());
    let read = calls[1];
    assert_eq!(field(read, "op"), "read");
    assert_eq!(field(read, "key"), "t/absent");
    assert_eq!(field(read, "bytes"), "0");
    assert_eq!(field(read, "outcome"), "not_found");
}

#[test]
fn spans_of_a_write_and_a_missing_read_on_memory_and_filesystem() {
    write_then_missing_read(&MemoryStore::new(), "memory");
    let dir = tempfile::tempdir().unwrap();
    let fs = FsStore::open(FsConfig::new(dir.path())).unwrap();
    write_then_missing_read(&fs, "filesystem");
}

#[test]
fn slow_calls_are_warnings() {
    let store = MemoryStore::new();
    store.set_slow_threshold(Some(std::time::Duration::from_nanos(1)));
    let (_, events) = traced(|| store.write_block("k", b"x").unwrap());
    assert!(
        events
            .iter()
            .any(|(level, f)| level == "WARN" && f.get("message").is_some_and(|m| m == "slow call")),
        "{events:?}"
    );
    store.set_slow_threshold(None);
    let (_, events) = traced(|| store.write_block("k", b"x").unwrap());
    assert!(
        events.iter().all(|(level, _)| level != "WARN"),
        "{events:?}"
    );
}

#[cfg(feature = "s3")]
#[test]
fn an_s3_call_retried_through_the_proxy_has_a_span_per_attempt() {
    use support::proxy::Proxy;
    let proxy = Proxy::start(&support::s3::server().endpoint);
    let mut config = support::s3::config();
    let _cleanup = support::s3::Cleanup(config.clone());
    config.endpoint = proxy.endpoint();
    let store = blockstore::S3Store::open(config).unwrap();
    store.write_block("r/k", b"value").unwrap();
    proxy.fail_next_method("GET", 2, 500, "InternalError");
    let (spans, events) = traced(|| assert_eq!(store.read_block("r/k").unwrap(), b"value"));
    let attempts: Vec<&Seen> = spans.iter().filter(|s| s.name == "s3_attempt").collect();
    assert_eq!(attempts.len(), 3, "{spans:?}");
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(field(a, "attempt"), (i + 1).to_string());
        assert_eq!(field(a, "method"), "GET");
        assert_eq!(
            a.parent.as_deref(),
            Some("blockstore"),
            "nested in the call's span"
        );
    }
    assert_eq!(field(attempts[0], "status"), "500");
    assert_eq!(field(attempts[0], "request_id"), "proxy");
    assert_eq!(field(attempts[1], "status"), "500");
    assert_eq!(field(attempts[2], "status"), "ok");
    for retried in &attempts[..2] {
        let delay: u64 = field(retried, "next_delay_ms").parse().unwrap();
        assert!((1..=30_000).contains(&delay), "{retried:?}");
    }
    assert!(
        !attempts[2].fields.contains_key("next_delay_ms"),
        "the last attempt is not retried"
    );
    let call = spans.iter().find(|s| s.name == "blockstore").unwrap();
    assert_eq!(field(call, "backend"), "s3");
    assert_eq!(field(call, "outcome"), "ok");
    assert_eq!(field(call, "bytes"), "5");
    let retries: Vec<_> = events
        .iter()
        .filter(|(level, f)| level == "WARN" && f.get("cause").is_some_and(|c| c == "http_500"))
        .collect();
    assert_eq!(retries.len(), 2, "{events:?}");
    assert!(retries.iter().all(|(_, f)| f.contains_key("wait_ms")));
    let report = store.report();
    assert_eq!(report.counter("attempts"), 4, "one write, three reads");
    assert_eq!(report.counter("retries"), 2);
}

#[test]
fn the_configuration_sets_the_slow_call_threshold() {
    let config =
        blockstore::Config::from_toml_str("[block_store]\ntype = \"memory\"\nslow_call_ms = 1\n")
            .unwrap();
    let store = blockstore::open(&config).unwrap();
    for i in 0..100_000 {
        store.write_block(&format!("p/{i}"), b"").unwrap();
    }
    // Removing 100,000 keys takes well over a millisecond.
    let (_, events) = traced(|| assert_eq!(store.delete_by_prefix("p/").unwrap(), 100_000));
    let slow: Vec<_> = events
        .iter()
        .filter(|(level, f)| level == "WARN" && f.get("message").is_some_and(|m| m == "slow call"))
        .collect();
    assert_eq!(slow.len(), 1, "{events:?}");
    assert_eq!(slow[0].1["op"], "delete_prefix");
    assert_eq!(slow[0].1["backend"], "memory");
}

#[test]
fn a_scan_is_one_span_and_close_is_one_too() {
    let store = MemoryStore::new();
    for i in 0..3 {
        store.write_block(&format!("s/{i}"), b"x").unwrap();
    }
    let (spans, _) = traced(|| {
        assert_eq!(store.scan("s/", None).unwrap().count(), 3);
        store.close().unwrap();
    });
    let of = |op: &str| -> Vec<&Seen> {
        spans
            .iter()
            .filter(|s| s.name == "blockstore" && s.fields.get("op").is_some_and(|o| o == op))
            .collect()
    };
    let lists = of("list");
    assert_eq!(lists.len(), 1, "{spans:?}");
    assert_eq!(field(lists[0], "key"), "s/");
    assert_eq!(field(lists[0], "outcome"), "ok");
    let closes = of("close");
    assert_eq!(closes.len(), 1, "{spans:?}");
    assert_eq!(field(closes[0], "outcome"), "ok");
}

/// A flood of throttling is one warning (with the count), each retry at debug.
#[cfg(feature = "s3")]
#[test]
fn throttling_is_one_warning_not_one_per_retry() {
    use support::proxy::Proxy;
    let proxy = Proxy::start(&support::s3::server().endpoint);
    let mut config = support::s3::config();
    let _cleanup = support::s3::Cleanup(config.clone());
    config.endpoint = proxy.endpoint();
    let store = blockstore::S3Store::open(config).unwrap();
    store.write_block("t/k", b"x").unwrap();
    proxy.fail_next_method("GET", 4, 503, "SlowDown");
    let (_, events) = traced(|| assert_eq!(store.read_block("t/k").unwrap(), b"x"));
    let message = |level: &str, text: &str| {
        events
            .iter()
            .filter(|(l, f)| l == level && f.get("message").is_some_and(|m| m.contains(text)))
            .count()
    };
    assert_eq!(
        message("WARN", "S3 is throttling the store"),
        1,
        "{events:?}"
    );
    assert_eq!(
        message("DEBUG", "S3 request throttled; retrying"),
        4,
        "{events:?}"
    );
    assert_eq!(
        message("WARN", "S3 request failed; retrying"),
        0,
        "{events:?}"
    );
}
