//! blockstore against object_store, the same workloads alternating in one process.
//!
//!   cargo run --release -- fs DIR [ROUNDS]
//!   cargo run --release -- s3 ENDPOINT BUCKET [ROUNDS]    (credentials test / testtesttest)
//!   cargo run --release -- s3-scale ENDPOINT BUCKET [N]   (listing and prefix-deleting N keys)
//!
//! Each round runs every workload twice, once per client, the client that goes first
//! alternating between rounds. The report gives, per workload, both rates and the
//! median ratio ours/theirs with its spread (min..max over rounds).

use std::sync::Arc;
use std::time::Instant;

use blockstore::{BlockStore, FsConfig, FsStore, S3Config, S3Store};
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

const MIB4: usize = 4 << 20;

/// One workload: `n` operations at concurrency `c`, moving `bytes` each.
#[derive(Clone, Copy)]
struct Load {
    name: &'static str,
    op: Op,
    n: usize,
    c: usize,
    size: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Put,
    Get,
    Range,
}

fn data(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i as u64).wrapping_mul(0x9E37_79B9) as u8).collect()
}

fn offset(i: usize, size: usize, len: usize) -> u64 {
    let mut x = i as u64 + 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x % (size - len) as u64
}

/// Ours: `c` threads share one store, taking the next operation from a counter.
fn run_ours(store: &Arc<dyn BlockStore>, load: Load, prefix: &str) -> f64 {
    let payload = Arc::new(data(load.size));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..load.c {
            let (store, payload, next) = (store.clone(), payload.clone(), next.clone());
            s.spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= load.n {
                    return;
                }
                let key = format!("{prefix}/o{}", i % 64);
                match load.op {
                    Op::Put => store.write_block(&key, &payload).unwrap(),
                    Op::Get => assert_eq!(store.read_block(&key).unwrap().len(), load.size),
                    Op::Range => {
                        let off = offset(i, MIB4, load.size);
                        assert_eq!(store.read_block_range(&key, off, load.size as u64).unwrap().len(), load.size);
                    }
                }
            });
        }
    });
    load.n as f64 / started.elapsed().as_secs_f64()
}

/// Theirs: `c` concurrent futures on a tokio runtime.
fn run_theirs(rt: &tokio::runtime::Runtime, store: &Arc<dyn ObjectStore>, load: Load, prefix: &str) -> f64 {
    let payload = Bytes::from(data(load.size));
    let started = Instant::now();
    rt.block_on(async {
        stream::iter(0..load.n)
            .for_each_concurrent(load.c, |i| {
                let (store, payload) = (store.clone(), payload.clone());
                let path = ObjPath::from(format!("{prefix}/o{}", i % 64));
                async move {
                    match load.op {
                        Op::Put => {
                            store.put(&path, PutPayload::from(payload)).await.unwrap();
                        }
                        Op::Get => {
                            let b = store.get(&path).await.unwrap().bytes().await.unwrap();
                            assert_eq!(b.len(), load.size);
                        }
                        Op::Range => {
                            let off = offset(i, MIB4, load.size);
                            let b = store.get_range(&path, off..off + load.size as u64).await.unwrap();
                            assert_eq!(b.len(), load.size);
                        }
                    }
                }
            })
            .await;
    });
    load.n as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// This process's resident memory, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Writes `n` 16-byte objects under `prefix` with 32 threads (through ours: the
/// seeding is not measured).
fn seed(store: &Arc<dyn BlockStore>, prefix: &str, n: usize) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..32 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                store.write_block(&format!("{prefix}k{i:07}"), b"0123456789abcdef").unwrap();
            });
        }
    });
}

/// Listing and deleting by prefix at scale, on S3: ours (a streaming scan,
/// delete_by_prefix) against object_store (`list`, `delete_stream` of that listing).
fn scale(rt: &tokio::runtime::Runtime, ours: &Arc<dyn BlockStore>, theirs: &Arc<dyn ObjectStore>, n: usize) {
    use futures::TryStreamExt;
    let list_prefix = "peer-scale/list/";
    let _ = ours.delete_by_prefix("peer-scale/");
    let t = Instant::now();
    seed(ours, list_prefix, n);
    println!("seeded {n} keys in {:.1} s", t.elapsed().as_secs_f64());
    println!("{:<22} {:>10} {:>10} {:>8} {:>12} {:>12}", "workload", "ours s", "theirs s", "ratio", "ours RSS+", "theirs RSS+");
    let (mut ratios, mut o_best, mut t_best) = (Vec::new(), f64::MAX, f64::MAX);
    let (mut o_rss, mut t_rss) = (0f64, 0f64);
    for round in 0..3 {
        let run_ours = || {
            let before = rss_mib();
            let t = Instant::now();
            let mut count = 0;
            let mut peak = before;
            for b in ours.scan(list_prefix, None).unwrap() {
                b.unwrap();
                count += 1;
                if count % 10_000 == 0 {
                    peak = peak.max(rss_mib());
                }
            }
            assert_eq!(count, n);
            (t.elapsed().as_secs_f64(), peak - before)
        };
        let run_theirs = || {
            let before = rss_mib();
            let t = Instant::now();
            let (count, peak) = rt.block_on(async {
                let mut s = theirs.list(Some(&ObjPath::from(list_prefix)));
                let (mut count, mut peak) = (0usize, before);
                while let Some(m) = s.try_next().await.unwrap() {
                    let _ = m;
                    count += 1;
                    if count % 10_000 == 0 {
                        peak = peak.max(rss_mib());
                    }
                }
                (count, peak)
            });
            assert_eq!(count, n);
            (t.elapsed().as_secs_f64(), peak - before)
        };
        let ((o, orss), (th, trss)) = if round % 2 == 0 {
            let a = run_ours();
            (a, run_theirs())
        } else {
            let b = run_theirs();
            (run_ours(), b)
        };
        ratios.push(th / o);
        o_best = o_best.min(o);
        t_best = t_best.min(th);
        o_rss = o_rss.max(orss);
        t_rss = t_rss.max(trss);
    }
    println!("{:<22} {:>10.2} {:>10.2} {:>7.2}x {:>9.1} MiB {:>9.1} MiB", format!("list {n}"), o_best, t_best, median(ratios), o_rss, t_rss);
    // Prefix deletes: each client deletes its own copy; theirs goes first.
    let (ours_del, theirs_del) = ("peer-scale/del-ours/", "peer-scale/del-theirs/");
    seed(ours, ours_del, n);
    seed(ours, theirs_del, n);
    let before = rss_mib();
    let t = Instant::now();
    let deleted = rt.block_on(async {
        let locations = theirs
            .list(Some(&ObjPath::from(theirs_del)))
            .map_ok(|m| m.location)
            .boxed();
        theirs.delete_stream(locations).try_collect::<Vec<_>>().await.unwrap().len()
    });
    let (th, trss) = (t.elapsed().as_secs_f64(), rss_mib() - before);
    assert_eq!(deleted, n);
    let before = rss_mib();
    let t = Instant::now();
    assert_eq!(ours.delete_by_prefix(ours_del).unwrap(), n as u64);
    let (o, orss) = (t.elapsed().as_secs_f64(), rss_mib() - before);
    println!("{:<22} {:>10.2} {:>10.2} {:>7.2}x {:>9.1} MiB {:>9.1} MiB", format!("delete_by_prefix {n}"), o, th, th / o, orss, trss);
    let _ = ours.delete_by_prefix("peer-scale/");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if args.get(1).map(String::as_str) == Some("s3-scale") {
        let (endpoint, bucket) = (&args[2], &args[3]);
        let n = args.get(4).and_then(|r| r.parse().ok()).unwrap_or(100_000);
        let mut c = S3Config::new(bucket.as_str());
        c.endpoint = endpoint.clone();
        c.force_path_style = true;
        c.key_prefix = String::new();
        c.access_key_id = "test".into();
        c.secret_access_key = "testtesttest".into();
        let ours: Arc<dyn BlockStore> = Arc::new(S3Store::open(c).unwrap());
        let theirs: Arc<dyn ObjectStore> = Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(endpoint)
                .with_bucket_name(bucket)
                .with_region("us-east-1")
                .with_access_key_id("test")
                .with_secret_access_key("testtesttest")
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false)
                .build()
                .unwrap(),
        );
        scale(&rt, &ours, &theirs, n);
        return;
    }
    let (ours, theirs, loads, rounds): (Arc<dyn BlockStore>, Arc<dyn ObjectStore>, Vec<Load>, usize) = match args.get(1).map(String::as_str) {
        Some("fs") => {
            let dir = std::path::PathBuf::from(&args[2]);
            let (a, b) = (dir.join("ours"), dir.join("theirs"));
            std::fs::create_dir_all(&b).unwrap();
            let ours = FsStore::open(FsConfig::new(&a)).unwrap(); // fsync on: the default
            let theirs = LocalFileSystem::new_with_prefix(&b).unwrap().with_fsync(true);
            let loads = vec![
                Load { name: "put 4 MiB", op: Op::Put, n: 64, c: 1, size: MIB4 },
                Load { name: "get 4 MiB", op: Op::Get, n: 64, c: 1, size: MIB4 },
                Load { name: "range 4 KiB", op: Op::Range, n: 5000, c: 1, size: 4096 },
            ];
            (Arc::new(ours), Arc::new(theirs), loads, args.get(3).and_then(|r| r.parse().ok()).unwrap_or(5))
        }
        Some("s3") => {
            let (endpoint, bucket) = (&args[2], &args[3]);
            let mut c = S3Config::new(bucket.as_str());
            c.endpoint = endpoint.clone();
            c.force_path_style = true;
            c.key_prefix = String::new();
            c.access_key_id = "test".into();
            c.secret_access_key = "testtesttest".into();
            let ours = S3Store::open(c).unwrap();
            let theirs = AmazonS3Builder::new()
                .with_endpoint(endpoint)
                .with_bucket_name(bucket)
                .with_region("us-east-1")
                .with_access_key_id("test")
                .with_secret_access_key("testtesttest")
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false)
                .build()
                .unwrap();
            let loads = vec![
                Load { name: "put 4 MiB c=1", op: Op::Put, n: 32, c: 1, size: MIB4 },
                Load { name: "get 4 MiB c=1", op: Op::Get, n: 32, c: 1, size: MIB4 },
                Load { name: "range 1 KiB c=1", op: Op::Range, n: 300, c: 1, size: 1024 },
                Load { name: "put 4 MiB c=16", op: Op::Put, n: 64, c: 16, size: MIB4 },
                Load { name: "get 4 MiB c=16", op: Op::Get, n: 64, c: 16, size: MIB4 },
                Load { name: "range 1 KiB c=16", op: Op::Range, n: 1000, c: 16, size: 1024 },
            ];
            (Arc::new(ours), Arc::new(theirs), loads, args.get(4).and_then(|r| r.parse().ok()).unwrap_or(5))
        }
        _ => {
            eprintln!("usage: blockstore-peer fs DIR [ROUNDS] | s3 ENDPOINT BUCKET [ROUNDS] | s3-scale ENDPOINT BUCKET [N]");
            std::process::exit(2);
        }
    };
    // Objects for the reads: every key both clients read, written by each to its own prefix.
    let seed = Load { name: "seed", op: Op::Put, n: 64, c: 4, size: MIB4 };
    run_ours(&ours, seed, "peer-ours");
    run_theirs(&rt, &theirs, seed, "peer-theirs");

    println!("{:<18} {:>12} {:>12} {:>8} {:>16}", "workload", "ours ops/s", "theirs ops/s", "ratio", "spread");
    for load in loads {
        let (mut o, mut t, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let (a, b) = if round % 2 == 0 {
                let a = run_ours(&ours, load, "peer-ours");
                (a, run_theirs(&rt, &theirs, load, "peer-theirs"))
            } else {
                let b = run_theirs(&rt, &theirs, load, "peer-theirs");
                (run_ours(&ours, load, "peer-ours"), b)
            };
            o.push(a);
            t.push(b);
            ratios.push(a / b);
        }
        let (lo, hi) = ratios.iter().fold((f64::MAX, f64::MIN), |(l, h), &r| (l.min(r), h.max(r)));
        println!("{:<18} {:>12.1} {:>12.1} {:>7.2}x {:>7.2}..{:<7.2}", load.name, median(o), median(t), median(ratios), lo, hi);
    }
}
