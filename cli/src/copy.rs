//! `copy --to OTHER.toml [--prefix P] [--verify]`: copy every block under a prefix to
//! another store, through a worker pool, resumably.
//!
//! A block already at the destination with the same size and the same bytes is
//! skipped, so an interrupted copy can simply be run again. With `--verify` every block
//! is read back from the destination and compared with the source.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use std::time::Instant;

use blockstore::pool::from_fn;
use blockstore::pool::Handle;
use blockstore::{BlockStore, Error, ErrorKind, Pool, PoolConfig};
use indicatif::{ProgressBar, ProgressStyle};

use crate::common::{human_bytes, load_config, open, Create, Failure, Output, EXIT_FAILURE};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The destination store's configuration.
    #[arg(long, value_name = "OTHER.toml")]
    to: PathBuf,
    /// Copy only blocks whose keys start with this string.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Read every block back from both stores and compare.
    #[arg(long)]
    verify: bool,
}

/// What happened to one block.
enum Outcome {
    Copied,
    Skipped,
}

pub fn run(config: Option<&Path>, out: &Output, args: Args) -> Result<(), Failure> {
    let mut source_config = load_config(config)?;
    // The `[pool]` section sizes the copy; the stores themselves are opened bare.
    let pool_config = source_config.pool.take().unwrap_or(PoolConfig {
        workers: 8,
        queue_capacity: 64,
    });
    let source = open(&source_config, Create::Never)?;
    let mut dest_config = load_config(Some(&args.to))?;
    dest_config.pool = None;
    let dest = open(&dest_config, Create::IfMissing)?;

    let blocks = source
        .list_blocks(&args.prefix)
        .map_err(|e| Failure::store("copy: list source", &args.prefix, &e))?;
    let existing: HashMap<String, u64> = dest
        .list_blocks(&args.prefix)
        .map_err(|e| Failure::store("copy: list destination", &args.prefix, &e))?
        .into_iter()
        .map(|b| (b.key, b.size))
        .collect();
    let total_bytes: u64 = blocks.iter().map(|b| b.size).sum();
    let bar = if out.progress() && std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total_bytes);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    let pool = Pool::new(dest.clone(), pool_config).map_err(|e| Failure::store("copy", "", &e))?;
    let window = pool_config.workers * 2;
    let started = Instant::now();
    let (mut copied, mut skipped, mut done) = (0u64, 0u64, 0usize);
    let mut failures: Vec<(String, Error)> = Vec::new();
    let mut in_flight: VecDeque<(String, u64, Handle<Outcome>)> = VecDeque::new();
    let count = blocks.len();
    let mut finish = |key: String, size: u64, result: blockstore::Result<Outcome>| {
        match result {
            Ok(Outcome::Copied) => copied += 1,
            Ok(Outcome::Skipped) => skipped += 1,
            Err(e) => failures.push((key, e)),
        }
        done += 1;
        bar.inc(size);
        bar.set_message(format!("{done}/{count} blocks"));
    };
    for block in blocks {
        if in_flight.len() == window {
            if let Some((key, size, handle)) = in_flight.pop_front() {
                finish(key, size, handle.wait());
            }
        }
        let present_size = existing.get(&block.key).copied();
        let (source, key, verify) = (source.clone(), block.key.clone(), args.verify);
        let submitted = pool.submit(from_fn(move |dest: &dyn BlockStore| {
            copy_one(&*source, dest, &key, present_size, verify)
        }));
        match submitted {
            Ok(handle) => in_flight.push_back((block.key, block.size, handle)),
            Err(e) => finish(block.key, block.size, Err(e)),
        }
    }
    while let Some((key, size, handle)) = in_flight.pop_front() {
        finish(key, size, handle.wait());
    }
    bar.finish_and_clear();
    pool.close()
        .map_err(|e| Failure::store("copy: close destination", "", &e))?;
    let elapsed = started.elapsed().as_secs_f64();
    if out.json {
        println!(
            "{}",
            serde_json::json!({
                "copied": copied, "skipped": skipped, "failed": failures.len(),
                "verified": args.verify, "bytes": total_bytes, "seconds": elapsed,
            })
        );
    } else {
        out.info(format!(
            "copied {copied}, skipped {skipped} already present, {} failed; {} in {elapsed:.1} s{}",
            failures.len(),
            human_bytes(total_bytes),
            if args.verify {
                "; every block verified"
            } else {
                ""
            }
        ));
    }
    match failures.first() {
        None => Ok(()),
        Some((key, e)) => Err(Failure {
            code: EXIT_FAILURE,
            message: format!(
                "copy: {} of {count} blocks failed (run it again to retry them); first: {}",
                failures.len(),
                Failure::store("copy", key, e).message
            ),
        }),
    }
}

/// Copies one block unless the destination already holds the same bytes.
fn copy_one(
    source: &dyn BlockStore,
    dest: &dyn BlockStore,
    key: &str,
    present_size: Option<u64>,
    verify: bool,
) -> blockstore::Result<Outcome> {
    let data = source.read_block(key)?;
    let outcome = match present_size {
        Some(size) if size == data.len() as u64 && dest.read_block(key)? == data => {
            Outcome::Skipped
        }
        _ => {
            dest.write_block(key, &data)?;
            Outcome::Copied
        }
    };
    if verify && matches!(outcome, Outcome::Copied) && dest.read_block(key)? != data {
        return Err(Error::new(ErrorKind::Backend, blockstore::Op::Read)
            .with_key(key)
            .with_detail("verify: the destination's copy differs from the source"));
    }
    Ok(outcome)
}
