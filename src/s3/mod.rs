//! The S3 backend's configuration. The backend itself (`S3Store`) is not built yet;
//! [`crate::open`] reports a Config error for `type = "s3"`.

mod config;

pub use config::S3Config;
