//! `health`: exit 0 when the store can serve reads and writes, else say why.

use std::path::Path;

use blockstore::BlockStore;

use crate::common::{open_store, Create, Failure, Output};

/// The store's last errors, for `--json`.
fn recent_errors(store: &dyn BlockStore) -> serde_json::Value {
    let report = store.report();
    serde_json::Value::Array(
        report
            .recent_errors
            .iter()
            .map(|e| {
                let at =
                    e.at.duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64());
                serde_json::json!({ "at_unix": at, "kind": e.kind.label(), "message": e.message })
            })
            .collect(),
    )
}

/// What the backend says about itself (S3: endpoint, bucket, credential source).
fn about(store: &dyn BlockStore) -> serde_json::Value {
    store
        .report()
        .about
        .into_iter()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

pub fn run(config: Option<&Path>, out: &Output) -> Result<(), Failure> {
    let store = open_store(config, Create::Never)?;
    match store.health_check() {
        Ok(()) => {
            if out.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "healthy": true, "about": about(&*store),
                        "recent_errors": recent_errors(&*store),
                    })
                );
            } else {
                out.info("healthy");
                for (k, v) in store.report().about {
                    out.info(format!("  {k}: {v}"));
                }
            }
            Ok(())
        }
        Err(e) => {
            if out.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "healthy": false, "reason": e.to_string(), "about": about(&*store),
                        "recent_errors": recent_errors(&*store),
                    })
                );
            }
            Err(Failure::store("health", "", &e))
        }
    }
}
