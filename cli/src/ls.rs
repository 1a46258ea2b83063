//! `ls [PREFIX] [-l] [--count]`: list the keys under a prefix.

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
}

pub fn run(config: Option<&Path>, out: &Output, args: Args) -> Result<(), Failure> {
    let store = open_store(config, Create::Never)?;
    let blocks = store
        .list_blocks(&args.prefix)
        .map_err(|e| Failure::store("ls", &args.prefix, &e))?;
    let mut stdout = std::io::stdout().lock();
    if args.count {
        if out.json {
            writeln!(
                stdout,
                "{}",
                serde_json::json!({ "prefix": args.prefix, "count": blocks.len() })
            )?;
        } else {
            writeln!(stdout, "{}", blocks.len())?;
        }
    } else if out.json {
        let items: Vec<_> = blocks
            .iter()
            .map(|b| serde_json::json!({ "key": b.key, "size": b.size }))
            .collect();
        writeln!(stdout, "{}", serde_json::Value::Array(items))?;
    } else {
        for b in &blocks {
            if args.long {
                writeln!(stdout, "{:>10}  {}", b.size, b.key)?;
            } else {
                writeln!(stdout, "{}", b.key)?;
            }
        }
    }
    Ok(())
}
