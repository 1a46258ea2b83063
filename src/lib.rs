//! A synchronous, crash-safe store for the blocks of a file-system cache.
//!
//! One blocking, object-safe trait, [`BlockStore`], for immutable blocks of up to 4 MiB
//! under keys like `export/path/file/chunk-0/block-3`, with interchangeable backends:
//!
//! - [`MemoryStore`]: an ordered map in memory, for tests;
//! - [`FsStore`]: one file per block, atomic and durable writes, exact modes, no link
//!   ever followed, several processes on one tree;
//! - `S3Store` (feature `s3`, on by default): objects in a bucket on AWS, Ceph RGW,
//!   MinIO, SeaweedFS or GCS's XML API, through rust-s3 on a private runtime;
//! - [`Pool`]: bounded, batched concurrency over any of them, itself a store.
//!
//! Every store keeps [the contract](contract): the same keys, the same errors in the
//! same order, the same answers, checked by one conformance suite.
//!
//! ```
//! use blockstore::{block_key, BlockStore, ErrorKind, FsConfig, FsStore};
//!
//! let dir = tempfile::tempdir()?;
//! let store = FsStore::open(FsConfig::new(dir.path().join("blocks")))?;
//! let key = block_key("export/path/file", 0, 3); // "export/path/file/chunk-0/block-3"
//!
//! store.write_block(&key, b"hello, block")?;
//! assert_eq!(store.read_block(&key)?, b"hello, block");
//! assert_eq!(store.read_block_range(&key, 7, u64::MAX)?, b"block");
//! assert_eq!(store.list_by_prefix("export/path/")?, vec![key.clone()]);
//!
//! store.delete_block(&key)?;
//! let err = store.read_block(&key).unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::NotFound);
//! assert_eq!(err.errno(), libc::ENOENT);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! From a configuration file, [`open`] builds whichever store it names:
//!
//! ```
//! let config = blockstore::Config::from_toml_str(r#"
//!     [block_store]
//!     type = "memory"
//! "#)?;
//! let store = blockstore::open(&config)?;
//! store.write_block("a/b", b"x")?;
//! # Ok::<(), blockstore::Error>(())
//! ```
//!
//! Writing a backend of your own: [`backend`].
#![deny(missing_docs)]

pub mod backend;
mod checked;
mod config;
pub mod contract;
mod crc;
pub mod error;
pub mod fs;
mod gate;
mod instrument;
pub mod integrity;
pub mod key;
mod memory;
mod op;
pub mod pool;
pub mod s3;
mod store;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use config::{open, BackendKind, BlockStoreConfig, Config, Opened};
pub use error::{Error, ErrorKind, Result};
pub use fs::{FsConfig, FsStore};
pub use instrument::{Latency, OpReport, RecentError};
pub use integrity::{Checksums, Integrity};
pub use key::{block_key, content_prefix, parse_block_key, BlockKey};
pub use memory::MemoryStore;
pub use op::Op;
pub use pool::{Pool, PoolConfig};
#[cfg(feature = "s3")]
pub use s3::S3Store;
pub use s3::{CredentialSource, S3Config};
pub use store::{BlockRef, BlockStore, Blocks, Report, BLOCK_SIZE};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
