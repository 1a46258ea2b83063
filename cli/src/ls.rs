//! `ls [PREFIX] [-l] [--count] [--start-after KEY] [--limit N]`: list the keys under a
//! prefix as the store hands them over, so the first key shows at once and memory
//! stays flat whatever the store's size.

use std::io::Write;
use std::path::Path;

use crate::common::{open_store, Create, Failure, Output};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only keys that start with this string (plain string prefix).
    #[arg(default_value = "")]
    prefix: String,
    /// Also print each block's size.
    #[arg(short = 'l', long)]
    long: bool,
    /// Print only how many blocks match.
    #[arg(long)]
    count: bool,
    /// Start after this key (resume an interrupted listing).
    #[arg(long, value_name = "KEY")]
    start_after: Option<String>,
    /// Stop after this many blocks.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
}

pub fn run(config: Option<&Path>, out: &Output, args: Args) -> Result<(), Failure> {
    let store = open_store(config, Create::Never)?;
    let blocks = store
        .scan(&args.prefix, args.start_after.as_deref())
        .map_err(|e| Failure::store("ls", &args.prefix, &e))?
        .take(args.limit.map_or(usize::MAX, |n| n as usize));
    let mut stdout = std::io::stdout().lock();
    let mut count = 0u64;
    if out.json && !args.count {
        write!(stdout, "[")?;
    }
    for block in blocks {
        let block = block.map_err(|e| Failure::store("ls", &args.prefix, &e))?;
        if args.count {
            // Counted, not printed.
        } else if out.json {
            let separator = if count == 0 { "" } else { "," };
            let item = serde_json::json!({ "key": block.key, "size": block.size });
            write!(stdout, "{separator}\n{item}")?;
        } else if args.long {
            writeln!(stdout, "{:>10}  {}", block.size, block.key)?;
        } else {
            writeln!(stdout, "{}", block.key)?;
        }
        count += 1;
    }
    if args.count {
        if out.json {
            writeln!(
                stdout,
                "{}",
                serde_json::json!({ "prefix": args.prefix, "count": count })
            )?;
        } else {
            writeln!(stdout, "{count}")?;
        }
    } else if out.json {
        writeln!(stdout, "\n]")?;
    }
    Ok(())
}
