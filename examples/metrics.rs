//! Serves a store's metrics to Prometheus: `blockstore_calls_total`,
//! `blockstore_errors_total`, bytes, latency, calls in flight, S3 attempts, retries and
//! throttling, the pool's queue.
//!
//! ```text
//! cargo run -p blockstore-examples --features metrics --example metrics -- [STORE.toml|-] [127.0.0.1:9100]
//! curl -s http://127.0.0.1:9100/metrics | grep blockstore_
//! ```
//!
//! It opens the store (a memory store for `-` or no argument), makes a few calls so
//! there is something to see, prints `ready`, and serves until it is killed, as a
//! daemon would.

use std::net::SocketAddr;

use blockstore::Config;
use metrics_exporter_prometheus::PrometheusBuilder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let config = match args.next() {
        Some(path) if path != "-" => Config::load(path)?,
        _ => Config::from_toml_str("[block_store]\ntype = \"memory\"\n")?,
    };
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:9100").parse()?;
    // The exporter is the recorder: every store opened after this reports to it.
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()?;
    let store = config.open()?.store();
    for i in 0..10 {
        store.write_block(&format!("demo/chunk-0/block-{i}"), &[i as u8; 1000])?;
        store.read_block(&format!("demo/chunk-0/block-{i}"))?;
    }
    let _ = store.read_block("demo/missing");
    println!("ready");
    // The exporter serves from its own thread; this one only keeps the process alive.
    loop {
        std::thread::park();
    }
}
