//! `get KEY [--offset N] [--length N] [-o FILE]`: write a block, or a range of it, as raw
//! bytes to standard output or a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::common::{open_store, Create, Failure, Output};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The block's key.
    key: String,
    /// Start of the range, in bytes.
    #[arg(long)]
    offset: Option<u64>,
    /// Length of the range, in bytes (default: to the end).
    #[arg(long)]
    length: Option<u64>,
    /// Write to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(config: Option<&Path>, _out: &Output, args: Args) -> Result<(), Failure> {
    let store = open_store(config, Create::Never)?;
    let data = match (args.offset, args.length) {
        (None, None) => store.read_block(&args.key),
        (offset, length) => {
            store.read_block_range(&args.key, offset.unwrap_or(0), length.unwrap_or(u64::MAX))
        }
    }
    .map_err(|e| Failure::store("get", &args.key, &e))?;
    match &args.output {
        Some(path) => std::fs::write(path, &data).map_err(|e| {
            Failure::io(&format!("get {}: writing {}", args.key, path.display()), e)
        })?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&data)?;
            stdout.flush()?;
        }
    }
    store
        .close()
        .map_err(|e| Failure::store("get", &args.key, &e))
}
