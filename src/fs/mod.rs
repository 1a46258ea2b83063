//! The filesystem backend: [`FsStore`], one file per block below a base directory.
//!
//! Split by role: `store` (the `BlockStore` implementation and its invariants), `sys`
//! (the system calls, all relative to a directory descriptor, and errno mapping), `work`
//! (the internal area for temporary files and locks), `walk` (listing, one directory at
//! a time), `durable` (which new directories still need a sync), `records` (checksum
//! records of recently read blocks), `overlap` (large whole reads checked while read).

mod config;
mod durable;
mod overlap;
mod records;
mod store;
mod sys;
mod walk;
mod work;

pub use config::FsConfig;
pub use store::{FsBackend, FsStore};
