//! The conformance suite against `MemoryStore`.

use std::sync::Arc;

use blockstore::conformance::Target;
use blockstore::MemoryStore;

fn memory() -> Target {
    Target::new(Arc::new(MemoryStore::new()), false)
}

blockstore::conformance_suite!(memory);
