//! What checksums keep of each case's speed, as ratios measured call against call:
//! each case runs pairs of calls, one with `checksums = "off"` and one with
//! `"crc32c"`, back to back (in alternating order), so whatever drifts during a run
//! (dirty pages, the page cache, the server's load) weighs on both calls of a pair
//! alike. Printed per case: the median time of each mode, and the median over pairs of
//! off / on (1.00 = free) with a 95 % bootstrap interval.
//!
//! Cases: filesystem 4 MiB writes (fsync on, off), 4 MiB reads from the page cache
//! (one at a time, and two threads at once), 4 KiB range reads at random and at
//! page-aligned offsets; S3 4 MiB PUT and GET on
//! the server `BLOCKSTORE_S3_ENDPOINT` names (e.g. RGW; else moto), and a control:
//! GETs by two groups of stores both "off", whose ratio should be 1.00.
//! `cargo bench --bench checksum_ratios [-- FILTER]`; `BLOCKSTORE_RATIO_SECS` sets
//! the time per case (default 20); `-- --test` (CI) runs one pair per case.

#[path = "../tests/support/mod.rs"]
mod support;
mod workloads;

use std::time::{Duration, Instant};

use blockstore::{BlockStore, Checksums, S3Store, BLOCK_SIZE};
use workloads::checksums::{data, fs_stores, MODES};

/// Runs `call(mode, i)` in pairs for `budget`, returning each pair's (off, on) times.
fn pairs(budget: Duration, quick: bool, mut call: impl FnMut(usize, u64)) -> Vec<(f64, f64)> {
    // Warm up: caches, connections, lazily made state.
    for i in 0..if quick { 0 } else { 4 } {
        call(0, i);
        call(1, i);
    }
    let started = Instant::now();
    let mut out = Vec::new();
    let mut i = 100u64;
    while out.is_empty() || (!quick && started.elapsed() < budget) {
        i += 1;
        let mut times = [0.0; 2];
        let order = if i.is_multiple_of(2) { [0, 1] } else { [1, 0] };
        for mode in order {
            let start = Instant::now();
            call(mode, i);
            times[mode] = start.elapsed().as_secs_f64();
        }
        out.push((times[0], times[1]));
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Prints one case's line.
fn report(name: &str, pairs: &[(f64, f64)]) {
    let off = median(pairs.iter().map(|p| p.0).collect());
    let on = median(pairs.iter().map(|p| p.1).collect());
    let ratios: Vec<f64> = pairs.iter().map(|p| p.0 / p.1).collect();
    let ratio = median(ratios.clone());
    let mut rng = fastrand::Rng::with_seed(7);
    let mut medians: Vec<f64> = (0..1000)
        .map(|_| {
            median(
                (0..ratios.len())
                    .map(|_| ratios[rng.usize(..ratios.len())])
                    .collect(),
            )
        })
        .collect();
    medians.sort_by(f64::total_cmp);
    let (low, high) = (medians[25], medians[974]);
    let unit = |s: f64| {
        if s >= 1e-3 {
            format!("{:9.3} ms", s * 1e3)
        } else {
            format!("{:9.2} µs", s * 1e6)
        }
    };
    println!(
        "{name:32} off {}  on {}  off/on {ratio:.3} [{low:.3}, {high:.3}]  ({} pairs)",
        unit(off),
        unit(on),
        pairs.len()
    );
}

/// The store of group `mode` for pair `i`.
fn pick(groups: &[Vec<S3Store>; 2], mode: usize, i: u64) -> &S3Store {
    &groups[mode][(i % 3) as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--test");
    let filter = args
        .iter()
        .find(|a| !a.starts_with('-'))
        .cloned()
        .unwrap_or_default();
    let budget = Duration::from_secs(
        std::env::var("BLOCKSTORE_RATIO_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );
    let wanted = |name: &str| name.contains(&filter);
    let block = data(BLOCK_SIZE);

    for fsync in [true, false] {
        let name = format!("fs write 4 MiB, fsync {}", if fsync { "on" } else { "off" });
        if !wanted(&name) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let stores = fs_stores(dir.path(), fsync);
        let result = pairs(budget, quick, |mode, i| {
            stores[mode]
                .1
                .write_block(&format!("w/chunk-0/block-{}", i % 64), &block)
                .unwrap()
        });
        report(&name, &result);
    }

    let dir = tempfile::tempdir().unwrap();
    let stores = fs_stores(dir.path(), false);
    let reads = [
        "fs read 4 MiB",
        "fs range 4 KiB",
        "fs range 4 KiB page-aligned",
        "fs read 4 MiB, 2 threads x 8",
    ];
    if reads.iter().any(|n| wanted(n)) {
        for (_, store) in &stores {
            for i in 0..16 {
                let key = format!("r/chunk-0/block-{i}");
                store.write_block(&key, &block).unwrap();
                store.read_block(&key).unwrap();
            }
        }
    }
    if wanted(reads[0]) {
        let result = pairs(budget, quick, |mode, i| {
            stores[mode]
                .1
                .read_block(&format!("r/chunk-0/block-{}", i % 16))
                .unwrap();
        });
        report(reads[0], &result);
    }
    if wanted(reads[3]) {
        // Two threads read eight blocks each at once: with a read in progress per CPU
        // the large-read helper stays out, so this shows what checking costs a busy
        // machine (and that the helper does not make it worse).
        let result = pairs(budget, quick, |mode, i| {
            std::thread::scope(|scope| {
                for t in 0..2 {
                    let store = &stores[mode].1;
                    scope.spawn(move || {
                        for j in 0..8 {
                            store
                                .read_block(&format!("r/chunk-0/block-{}", (i + t * 8 + j) % 16))
                                .unwrap();
                        }
                    });
                }
            });
        });
        report(reads[3], &result);
    }
    for (name, aligned) in [(reads[1], false), (reads[2], true)] {
        if !wanted(name) {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        let result = pairs(budget, quick, |mode, i| {
            let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
            let offset = if aligned {
                (x % (BLOCK_SIZE as u64 / 4096)) * 4096
            } else {
                x % (BLOCK_SIZE as u64 - 4096)
            };
            stores[mode]
                .1
                .read_block_range_into(&format!("r/chunk-0/block-{}", x % 16), offset, &mut buf)
                .unwrap();
        });
        report(name, &result);
    }

    let s3_cases = [
        "s3 PUT 4 MiB",
        "s3 GET 4 MiB",
        "s3 GET 4 MiB, off against off",
    ];
    if !s3_cases.iter().any(|c| wanted(c)) {
        return;
    }
    let base = support::s3::config();
    let _cleanup = support::s3::Cleanup(base.clone());
    // Each store has its own runtime and connections, and one instance can stay a
    // few per cent faster than another for a whole run: each mode's calls rotate
    // over three instances, and a control case sets two "off" groups against each
    // other to show what is left of that.
    let group = |mode: Checksums| -> Vec<S3Store> {
        (0..3)
            .map(|_| {
                let mut config = base.clone();
                config.checksums = mode;
                S3Store::open(config).unwrap()
            })
            .collect()
    };
    let groups = [group(MODES[0]), group(MODES[1])];
    if wanted(s3_cases[0]) {
        let result = pairs(budget, quick, |mode, i| {
            pick(&groups, mode, i)
                .write_block(
                    &format!("{}/chunk-0/block-{}", MODES[mode].as_str(), i % 8),
                    &block,
                )
                .unwrap()
        });
        report(s3_cases[0], &result);
    }
    if wanted(s3_cases[1]) || wanted(s3_cases[2]) {
        for (mode, group) in MODES.iter().zip(&groups) {
            group[0]
                .write_block(&format!("{}/get", mode.as_str()), &block)
                .unwrap();
        }
    }
    if wanted(s3_cases[1]) {
        let result = pairs(budget, quick, |mode, i| {
            pick(&groups, mode, i)
                .read_block(&format!("{}/get", MODES[mode].as_str()))
                .unwrap();
        });
        report(s3_cases[1], &result);
    }
    if wanted(s3_cases[2]) {
        let control = [group(MODES[0]), group(MODES[0])];
        let result = pairs(budget, quick, |side, i| {
            pick(&control, side, i).read_block("off/get").unwrap();
        });
        report(s3_cases[2], &result);
    }
}
