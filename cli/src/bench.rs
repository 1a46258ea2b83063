//! `bench`: measure the configured store (default: a filesystem store in a temporary
//! directory) under a unique prefix that is removed afterwards.
//!
//! Each phase runs its operations on `--workers` threads and records every latency. For
//! the filesystem and memory backends the same work is also done "bare" in the same run
//! (the same system calls without the store, or a plain memory copy), and the table
//! shows the store's speed as a ratio of that baseline.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use blockstore::{block_key, BackendKind, BlockStore, Config};
use indicatif::{ProgressBar, ProgressStyle};

use crate::common::{load_config, open, parse_size, Create, Failure, Output};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Threads issuing operations at once.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Blocks to write, read and delete.
    #[arg(long, default_value_t = 64)]
    blocks: usize,
    /// Size of each block (e.g. 4096, 64K, 1M, 4M).
    #[arg(long, default_value = "4M", value_parser = parse_size)]
    block_size: usize,
}

/// Set by SIGINT or SIGTERM: every phase stops at its next operation.
static STOP: AtomicBool = AtomicBool::new(false);

/// Exit code of a run stopped by a signal (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

fn interrupted() -> Failure {
    Failure {
        code: EXIT_INTERRUPTED,
        message: "bench: interrupted".into(),
    }
}

/// One phase's measurements.
struct Phase {
    name: String,
    ops: usize,
    bytes: u64,
    wall: Duration,
    latencies: Vec<Duration>,
}

impl Phase {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / (1 << 20) as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank =
            ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1]
    }
}

/// Runs `op(i)` for `i` in `0..n` on `workers` threads; `op` returns the bytes it moved.
fn measure<F>(name: &str, n: usize, workers: usize, show: bool, op: F) -> Result<Phase, Failure>
where
    F: Fn(usize) -> Result<u64, Failure> + Sync,
{
    let bar = if show {
        let bar = ProgressBar::new(n as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg:>16} [{bar:30}] {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(name.to_owned());
        bar
    } else {
        ProgressBar::hidden()
    };
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let results: Vec<Result<(Vec<Duration>, u64), Failure>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut latencies = Vec::with_capacity(n / workers.max(1) + 1);
                    let mut bytes = 0;
                    loop {
                        if STOP.load(Ordering::Relaxed) {
                            return Err(interrupted());
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok((latencies, bytes));
                        }
                        let t = Instant::now();
                        bytes += op(i)?;
                        latencies.push(t.elapsed());
                        bar.inc(1);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Failure::invalid("bench: a worker panicked")))
            })
            .collect()
    });
    let wall = started.elapsed();
    bar.finish_and_clear();
    let mut latencies = Vec::with_capacity(n);
    let mut bytes = 0;
    for r in results {
        let (l, b) = r?;
        latencies.extend(l);
        bytes += b;
    }
    latencies.sort_unstable();
    Ok(Phase {
        name: name.to_owned(),
        ops: n,
        bytes,
        wall,
        latencies,
    })
}

/// The same work without the store, for the ratio column.
enum Bare {
    /// A scratch directory on the store's filesystem, and whether to sync. Bare files
    /// sit at the same relative paths as the store's blocks, so both walk the same
    /// number of directories.
    Fs {
        dir: PathBuf,
        fsync: bool,
    },
    /// Plain memory copies.
    Memory,
    None,
}

fn bare_write(path: &Path, data: &[u8], fsync: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(path);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut f = File::options().write(true).create_new(true).open(&tmp)?;
    f.write_all(data)?;
    if fsync {
        f.sync_data()?;
    }
    drop(f);
    std::fs::rename(&tmp, path)?;
    if fsync {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Every file under `dir`, as sorted paths relative to `root`: what a listing returns.
fn bare_list(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            bare_list(root, &entry.path(), out)?;
        } else {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

pub fn run(config: Option<&Path>, out: &Output, args: Args) -> Result<(), Failure> {
    if args.workers == 0 || args.blocks == 0 || args.block_size == 0 {
        return Err(Failure::invalid(
            "bench: --workers, --blocks and --block-size must be at least 1",
        ));
    }
    if args.block_size > blockstore::BLOCK_SIZE {
        return Err(Failure::invalid(format!(
            "bench: --block-size is larger than a block ({} bytes)",
            blockstore::BLOCK_SIZE
        )));
    }
    let explicit =
        config.is_some() || std::env::var_os("BLOCKSTORE_CONFIG").is_some_and(|v| !v.is_empty());
    // Without a configuration, a filesystem store in a temporary folder (removed at the
    // end); with one, nothing outside the configured store.
    let temp = if explicit {
        None
    } else {
        Some(tempfile::tempdir().map_err(|e| Failure::io("bench: temporary directory", e))?)
    };
    let config = match &temp {
        None => load_config(config)?,
        Some(temp) => Config::filesystem(temp.path().join("store")),
    };
    // Ctrl-C or SIGTERM: stop at the next operation, then clean up as below.
    let _ = ctrlc::set_handler(|| STOP.store(true, Ordering::Relaxed));
    let store: Arc<dyn BlockStore> = open(&config, Create::IfMissing)?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let run_id = format!("bench-{}-{nanos:x}", std::process::id());
    let prefix = format!("{run_id}/");
    let bare = match (config.block_store.backend, &config.block_store.filesystem) {
        (BackendKind::Filesystem, Some(fs)) => {
            // Inside the store's internal area (same filesystem, never a key, left alone
            // by the store), never beside base_path.
            let area = fs.base_path.join(".blockstore");
            remove_abandoned_bare(&area);
            let dir = area.join(&run_id);
            std::fs::create_dir_all(&dir).map_err(|e| {
                Failure::io(&format!("bench: scratch directory {}", dir.display()), e)
            })?;
            Bare::Fs {
                dir,
                fsync: fs.fsync,
            }
        }
        (BackendKind::Memory, _) => Bare::Memory,
        _ => Bare::None,
    };
    let result = phases(&*store, &bare, &prefix, &args, out);
    // Clean up whatever happened, interrupted or not.
    let removed = store.delete_by_prefix(&prefix);
    if let Bare::Fs { dir, .. } = &bare {
        let _ = std::fs::remove_dir_all(dir);
    }
    if STOP.load(Ordering::Relaxed) {
        let what = match &removed {
            Ok(n) => format!("removed the {n} blocks it had written under {prefix}"),
            Err(e) => format!("could not remove its blocks under {prefix}: {e}"),
        };
        let scratch = match &bare {
            Bare::Fs { .. } => " and its scratch files",
            _ => "",
        };
        drop(temp);
        return Err(Failure {
            code: EXIT_INTERRUPTED,
            message: format!("bench: interrupted; {what}{scratch}"),
        });
    }
    let rows = result?;
    let backend = format!("{:?}", config.block_store.backend).to_lowercase();
    print_table(out, &backend, &args, &rows, &store.report())?;
    store.close().map_err(|e| Failure::store("bench", "", &e))
}

/// Removes scratch folders of earlier runs that were killed outright (SIGKILL): those
/// whose process is gone.
fn remove_abandoned_bare(area: &Path) {
    let Ok(entries) = std::fs::read_dir(area) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("bench-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A measured phase and, where there is one, its bare baseline.
struct Row {
    store: Phase,
    bare: Option<Phase>,
}

/// Rounds of an idempotent phase: store and bare alternate, and each keeps its fastest
/// round, so neither gains from going second (a warmer cache, a faster clock).
const ROUNDS: usize = 3;

/// Runs a repeatable phase `ROUNDS` times for the store and for the baseline,
/// alternating which goes first.
fn alternate<S, B>(store: S, bare: Option<B>) -> Result<Row, Failure>
where
    S: Fn() -> Result<Phase, Failure>,
    B: Fn() -> Result<Phase, Failure>,
{
    let fastest = |best: Option<Phase>, p: Phase| match best {
        Some(b) if b.wall <= p.wall => Some(b),
        _ => Some(p),
    };
    let (mut s_best, mut b_best) = (None, None);
    for round in 0..ROUNDS {
        let bare_first = round % 2 == 1;
        if bare_first {
            if let Some(b) = &bare {
                b_best = fastest(b_best, b()?);
            }
        }
        s_best = fastest(s_best, store()?);
        if !bare_first {
            if let Some(b) = &bare {
                b_best = fastest(b_best, b()?);
            }
        }
    }
    let store = s_best.ok_or_else(|| Failure::invalid("bench: no round ran"))?;
    Ok(Row {
        store,
        bare: b_best,
    })
}

fn phases(
    store: &dyn BlockStore,
    bare: &Bare,
    prefix: &str,
    args: &Args,
    out: &Output,
) -> Result<Vec<Row>, Failure> {
    let show = out.progress() && std::io::stderr().is_terminal();
    let (n, size, workers) = (args.blocks, args.block_size, args.workers);
    let keys: Vec<String> = (0..n)
        .map(|i| block_key(&format!("{prefix}file"), 0, i as u64))
        .collect();
    let data: Vec<u8> = (0..size)
        .map(|i| (i as u64).wrapping_mul(0x9E37_79B9) as u8)
        .collect();
    let io = |what: &'static str| move |e: std::io::Error| Failure::io(what, e);
    let size_name = crate::common::human_bytes(size as u64).replace(".0 ", " ");
    let range_len = 4096.min(size);
    // Cheap operations run 64 times per block, so that the phase's time is the
    // operations', not the start-up of its threads; `--blocks` bounds the whole run.
    let ranges = n * 64;
    let stats = n * 64;
    let listings = 200;
    // Offsets that follow no pattern the page cache or a server could favour.
    let offset = |i: usize| fastrand::Rng::with_seed(i as u64).u64(..=(size - range_len) as u64);
    let bare_paths: Vec<PathBuf> = match bare {
        Bare::Fs { dir, .. } => {
            let paths: Vec<PathBuf> = keys.iter().map(|k| dir.join(k)).collect();
            if let Some(parent) = paths.first().and_then(|p| p.parent()) {
                std::fs::create_dir_all(parent).map_err(io("bench: scratch directory"))?;
            }
            paths
        }
        _ => Vec::new(),
    };
    let mut rows = Vec::new();

    let write_name = format!("write {size_name}");
    rows.push(alternate(
        || {
            measure(&write_name, n, workers, show, |i| {
                store.write_block(&keys[i], &data).map_err(fail(&keys[i]))?;
                Ok(size as u64)
            })
        },
        match bare {
            Bare::Fs { fsync, .. } => Some(Box::new(|| {
                measure("bare write", n, workers, show, |i| {
                    bare_write(&bare_paths[i], &data, *fsync).map_err(io("bare write"))?;
                    Ok(size as u64)
                })
            })
                as Box<dyn Fn() -> Result<Phase, Failure>>),
            Bare::Memory => Some(Box::new(|| {
                measure("bare copy", n, workers, show, |_| {
                    Ok(std::hint::black_box(data.to_vec()).len() as u64)
                })
            }) as Box<dyn Fn() -> Result<Phase, Failure>>),
            Bare::None => None,
        },
    )?);

    let read_name = format!("read {size_name}");
    rows.push(alternate(
        || {
            measure(&read_name, n, workers, show, |i| {
                Ok(store.read_block(&keys[i]).map_err(fail(&keys[i]))?.len() as u64)
            })
        },
        match bare {
            Bare::Fs { .. } => Some(Box::new(|| {
                measure("bare read", n, workers, show, |i| {
                    Ok(std::fs::read(&bare_paths[i])
                        .map_err(io("bare read"))?
                        .len() as u64)
                })
            }) as Box<dyn Fn() -> Result<Phase, Failure>>),
            Bare::Memory => Some(Box::new(|| {
                measure("bare copy", n, workers, show, |_| {
                    Ok(std::hint::black_box(data.to_vec()).len() as u64)
                })
            }) as Box<dyn Fn() -> Result<Phase, Failure>>),
            Bare::None => None,
        },
    )?);

    let range_name = format!(
        "range {}",
        crate::common::human_bytes(range_len as u64).replace(".0 ", " ")
    );
    rows.push(alternate(
        || {
            measure(&range_name, ranges, workers, show, |i| {
                let key = &keys[i % n];
                Ok(store
                    .read_block_range(key, offset(i), range_len as u64)
                    .map_err(fail(key))?
                    .len() as u64)
            })
        },
        match bare {
            Bare::Fs { .. } => Some(Box::new(|| {
                measure("bare range", ranges, workers, show, |i| {
                    let f = File::open(&bare_paths[i % n]).map_err(io("bare range"))?;
                    let mut buf = vec![0u8; range_len];
                    f.read_exact_at(&mut buf, offset(i))
                        .map_err(io("bare range"))?;
                    Ok(buf.len() as u64)
                })
            }) as Box<dyn Fn() -> Result<Phase, Failure>>),
            Bare::Memory => Some(Box::new(|| {
                measure("bare copy", ranges, workers, show, |i| {
                    let o = offset(i) as usize;
                    Ok(std::hint::black_box(data[o..o + range_len].to_vec()).len() as u64)
                })
            }) as Box<dyn Fn() -> Result<Phase, Failure>>),
            Bare::None => None,
        },
    )?);

    rows.push(alternate(
        || {
            measure("block_size", stats, workers, show, |i| {
                store.block_size(&keys[i % n]).map_err(fail(&keys[i % n]))?;
                Ok(0)
            })
        },
        match bare {
            Bare::Fs { .. } => Some(|| {
                measure("bare stat", stats, workers, show, |i| {
                    std::fs::symlink_metadata(&bare_paths[i % n]).map_err(io("bare stat"))?;
                    Ok(0)
                })
            }),
            _ => None,
        },
    )?);

    let list_name = format!("list {n} keys");
    rows.push(alternate(
        || {
            measure(&list_name, listings, 1, show, |_| {
                let found = store.list_by_prefix(prefix).map_err(fail(prefix))?;
                if found.len() != n {
                    return Err(Failure::invalid(format!(
                        "bench: listed {} of {n} blocks",
                        found.len()
                    )));
                }
                Ok(0)
            })
        },
        match bare {
            Bare::Fs { dir, .. } => Some(|| {
                measure("bare list", listings, 1, show, |_| {
                    let mut names = Vec::with_capacity(n);
                    bare_list(dir, &dir.join(prefix), &mut names).map_err(io("bare list"))?;
                    names.sort_unstable();
                    Ok(0)
                })
            }),
            _ => None,
        },
    )?);

    let delete = measure("delete", n, workers, show, |i| {
        store.delete_block(&keys[i]).map_err(fail(&keys[i]))?;
        Ok(0)
    })?;
    let bare_delete = match bare {
        Bare::Fs { fsync, .. } => Some(measure("bare delete", n, workers, show, |i| {
            let path = &bare_paths[i];
            std::fs::remove_file(path).map_err(io("bare delete"))?;
            if *fsync {
                File::open(path.parent().unwrap_or(path))
                    .and_then(|d| d.sync_all())
                    .map_err(io("bare delete"))?;
            }
            Ok(0)
        })?),
        _ => None,
    };
    rows.push(Row {
        store: delete,
        bare: bare_delete,
    });
    Ok(rows)
}

/// Maps a store error on `key` to the command's failure.
fn fail(key: &str) -> impl Fn(blockstore::Error) -> Failure + '_ {
    move |e| Failure::store("bench", key, &e)
}

fn fmt_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1.0 {
        format!("{} ns", d.as_nanos())
    } else if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn print_table(
    out: &Output,
    backend: &str,
    args: &Args,
    rows: &[Row],
    report: &blockstore::Report,
) -> Result<(), Failure> {
    // Throughput ratio: the store's rate over the bare rate (1.00 = no overhead).
    let ratio = |r: &Row| {
        r.bare
            .as_ref()
            .map(|b| r.store.ops_per_sec() / b.ops_per_sec().max(1e-9))
    };
    if out.json {
        let items: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "operation": r.store.name,
                    "ops": r.store.ops,
                    "mib_per_sec": (r.store.bytes > 0).then(|| r.store.mib_per_sec()),
                    "ops_per_sec": r.store.ops_per_sec(),
                    "p50_us": r.store.quantile(0.5).as_secs_f64() * 1e6,
                    "p99_us": r.store.quantile(0.99).as_secs_f64() * 1e6,
                    "bare_ops_per_sec": r.bare.as_ref().map(Phase::ops_per_sec),
                    "ratio_to_bare": ratio(r),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "backend": backend, "workers": args.workers, "blocks": args.blocks,
                "block_size": args.block_size, "results": items,
                "attempts": report.counter("attempts"), "retries": report.counter("retries"),
                "throttled": report.counter("throttled"),
            })
        );
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "backend: {backend}, workers: {}, blocks: {}, block size: {} bytes",
        args.workers, args.blocks, args.block_size
    )?;
    writeln!(
        stdout,
        "{:<16} {:>6} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "operation", "ops", "MiB/s", "ops/s", "p50", "p99", "vs bare"
    )?;
    for r in rows {
        let p = &r.store;
        let mib = if p.bytes > 0 {
            format!("{:.1}", p.mib_per_sec())
        } else {
            "-".into()
        };
        let vs = ratio(r).map_or("-".to_owned(), |x| format!("{x:.2}x"));
        writeln!(
            stdout,
            "{:<16} {:>6} {:>10} {:>10.0} {:>10} {:>10} {:>9}",
            p.name,
            p.ops,
            mib,
            p.ops_per_sec(),
            fmt_duration(p.quantile(0.5)),
            fmt_duration(p.quantile(0.99)),
            vs
        )?;
    }
    let attempts = report.counter("attempts");
    if attempts > 0 {
        writeln!(
            stdout,
            "requests: {attempts} attempts, {} retried, {} throttled",
            report.counter("retries"),
            report.counter("throttled")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_under_a_microsecond_are_shown_in_nanoseconds() {
        assert_eq!(fmt_duration(Duration::from_nanos(850)), "850 ns");
        assert_eq!(fmt_duration(Duration::from_nanos(1500)), "2 µs");
        assert_eq!(fmt_duration(Duration::from_micros(1500)), "1.50 ms");
    }
}
