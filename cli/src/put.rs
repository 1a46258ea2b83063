//! `put KEY [FILE]`: write a block from a file or standard input.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use blockstore::BLOCK_SIZE;

use crate::common::{human_bytes, open_store, Create, Failure, Output, EXIT_INVALID};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The block's key, e.g. export/file/chunk-0/block-3.
    key: String,
    /// The file to store; standard input when absent.
    file: Option<PathBuf>,
}

/// A block too large to store: the real size when it is known (a file), else "more
/// than" the limit (standard input is not read past it).
fn too_large(key: &str, what: &str, size: Option<u64>) -> Failure {
    let size = match size {
        Some(n) => format!("is {n} bytes ({})", human_bytes(n)),
        None => format!("holds more than {BLOCK_SIZE} bytes"),
    };
    Failure::invalid(format!(
        "put {key}: block too large: {what} {size}; a block holds at most {BLOCK_SIZE} bytes ({})",
        human_bytes(BLOCK_SIZE as u64)
    ))
}

pub fn run(config: Option<&Path>, out: &Output, args: Args) -> Result<(), Failure> {
    // One buffer, sized up front; one byte more than a block shows an oversized input.
    let mut data = Vec::with_capacity(BLOCK_SIZE + 1);
    let limit = BLOCK_SIZE as u64 + 1;
    match &args.file {
        Some(path) => {
            let file = std::fs::File::open(path).map_err(|e| {
                let mut f =
                    Failure::io(&format!("put {}: reading {}", args.key, path.display()), e);
                // A file that is not there is a mistake in the arguments.
                if !path.exists() {
                    f.code = EXIT_INVALID;
                }
                f
            })?;
            let size = file.metadata().map(|m| m.len()).ok();
            file.take(limit).read_to_end(&mut data).map_err(|e| {
                Failure::io(&format!("put {}: reading {}", args.key, path.display()), e)
            })?;
            if data.len() > BLOCK_SIZE {
                return Err(too_large(&args.key, &path.display().to_string(), size));
            }
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!(
                    "blockstore: reading the block for {} from standard input (end it with Ctrl-D; or give a FILE)",
                    args.key
                );
            }
            stdin
                .lock()
                .take(limit)
                .read_to_end(&mut data)
                .map_err(|e| {
                    Failure::io(&format!("put {}: reading standard input", args.key), e)
                })?;
            if data.len() > BLOCK_SIZE {
                return Err(too_large(&args.key, "standard input", None));
            }
        }
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
