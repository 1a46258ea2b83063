//! The conformance suite against `MemoryStore`.

use std::sync::Arc;

use blockstore::conformance::Target;
use blockstore::{Checksums, MemoryStore};

fn memory() -> Target {
    Target::new(Arc::new(MemoryStore::new()), false)
}

/// With checksums kept and checked, as the other backends do by default.
fn with_checksums() -> Target {
    Target::new(
        Arc::new(MemoryStore::with_checksums(Checksums::Crc32c)),
        false,
    )
}

blockstore::conformance_suite!(memory);

mod checksums_on {
    use super::*;
    blockstore::conformance_suite!(with_checksums);
}
