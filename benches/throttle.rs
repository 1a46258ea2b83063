//! Goodput under throttling: 16 threads writing and reading 4 KiB blocks through the
//! fault proxy, which lets `N` requests a second through to the real server and answers
//! 503 SlowDown above that, once with adaptive rate limiting on and once with it off.
//!
//!   cargo bench --bench throttle                  # N = 100, 30 s per run, on moto
//!   BLOCKSTORE_S3_ENDPOINT=http://127.0.0.1:7480 BLOCKSTORE_S3_ACCESS_KEY=test \
//!   BLOCKSTORE_S3_SECRET_KEY=testtesttest BLOCKSTORE_THROTTLE_RATE=200 \
//!   cargo bench --bench throttle
//!
//! `-- --test` (as CI runs it) makes each run 3 s. Goodput is calls that succeeded per
//! second; the last column is goodput over `N`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use blockstore::{BlockStore, S3Store};
use support::proxy::Proxy;

const THREADS: usize = 16;

struct Outcome {
    ok: u64,
    errors: u64,
    attempts: u64,
    throttled: u64,
    secs: f64,
    /// Latency of the counted calls, sorted.
    latencies: Vec<Duration>,
}

fn run(proxy: &Proxy, rate: f64, adaptive: bool, secs: u64) -> Outcome {
    let mut config = support::s3::config();
    let _cleanup = support::s3::Cleanup(config.clone());
    config.endpoint = proxy.endpoint();
    config.adaptive_rate = adaptive;
    let store = S3Store::open(config).expect("open S3Store");
    store.health_check().expect("S3 server reachable");
    proxy.limit_rate(Some(rate));
    let (ok, errors, stop) = (AtomicU64::new(0), AtomicU64::new(0), AtomicBool::new(false));
    let started = Instant::now();
    let mut latencies = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, ok, errors, stop) = (&store, &ok, &errors, &stop);
                s.spawn(move || {
                    let block = vec![t as u8; 4096];
                    let mut i = 0u64;
                    let mut latencies = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let call = Instant::now();
                        let key = format!("t{t}/b{}", i % 64);
                        let result = if i.is_multiple_of(2) {
                            store.write_block(&key, &block)
                        } else {
                            store
                                .read_block(&format!("t{t}/b{}", (i - 1) % 64))
                                .map(|_| ())
                        };
                        // Calls that end after the run's time are not counted.
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        latencies.push(call.elapsed());
                        match result {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                        };
                        i += 1;
                    }
                    latencies
                })
            })
            .collect();
        let trace = std::env::var_os("BLOCKSTORE_THROTTLE_TRACE").is_some();
        while started.elapsed() < Duration::from_secs(secs) {
            std::thread::sleep(Duration::from_millis(500));
            if trace {
                let r = store.report();
                eprintln!(
                    "{:>5.1} s: limit {:>4}/s, ok {:>6}, throttled {:>5}",
                    started.elapsed().as_secs_f64(),
                    r.counter("rate_limit"),
                    ok.load(Ordering::Relaxed),
                    r.counter("throttled")
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect::<Vec<_>>()
    });
    latencies.sort();
    let secs = secs as f64;
    proxy.limit_rate(None);
    let report = store.report();
    // The health check's request is not part of the run.
    Outcome {
        ok: ok.into_inner(),
        errors: errors.into_inner(),
        attempts: report.counter("attempts") - 1,
        throttled: report.counter("throttled"),
        secs,
        latencies,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    let secs = if quick { 3 } else { 30 };
    let rate: f64 = std::env::var("BLOCKSTORE_THROTTLE_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100.0);
    let proxy = Proxy::start(&support::s3::server().endpoint);
    println!(
        "throttle: {THREADS} threads, 4 KiB writes and reads, server allows {rate} requests/s, {secs} s per run"
    );
    println!(
        "{:<9} {:>7} {:>7} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "adaptive",
        "calls",
        "errors",
        "requests",
        "throttled",
        "goodput/s",
        "of limit",
        "p50",
        "p99",
        "max"
    );
    for adaptive in [true, false] {
        let o = run(&proxy, rate, adaptive, secs);
        let goodput = o.ok as f64 / o.secs;
        let at = |q: f64| {
            let i =
                ((o.latencies.len() as f64 * q) as usize).min(o.latencies.len().saturating_sub(1));
            o.latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        println!(
            "{:<9} {:>7} {:>7} {:>9} {:>10} {:>10.1} {:>8.1}% {:>7.0}ms {:>7.0}ms {:>7.0}ms",
            if adaptive { "on" } else { "off" },
            o.ok,
            o.errors,
            o.attempts,
            o.throttled,
            goodput,
            100.0 * goodput / rate,
            at(0.5),
            at(0.99),
            at(1.0)
        );
        // Let the server's bucket refill and the other run start clean.
        std::thread::sleep(Duration::from_secs(1));
    }
}
