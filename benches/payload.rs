//! Signed against `UNSIGNED-PAYLOAD` writes over https: 4 MiB blocks written by four
//! threads through a TLS endpoint (tests/support/tls.rs) in front of the test server,
//! the two stores taking turns for three rounds. Prints the throughput and the CPU time
//! this process spent per GiB (the client's hashing and TLS, and the TLS endpoint's,
//! which is the same for both), best round of each.
//!
//!   BLOCKSTORE_S3_ENDPOINT=http://127.0.0.1:7480 BLOCKSTORE_S3_ACCESS_KEY=test \
//!   BLOCKSTORE_S3_SECRET_KEY=testtesttest cargo bench --bench payload
//!
//! `-- --test` (as CI runs it) writes a few blocks once.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use blockstore::{BlockStore, S3Store, BLOCK_SIZE};
use support::tls::{Ca, TlsFront};

const THREADS: usize = 4;

/// User plus system CPU time of this process so far.
fn cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Writes `blocks` blocks; returns (wall, CPU).
fn round(store: &S3Store, blocks: usize, data: &[u8]) -> (Duration, Duration) {
    let (wall, cpu0) = (Instant::now(), cpu());
    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || {
                for i in (t..blocks).step_by(THREADS) {
                    store.write_block(&format!("p/{i}"), data).expect("write");
                }
            });
        }
    });
    (wall.elapsed(), cpu() - cpu0)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    let (rounds, blocks) = if quick { (1, 8) } else { (3, 64) };
    let ca = Ca::new("payload bench CA");
    let front = TlsFront::start(&ca, &support::s3::server().endpoint);
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("CA file");
    let open = |unsigned: bool| {
        let mut c = support::s3::config();
        c.endpoint = front.endpoint();
        c.ca_file = ca_file.display().to_string();
        c.unsigned_payload = unsigned;
        let cleanup = support::s3::Cleanup(c.clone());
        (S3Store::open(c).expect("open"), cleanup)
    };
    let stores = [
        ("signed (SHA-256)", open(false)),
        ("UNSIGNED-PAYLOAD", open(true)),
    ];
    let data: Vec<u8> = (0..BLOCK_SIZE).map(|i| (i * 7 + 3) as u8).collect();
    for (_, (store, _)) in &stores {
        round(store, THREADS, &data); // connections and the server warmed up
    }
    let mut best = [(Duration::MAX, Duration::MAX); 2];
    for r in 0..rounds {
        for k in 0..2 {
            // Take turns going first.
            let i = (k + r) % 2;
            let (wall, cpu) = round(&stores[i].1 .0, blocks, &data);
            best[i] = (best[i].0.min(wall), best[i].1.min(cpu));
        }
    }
    let gib = (blocks * BLOCK_SIZE) as f64 / (1u64 << 30) as f64;
    println!(
        "payload: {THREADS} threads, {blocks} blocks of 4 MiB over https, best of {rounds} rounds"
    );
    println!("{:<18} {:>10} {:>14}", "writes", "MiB/s", "CPU s per GiB");
    for (i, (name, _)) in stores.iter().enumerate() {
        let (wall, cpu) = best[i];
        println!(
            "{name:<18} {:>10.1} {:>14.3}",
            gib * 1024.0 / wall.as_secs_f64(),
            cpu.as_secs_f64() / gib
        );
    }
}
