//! The S3 backend: [`S3Store`], blocks as objects in a bucket, through rust-s3.
//!
//! Split by role: `store` (the `BlockStore` implementation), `put` (the writer:
//! PutObject hashed once), `get` (the reader: one copy per block, ranges checked),
//! `head` (sizes and ETags), `list` (the lister: pages checked), `delete` (the deleter:
//! replies counted key by key), `sign` (SigV4 requests on the bucket's client), `reply`
//! (status and bounded error bodies), `client` (the bucket handle and the private
//! runtime that drives it for synchronous callers), `retry` (the retry policy and time
//! limits), `error` (mapping replies and transport failures onto error kinds, keeping
//! no raw body), `config`.

mod client;
mod config;
mod delete;
mod error;
mod get;
mod head;
mod list;
mod put;
mod reply;
mod retry;
mod sign;
mod store;

pub use config::S3Config;
pub use error::S3Failure;
pub use store::S3Store;
