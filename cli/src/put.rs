//! `put KEY [FILE]`: write a block from a file or standard input.

use std::io::Read;
use std::path::{Path, PathBuf};

use blockstore::BLOCK_SIZE;

use crate::common::{human_bytes, open_store, Create, Failure, Output};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The block's key, e.g. export/file/chunk-0/block-3.
    key: String,
    /// The file to store; standard input when absent.
    file: Option<PathBuf>,
}

pub fn run(config: Option<&Path>, out: &Output, args: Args) -> Result<(), Failure> {
    // One buffer, sized up front; one byte more than a block shows an oversized input.
    let mut data = Vec::with_capacity(BLOCK_SIZE + 1);
    let limit = BLOCK_SIZE as u64 + 1;
    match &args.file {
        Some(path) => std::fs::File::open(path)
            .and_then(|f| f.take(limit).read_to_end(&mut data))
            .map_err(|e| {
                Failure::io(&format!("put {}: reading {}", args.key, path.display()), e)
            })?,
        None => std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut data)
            .map_err(|e| Failure::io(&format!("put {}: reading standard input", args.key), e))?,
    };
    let store = open_store(config, Create::IfMissing)?;
    store
        .write_block(&args.key, &data)
        .map_err(|e| Failure::store("put", &args.key, &e))?;
    if out.json {
        println!(
            "{}",
            serde_json::json!({ "key": args.key, "size": data.len() })
        );
    } else {
        out.info(format!(
            "stored {} ({})",
            args.key,
            human_bytes(data.len() as u64)
        ));
    }
    store
        .close()
        .map_err(|e| Failure::store("put", &args.key, &e))
}
