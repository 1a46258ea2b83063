//! `rm KEY…` and `rm --prefix PREFIX`: delete blocks.

use std::path::Path;

use crate::common::{open_store, Create, Failure, Output};

#[derive(clap::Args, Debug)]
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
            out.info(format!("deleted {n} blocks"));
        }
        return Ok(());
    }
    let store = open_store(config, Create::Never)?;
    for key in &args.keys {
        store
            .delete_block(key)
            .map_err(|e| Failure::store("rm", key, &e))?;
    }
    if out.json {
        println!("{}", serde_json::json!({ "deleted_keys": args.keys }));
    } else {
        out.info(format!("deleted {} keys", args.keys.len()));
    }
    Ok(())
}
