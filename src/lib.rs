//! A synchronous, crash-safe store for the blocks of a file-system cache.
//!
//! See the README for the contract every backend keeps, the configuration reference and
//! the errno table.
#![deny(missing_docs)]

pub mod backend;
mod checked;
mod config;
pub mod error;
pub mod fs;
mod gate;
pub mod key;
mod memory;
mod op;
pub mod pool;
pub mod s3;
mod store;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use config::{open, BackendKind, BlockStoreConfig, Config};
pub use error::{Error, ErrorKind, Result};
pub use fs::{FsConfig, FsStore};
pub use key::{block_key, parse_block_key, BlockKey};
pub use memory::MemoryStore;
pub use op::Op;
pub use pool::{Pool, PoolConfig};
pub use s3::S3Config;
#[cfg(feature = "s3")]
pub use s3::S3Store;
pub use store::{BlockRef, BlockStore, Blocks, BLOCK_SIZE};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
