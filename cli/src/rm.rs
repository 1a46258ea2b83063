//! `rm KEY…` and `rm --prefix PREFIX`: delete blocks.

use std::path::Path;

use blockstore::ErrorKind;

use crate::common::{open_store, Create, Failure, Output};

#[derive(clap::Args, Debug)]
#[command(override_usage = "blockstore rm KEY...\n       blockstore rm --prefix PREFIX [--all]")]
pub struct Args {
    /// The keys to delete (absent keys are not an error).
    #[arg(required_unless_present = "prefix", conflicts_with = "prefix")]
    keys: Vec<String>,
    /// Delete every block whose key starts with this string.
    #[arg(long)]
    prefix: Option<String>,
    /// Allow `--prefix ""`, which deletes every block in the store.
    #[arg(long)]
    all: bool,
}

/// `1 block` or `2 blocks`.
fn blocks(n: usize) -> String {
    if n == 1 {
        "1 block".into()
    } else {
        format!("{n} blocks")
    }
}

pub fn run(config: Option<&Path>, out: &Output, args: Args) -> Result<(), Failure> {
    if let Some(prefix) = &args.prefix {
        if prefix.is_empty() && !args.all {
            return Err(Failure::invalid(
                "rm: an empty --prefix deletes every block in the store; add --all if that is what you want",
            ));
        }
        let store = open_store(config, Create::Never)?;
        let n = store
            .delete_by_prefix(prefix)
            .map_err(|e| Failure::store("rm --prefix", prefix, &e))?;
        if out.json {
            println!("{}", serde_json::json!({ "prefix": prefix, "deleted": n }));
        } else {
            let whence = if prefix.is_empty() {
                "(the whole store)".to_owned()
            } else {
                format!("under {prefix:?}")
            };
            out.info(format!("deleted {} {whence}", blocks(n as usize)));
        }
        return Ok(());
    }
    let store = open_store(config, Create::Never)?;
    // Deleting an absent key succeeds, so ask first: the summary says what was there.
    let (mut deleted, mut absent) = (Vec::new(), Vec::new());
    for key in &args.keys {
        let existed = match store.block_size(key) {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => return Err(Failure::store("rm", key, &e)),
        };
        store
            .delete_block(key)
            .map_err(|e| Failure::store("rm", key, &e))?;
        if existed {
            deleted.push(key);
        } else {
            absent.push(key);
        }
    }
    if out.json {
        println!(
            "{}",
            serde_json::json!({ "deleted": deleted, "absent": absent })
        );
    } else if absent.is_empty() {
        out.info(format!("deleted {}", blocks(deleted.len())));
    } else {
        out.info(format!(
            "deleted {} of {} ({} did not exist)",
            blocks(deleted.len()),
            args.keys.len(),
            absent.len()
        ));
    }
    Ok(())
}
