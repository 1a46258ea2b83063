//! The conformance suite against `S3Store` on a real S3 server (moto by default, or the
//! server named by `BLOCKSTORE_S3_ENDPOINT`), directly, through a pool, and with
//! checksums off.

mod support;

use std::sync::Arc;

use blockstore::conformance::Target;
use blockstore::{Pool, PoolConfig, S3Store};
use support::s3::{config, Cleanup};

/// Keys are stored as `key_prefix + key`, which must fit in 1024 bytes.
fn target(store: Arc<dyn blockstore::BlockStore>, config: blockstore::S3Config) -> Target {
    let room = 1024 - config.key_prefix.len();
    Target::new(store, false)
        .with_max_key_len(room)
        .keep(Cleanup(config))
}

fn s3() -> Target {
    let config = config();
    let store = S3Store::open(config.clone()).expect("open S3Store");
    target(Arc::new(store), config)
}

/// The same with `checksums = "off"`: no record written, nothing checked.
fn s3_without_checksums() -> Target {
    let mut config = config();
    config.checksums = blockstore::Checksums::Off;
    let store = S3Store::open(config.clone()).expect("open S3Store");
    target(Arc::new(store), config)
}

fn pool_over_s3() -> Target {
    let config = config();
    let store = S3Store::open(config.clone()).expect("open S3Store");
    let pool = Pool::new(
        Arc::new(store),
        PoolConfig {
            workers: 8,
            queue_capacity: 16,
        },
    )
    .expect("start pool");
    target(Arc::new(pool), config)
}

mod direct {
    use super::*;
    blockstore::conformance_suite!(s3);
}

mod pooled {
    use super::*;
    blockstore::conformance_suite!(pool_over_s3);
}

mod checksums_off {
    use super::*;
    blockstore::conformance_suite!(s3_without_checksums);
}
