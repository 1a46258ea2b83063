//! The conformance suite through a `Pool`, over the memory and the filesystem backends.

use std::sync::Arc;

use blockstore::conformance::Target;
use blockstore::{FsConfig, FsStore, MemoryStore, Pool, PoolConfig};

fn pool_of(store: Arc<dyn blockstore::BlockStore>) -> Arc<Pool> {
    let config = PoolConfig {
        workers: 4,
        queue_capacity: 8,
    };
    Arc::new(Pool::new(store, config).expect("start pool"))
}

fn pool_over_memory() -> Target {
    Target::new(
        pool_of(Arc::new(MemoryStore::with_checksums(
            blockstore::Checksums::Crc32c,
        ))),
        false,
    )
}

fn pool_over_filesystem() -> Target {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = FsStore::open(FsConfig::new(dir.path())).expect("open FsStore");
    Target::new(pool_of(Arc::new(store)), true).keep(dir)
}

mod memory {
    use super::*;
    blockstore::conformance_suite!(pool_over_memory);
}

mod filesystem {
    use super::*;
    blockstore::conformance_suite!(pool_over_filesystem);
}
