//! HeadObject: a block's size without its bytes.

use reqwest::Method;

use super::client::Target;
use super::error::AttemptError;
use super::reply::{header, success};
use super::sign::{object_url, signed, EMPTY_SHA256};

/// What a HEAD said about an object.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) size: u64,
    /// The checksum record in the object's metadata, if any.
    pub(crate) sums: Option<std::sync::Arc<[u8]>>,
}

/// One HeadObject attempt; a 2xx without a `Content-Length` says nothing of the size
/// and is not taken as an answer.
pub(crate) async fn head_object(target: &Target, object_key: &str) -> Result<Head, AttemptError> {
    let url = object_url(&target.bucket, object_key)?;
    let request = signed(
        target,
        Method::HEAD,
        url,
        EMPTY_SHA256,
        target.customer_key.clone(),
    )
    .await?;
    let reply = success(request.send().await?).await?;
    let size = header(&reply, "content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| AttemptError::Invalid("a HEAD reply without Content-Length".into()))?;
    Ok(Head {
        size,
        sums: super::get::sums_of(&reply),
    })
}
