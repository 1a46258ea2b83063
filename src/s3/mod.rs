//! The S3 backend: `S3Store`, blocks as objects in a bucket, through rust-s3.
//!
//! Split by role: `store` (the `BlockStore` implementation), `put` (the writer:
//! PutObject hashed once), `get` (the reader: one copy per block, ranges checked),
//! `head` (sizes and ETags), `list` (the lister: pages checked), `delete` (the deleter:
//! replies counted key by key), `sign` (SigV4 requests on the bucket's client), `reply`
//! (status and bounded error bodies), `client` (the bucket handle and the private
//! runtime that drives it for synchronous callers), `retry` (the retry policy and time
//! limits), `limiter` (the store's request rate, slowed by throttling), `credentials` (where keys come from, and their refresh), `error` (mapping replies and transport failures onto error kinds, keeping
//! no raw body), `config`.
//!
//! Without the `s3` feature only [`S3Config`] is built, so a configuration that names
//! S3 still parses (and opening it says the feature is off).

#[cfg(feature = "s3")]
mod client;
mod config;
#[cfg(feature = "s3")]
mod credentials;
#[cfg(feature = "s3")]
mod delete;
#[cfg(feature = "s3")]
mod error;
#[cfg(feature = "s3")]
mod get;
#[cfg(feature = "s3")]
mod head;
#[cfg(feature = "s3")]
mod limiter;
#[cfg(feature = "s3")]
mod list;
#[cfg(feature = "s3")]
mod put;
#[cfg(feature = "s3")]
mod reply;
#[cfg(feature = "s3")]
mod retry;
#[cfg(feature = "s3")]
mod sign;
#[cfg(feature = "s3")]
mod store;

pub use config::{CredentialSource, S3Config, Sse};
#[cfg(feature = "s3")]
pub use error::S3Failure;
#[cfg(feature = "s3")]
pub use store::{S3Backend, S3Store};
