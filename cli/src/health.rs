//! `health`: exit 0 when the store can serve reads and writes, else say why.

use std::path::Path;

use crate::common::{open_store, Create, Failure, Output};

pub fn run(config: Option<&Path>, out: &Output) -> Result<(), Failure> {
    let store = open_store(config, Create::Never)?;
    match store.health_check() {
        Ok(()) => {
            if out.json {
                println!("{}", serde_json::json!({ "healthy": true }));
            } else {
                out.info("healthy");
            }
            Ok(())
        }
        Err(e) => {
            if out.json {
                println!(
                    "{}",
                    serde_json::json!({ "healthy": false, "reason": e.to_string() })
                );
            }
            Err(Failure::store("health", "", &e))
        }
    }
}
