//! `copy --to OTHER.toml [--prefix P] [--start-after KEY] [--verify]`: copy every block
//! under a prefix to another store, through a worker pool, streaming and resumably.
//!
//! Both stores are scanned side by side in key order (so memory stays flat whatever the
//! store's size): a block already at the destination with the same size and the same
//! bytes is skipped, so an interrupted copy can simply be run again, or resumed past
//! the last key it finished with `--start-after`. With `--verify` every block copied is
//! read back from the destination and compared with the source.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::iter::Peekable;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use blockstore::pool::{from_fn, FnJob};
use blockstore::{BlockRef, BlockStore, Blocks, Error, ErrorKind, Pool, PoolConfig};

use crate::common::{
    byte_spinner, human_bytes, load_config, open, Create, Failure, Output, EXIT_FAILURE,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The destination store's configuration.
    #[arg(long, value_name = "OTHER.toml")]
    to: PathBuf,
    /// Copy only blocks whose keys start with this string.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Start after this key (resume a copy that stopped; the last run says where).
    #[arg(long, value_name = "KEY")]
    start_after: Option<String>,
    /// Read every block copied back from the destination and compare.
    #[arg(long)]
    verify: bool,
}

/// What happened to one block.
enum Outcome {
    /// Written to the destination (and, with `--verify`, read back and compared).
    Copied,
    /// The destination already held the same bytes.
    Skipped,
}

/// The blocks to copy, each with the size of the destination's block of that key if it
/// has one: the two scans merged in key order.
struct Plan<'a> {
    source: Blocks<'a>,
    dest: Peekable<Blocks<'a>>,
    /// The first scan error: the copy stops there.
    failed: Rc<RefCell<Option<(String, Error)>>>,
}

impl Iterator for Plan<'_> {
    type Item = (BlockRef, Option<u64>);

    fn next(&mut self) -> Option<Self::Item> {
        let block = match self.source.next()? {
            Ok(block) => block,
            Err(e) => {
                self.failed.borrow_mut().get_or_insert(("source".into(), e));
                return None;
            }
        };
        loop {
            match self.dest.peek() {
                Some(Ok(d)) if d.key < block.key => {
                    self.dest.next();
                }
                Some(Ok(d)) if d.key == block.key => {
                    let size = d.size;
                    self.dest.next();
                    return Some((block, Some(size)));
                }
                Some(Ok(_)) | None => return Some((block, None)),
                Some(Err(_)) => {
                    if let Some(Err(e)) = self.dest.next() {
                        self.failed
                            .borrow_mut()
                            .get_or_insert(("destination".into(), e));
                    }
                    return None;
                }
            }
        }
    }
}

type CopyJob = FnJob<Box<dyn FnOnce(&dyn BlockStore) -> blockstore::Result<Outcome> + Send>>;

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
    let after = args.start_after.as_deref();
    let failed = Rc::new(RefCell::new(None));
    let plan = Plan {
        source: source
            .scan(&args.prefix, after)
            .map_err(|e| Failure::store("copy: scan source", &args.prefix, &e))?,
        dest: dest
            .scan(&args.prefix, after)
            .map_err(|e| Failure::store("copy: scan destination", &args.prefix, &e))?
            .peekable(),
        failed: failed.clone(),
    };
    let bar = byte_spinner(out);
    let pool = Pool::new(dest.clone(), pool_config).map_err(|e| Failure::store("copy", "", &e))?;
    let started = Instant::now();
    // The key and size of each block in flight, and which indices are done, to know
    // the last key before which everything is done (where a rerun may start).
    let keys: Rc<RefCell<HashMap<usize, (String, u64)>>> = Rc::default();
    let mut done_past_frontier: BTreeMap<usize, String> = BTreeMap::new();
    let (mut frontier, mut resume_after) = (0usize, None::<String>);
    let jobs = {
        let (keys, source, verify) = (keys.clone(), source.clone(), args.verify);
        plan.enumerate()
            .map(move |(i, (block, present))| -> CopyJob {
                keys.borrow_mut().insert(i, (block.key.clone(), block.size));
                let source = source.clone();
                let key = block.key;
                from_fn(Box::new(move |dest: &dyn BlockStore| {
                    copy_one(&*source, dest, &key, present, verify)
                }))
            })
    };
    let (mut copied, mut skipped, mut bytes) = (0u64, 0u64, 0u64);
    let mut failures: Vec<(String, Error)> = Vec::new();
    let mut failed_count = 0u64;
    for (i, result) in pool.batch(jobs).window(pool_config.workers * 2) {
        let (key, size) = keys.borrow_mut().remove(&i).unwrap_or_default();
        match result {
            Ok(Outcome::Copied) => {
                copied += 1;
                bytes += size;
                bar.inc(size);
            }
            Ok(Outcome::Skipped) => skipped += 1,
            Err(e) => {
                failed_count += 1;
                if failures.len() < 5 {
                    failures.push((key.clone(), e));
                }
            }
        }
        if failed_count == 0 {
            done_past_frontier.insert(i, key);
            while let Some(key) = done_past_frontier.remove(&frontier) {
                resume_after = Some(key);
                frontier += 1;
            }
        }
        bar.set_message(format!("{copied} copied, {skipped} skipped"));
    }
    bar.finish_and_clear();
    pool.close()
        .map_err(|e| Failure::store("copy: close destination", "", &e))?;
    let elapsed = started.elapsed().as_secs_f64();
    let scan_failure = failed.borrow_mut().take();
    let verified = if args.verify { copied } else { 0 };
    if out.json {
        println!(
            "{}",
            serde_json::json!({
                "copied": copied, "skipped": skipped, "failed": failed_count,
                "verified": verified, "bytes_copied": bytes, "seconds": elapsed,
                "resume_after": resume_after,
            })
        );
    } else {
        let checked = match (args.verify, failed_count) {
            (false, _) => String::new(),
            (true, 0) if scan_failure.is_none() => format!("; all {copied} copied blocks verified"),
            (true, _) => format!("; {copied} copied blocks verified"),
        };
        out.info(format!(
            "copied {copied} ({}), skipped {skipped} already present, {failed_count} failed, in {elapsed:.1} s{checked}",
            human_bytes(bytes),
        ));
    }
    if let Some((which, e)) = scan_failure {
        return Err(Failure {
            code: EXIT_FAILURE,
            message: format!(
                "copy: the {which} listing failed{}; {}",
                resume_hint(&resume_after),
                Failure::store("copy", &args.prefix, &e).message
            ),
        });
    }
    match failures.first() {
        None => Ok(()),
        Some((key, e)) => {
            // Running again helps only where the failure may pass.
            let advice = if failures
                .iter()
                .any(|(_, e)| e.kind() == ErrorKind::Conflict)
            {
                " (a key conflicts with the destination's hierarchy: running again will not help)"
                    .to_owned()
            } else {
                format!(
                    " (run it again to retry them{})",
                    resume_hint(&resume_after)
                )
            };
            Err(Failure {
                code: EXIT_FAILURE,
                message: format!(
                    "copy: {failed_count} blocks failed{advice}; first: {}",
                    Failure::store("copy", key, e).message
                ),
            })
        }
    }
}

/// `, with --start-after KEY` when every block up to KEY is done.
fn resume_hint(after: &Option<String>) -> String {
    after.as_ref().map_or(String::new(), |k| {
        format!(", with --start-after {k:?} to skip what is done")
    })
}

/// Copies one block unless the destination already holds the same bytes.
fn copy_one(
    source: &dyn BlockStore,
    dest: &dyn BlockStore,
    key: &str,
    present_size: Option<u64>,
    verify: bool,
) -> blockstore::Result<Outcome> {
    let data = source
        .read_block(key)
        .map_err(|e| e.with_detail("in the source store"))?;
    // A destination block that fails its checksums differs: copying over it repairs it.
    let same = |size: u64| -> blockstore::Result<bool> {
        if size != data.len() as u64 {
            return Ok(false);
        }
        match dest.read_block(key) {
            Ok(there) => Ok(there == data),
            Err(e) if e.kind() == ErrorKind::Corrupt => Ok(false),
            Err(e) => Err(e),
        }
    };
    let outcome = match present_size {
        Some(size) if same(size)? => Outcome::Skipped,
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
