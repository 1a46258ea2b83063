//! `scrub [PREFIX] [--start-after KEY]`: read every block under a prefix through a
//! worker pool and check it against its checksums, streaming the listing (memory stays
//! flat whatever the store's size). Each corrupt block is printed as it is found; the
//! summary says how many blocks were verified, how many had no checksums to check, and
//! where a stopped scrub can resume. Exits 1 when any block is corrupt or unreadable.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use blockstore::pool::Verify;
use blockstore::{BlockStore, ErrorKind, Integrity, Pool, PoolConfig};

use crate::common::{
    byte_spinner, human_bytes, load_config, open, shown, Create, Failure, Output, EXIT_FAILURE,
};

/// Set by Ctrl-C or SIGTERM: no new block is started, the ones in flight finish, and
/// the summary says where to resume.
static STOP: AtomicBool = AtomicBool::new(false);

/// The exit code of a scrub stopped by a signal.
const EXIT_INTERRUPTED: u8 = 130;

/// How many corrupt keys `--json` lists, the first found, in key order (the count is
/// always whole).
const LISTED: usize = 1000;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Check only blocks whose keys start with this string (default: every block).
    #[arg(default_value = "")]
    prefix: String,
    /// Start after this key (resume a scrub that stopped; the last run says where).
    #[arg(long, value_name = "KEY")]
    start_after: Option<String>,
}

/// What the scrub found.
#[derive(Default)]
struct Tally {
    verified: u64,
    unverified: u64,
    corrupt: u64,
    corrupt_keys: Vec<String>,
    /// Deleted between the listing and the read: nothing to check.
    vanished: u64,
    failed: u64,
    first_failure: Option<(String, blockstore::Error)>,
    bytes: u64,
}

pub fn run(config: Option<&Path>, out: &Output, args: Args) -> Result<(), Failure> {
    let _ = ctrlc::set_handler(|| STOP.store(true, Ordering::Relaxed));
    let mut config = load_config(config)?;
    let pool_config = config.pool.take().unwrap_or(PoolConfig {
        workers: 8,
        queue_capacity: 64,
    });
    let store = open(&config, Create::Never)?;
    let blocks = store
        .scan(&args.prefix, args.start_after.as_deref())
        .map_err(|e| Failure::store("scrub", &args.prefix, &e))?;
    let bar = byte_spinner(out);
    let pool =
        Pool::new(store.clone(), pool_config).map_err(|e| Failure::store("scrub", "", &e))?;
    let started = Instant::now();
    let listing_failed = Rc::new(RefCell::new(None));
    // The key and size of each block in flight, and which are done, to know the last
    // key before which everything is checked (where a rerun may start).
    let keys: Rc<RefCell<HashMap<usize, (String, u64)>>> = Rc::default();
    let jobs = {
        let (keys, listing_failed) = (keys.clone(), listing_failed.clone());
        blocks
            .map_while(move |b| match b {
                _ if STOP.load(Ordering::Relaxed) => None,
                Ok(b) => Some(b),
                Err(e) => {
                    listing_failed.borrow_mut().get_or_insert(e);
                    None
                }
            })
            .enumerate()
            .map(move |(i, block)| {
                keys.borrow_mut().insert(i, (block.key.clone(), block.size));
                Verify { key: block.key }
            })
    };
    let mut tally = Tally::default();
    let mut done_past_frontier: BTreeMap<usize, String> = BTreeMap::new();
    let (mut frontier, mut resume_after) = (0usize, None::<String>);
    for (i, result) in pool.batch(jobs).window(pool_config.workers * 2) {
        let (key, size) = keys.borrow_mut().remove(&i).unwrap_or_default();
        // Bytes of the blocks checked, so the summary's count and size agree.
        if result
            .as_ref()
            .map_or_else(|e| e.kind() == ErrorKind::Corrupt, |_| true)
        {
            tally.bytes += size;
        }
        match result {
            Ok(Integrity::Verified) => tally.verified += 1,
            Ok(Integrity::Unverified) => tally.unverified += 1,
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                tally.corrupt += 1;
                if !out.json {
                    let line = format!(
                        "corrupt {}: {}",
                        shown(&key),
                        e.detail().unwrap_or_default()
                    );
                    // A reader that went away (`scrub | head`) ends the scrub quietly.
                    bar.suspend(|| writeln!(std::io::stdout(), "{line}"))?;
                }
                if tally.corrupt_keys.len() < LISTED {
                    tally.corrupt_keys.push(key.clone());
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => tally.vanished += 1,
            Err(e) => {
                tally.failed += 1;
                tally.first_failure.get_or_insert((key.clone(), e));
            }
        }
        bar.inc(size);
        if tally.failed == 0 {
            done_past_frontier.insert(i, key);
            while let Some(key) = done_past_frontier.remove(&frontier) {
                resume_after = Some(key);
                frontier += 1;
            }
        }
        bar.set_message(format!(
            "{} verified, {} corrupt",
            tally.verified, tally.corrupt
        ));
    }
    bar.finish_and_clear();
    let _ = pool.close();
    let elapsed = started.elapsed().as_secs_f64();
    // Found in the order the workers finished; listed in key order.
    tally.corrupt_keys.sort();
    let interrupted = STOP.load(Ordering::Relaxed);
    if out.json {
        writeln!(
            std::io::stdout(),
            "{}",
            serde_json::json!({
                "verified": tally.verified, "unverified": tally.unverified,
                "corrupt": tally.corrupt, "corrupt_keys": tally.corrupt_keys,
                "vanished": tally.vanished, "failed": tally.failed,
                "bytes": tally.bytes, "seconds": elapsed, "resume_after": resume_after,
                "interrupted": interrupted,
            })
        )?;
    } else {
        let unverified = if tally.unverified > 0 {
            format!(
                ", {} without checksums (written with checksums off, or rewritten by a tool that dropped them: nothing to check them by)",
                tally.unverified
            )
        } else {
            String::new()
        };
        let line = format!(
            "scrubbed {} blocks ({} checked) in {elapsed:.1} s: {} verified, {} corrupt{unverified}{}",
            tally.verified + tally.unverified + tally.corrupt + tally.failed,
            human_bytes(tally.bytes),
            tally.verified,
            tally.corrupt,
            if tally.failed > 0 {
                format!(", {} could not be read", tally.failed)
            } else {
                String::new()
            },
        );
        if !out.quiet {
            writeln!(std::io::stdout(), "{line}")?;
        }
    }
    let resume = resume_after.as_ref().map_or(String::new(), |k| {
        format!("; resume with --start-after {k:?}")
    });
    if interrupted {
        return Err(Failure {
            code: EXIT_INTERRUPTED,
            message: format!("scrub: interrupted{resume}"),
        });
    }
    if let Some(e) = listing_failed.borrow_mut().take() {
        return Err(Failure {
            code: EXIT_FAILURE,
            message: format!(
                "scrub: the listing failed{resume}; {}",
                Failure::store("scrub", &args.prefix, &e).message
            ),
        });
    }
    if let Some((key, e)) = tally.first_failure {
        return Err(Failure {
            code: EXIT_FAILURE,
            message: format!(
                "scrub: {} blocks could not be read{resume}; first: {}",
                tally.failed,
                Failure::store("scrub", &key, &e).message
            ),
        });
    }
    if tally.corrupt > 0 {
        return Err(Failure {
            code: EXIT_FAILURE,
            message: format!(
                "scrub: {} corrupt {} under {:?}: rewrite from another copy (`blockstore copy` from a good store repairs them)",
                tally.corrupt,
                if tally.corrupt == 1 { "block" } else { "blocks" },
                args.prefix,
            ),
        });
    }
    Ok(())
}
