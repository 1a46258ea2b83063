//! The S3 backend: [`S3Store`], blocks as objects in a bucket, through rust-s3.
//!
//! Split by role: `store` (the `BlockStore` implementation), `put` (the
//! writer: PutObject hashed once), `get` (the reader: one copy per block), `sign`
//! (SigV4 requests on the bucket's client), `client` (the bucket handle
//! and the private runtime that drives it for synchronous callers), `retry` (the retry
//! policy and time limits), `error` (mapping replies and transport failures onto
//! error kinds, keeping no raw body), `config`.

mod client;
mod config;
mod error;
mod get;
mod put;
mod retry;
mod sign;
mod store;

pub use config::S3Config;
pub use error::S3Failure;
pub use store::S3Store;
