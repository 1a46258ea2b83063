//! Requests signed with SigV4 through rust-s3's own signing helpers, sent on the
//! bucket's reqwest client (its connection pool and time limit). Every request the store
//! makes goes through here, so each reply reaches the store's own checks whole.

use hmac::Mac;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, HOST};
use reqwest::{Method, RequestBuilder};
use s3::error::S3Error;
use s3::signing;
use s3::Bucket;
use time::OffsetDateTime;
use url::Url;

/// The SHA-256 of an empty payload, for requests without a body.
pub(crate) const EMPTY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub(crate) fn header(value: &str) -> Result<HeaderValue, S3Error> {
    Ok(HeaderValue::from_str(value)?)
}

/// The object's URL, encoded exactly as rust-s3 encodes it for its own requests.
pub(crate) fn object_url(bucket: &Bucket, object_key: &str) -> Result<Url, S3Error> {
    let mut url = bucket.url();
    url.push('/');
    url.push_str(&signing::uri_encode(object_key, false));
    Ok(Url::parse(&url)?)
}

/// The bucket's URL with a query (`list-type=2&prefix=…`, `delete`), encoded as rust-s3
/// encodes its own.
pub(crate) fn bucket_url(bucket: &Bucket, query: &[(&str, &str)]) -> Result<Url, S3Error> {
    let mut url = Url::parse(&format!("{}/", bucket.url()))?;
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in query {
            pairs.append_pair(k, v);
        }
    }
    Ok(url)
}

/// `20261124T061900Z`, SigV4's timestamp.
fn long_date(now: &OffsetDateTime) -> Result<String, S3Error> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    Ok(now.format(format)?)
}

/// A request for `url` with `headers` added, signed over them and over the hex
/// `payload_sha256`; anonymous credentials leave it unsigned.
pub(crate) async fn signed(
    bucket: &Bucket,
    method: Method,
    url: Url,
    payload_sha256: &str,
    mut headers: HeaderMap,
) -> Result<RequestBuilder, S3Error> {
    let now = OffsetDateTime::now_utc();
    let region = bucket.region();
    let host = bucket.host();
    let authority = host.split('/').next().unwrap_or(&host);
    headers.insert(HOST, header(authority)?);
    headers.insert(
        HeaderName::from_static("x-amz-content-sha256"),
        header(payload_sha256)?,
    );
    headers.insert(
        HeaderName::from_static("x-amz-date"),
        header(&long_date(&now)?)?,
    );
    let token = match bucket.session_token().await? {
        Some(token) => Some(token),
        None => bucket.security_token().await?,
    };
    if let Some(token) = token {
        headers.insert(
            HeaderName::from_static("x-amz-security-token"),
            header(&token)?,
        );
    }
    if let (Some(access), Some(secret)) = (bucket.access_key().await?, bucket.secret_key().await?) {
        let canonical =
            signing::canonical_request(method.as_str(), &url, &headers, payload_sha256)?;
        let to_sign = signing::string_to_sign(&now, &region, &canonical)?;
        let key = signing::signing_key(&now, &secret, &region, "s3")?;
        let mut mac = signing::HmacSha256::new_from_slice(&key)?;
        mac.update(to_sign.as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        let authorization = signing::authorization_header(
            &access,
            &now,
            &region,
            &signing::signed_header_string(&headers),
            &signature,
        )?;
        headers.insert(AUTHORIZATION, header(&authorization)?);
    }
    let mut request = bucket.http_client().request(method, url).headers(headers);
    if let Some(timeout) = bucket.request_timeout() {
        request = request.timeout(timeout);
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_is_sigv4s_long_date() {
        let t = OffsetDateTime::from_unix_timestamp(1_795_501_140).unwrap();
        assert_eq!(long_date(&t).unwrap(), "20261124T061900Z");
    }

    #[test]
    fn empty_payload_hash_is_sha256_of_nothing() {
        use sha2::{Digest, Sha256};
        assert_eq!(hex::encode(Sha256::digest(b"")), EMPTY_SHA256);
    }
}
