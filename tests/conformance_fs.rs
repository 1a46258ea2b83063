//! The conformance suite against `FsStore`, a hierarchical backend, on a real filesystem.

use std::sync::Arc;

use blockstore::conformance::Target;
use blockstore::{FsConfig, FsStore};

fn filesystem() -> Target {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = FsStore::open(FsConfig::new(dir.path().join("store"))).expect("open FsStore");
    Target::new(Arc::new(store), true).keep(dir)
}

blockstore::conformance_suite!(filesystem);
