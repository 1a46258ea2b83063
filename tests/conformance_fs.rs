//! The conformance suite against `FsStore`, a hierarchical backend, on a real filesystem.

use std::sync::Arc;

use blockstore::conformance::Target;
use blockstore::{Checksums, FsConfig, FsStore};

fn filesystem() -> Target {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = FsStore::open(FsConfig::new(dir.path().join("store"))).expect("open FsStore");
    Target::new(Arc::new(store), true).keep(dir)
}

/// The same with `checksums = "off"`: nothing written, nothing checked.
fn without_checksums() -> Target {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = FsConfig::new(dir.path().join("store"));
    config.checksums = Checksums::Off;
    let store = FsStore::open(config).expect("open FsStore");
    Target::new(Arc::new(store), true).keep(dir)
}

blockstore::conformance_suite!(filesystem);

mod checksums_off {
    use super::*;
    blockstore::conformance_suite!(without_checksums);
}
