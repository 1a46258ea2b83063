//! `stat KEY`: print a block's size.

use std::path::Path;

use crate::common::{open_store, Create, Failure, Output};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The block's key.
    key: String,
}

pub fn run(config: Option<&Path>, out: &Output, args: Args) -> Result<(), Failure> {
    let store = open_store(config, Create::Never)?;
    let size = store
        .block_size(&args.key)
        .map_err(|e| Failure::store("stat", &args.key, &e))?;
    if out.json {
        println!("{}", serde_json::json!({ "key": args.key, "size": size }));
    } else {
        println!("{size}");
    }
    Ok(())
}
