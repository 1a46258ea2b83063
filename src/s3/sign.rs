//! Requests signed with SigV4 through rust-s3's own signing helpers, sent on the
//! store's reqwest client (its connection pool, trusted roots and time limit). Every request the store
//! makes goes through here, so each reply reaches the store's own checks whole.

use hmac::Mac;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, HOST};
use reqwest::{Method, RequestBuilder};
use s3::error::S3Error;
use s3::signing;
use s3::Bucket;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use url::Url;

use super::client::Target;
use super::credentials::Keys;
use super::error::AttemptError;

/// The payload hash of a write that is not hashed (`unsigned_payload`).
pub(crate) const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

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

/// The header names in a canonical request: lower case, sorted, each once.
fn header_names(headers: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = headers
        .keys()
        .map(|k| k.as_str().to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `host;range;x-amz-date`: the signed header list.
fn signed_headers(headers: &HeaderMap) -> String {
    header_names(headers).join(";")
}

/// SigV4's canonical request. Ours rather than rust-s3's, which sorts the
/// `name:value` lines as whole strings: when one header's name is the start of
/// another's (`…-customer-key` and `…-customer-key-md5`, `x-amz-server-side-encryption`
/// and `…-aws-kms-key-id`), its order differs from the signed header list's, and a
/// server that checks signatures (AWS, Ceph RGW) refuses the request. Lines are sorted
/// by name; values are trimmed, inner runs of spaces made one, repeated names joined
/// with commas.
fn canonical_request(
    method: &str,
    url: &Url,
    headers: &HeaderMap,
    payload_sha256: &str,
) -> Result<String, S3Error> {
    let mut lines = Vec::new();
    for name in header_names(headers) {
        let mut values = Vec::new();
        for value in headers.get_all(name.as_str()) {
            values.push(
                value
                    .to_str()?
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        lines.push(format!("{name}:{}", values.join(",")));
    }
    Ok(format!(
        "{method}\n{uri}\n{query}\n{headers}\n\n{signed}\n{payload_sha256}",
        uri = signing::canonical_uri_string(url),
        query = signing::canonical_query_string(url),
        headers = lines.join("\n"),
        signed = signed_headers(headers),
    ))
}

/// `20261124T061900Z`, SigV4's timestamp.
fn long_date(now: &OffsetDateTime) -> Result<String, S3Error> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    Ok(now.format(format)?)
}

/// Signs a request with SigV4: adds `x-amz-date`, the session token if the keys have
/// one, and `Authorization` for `service` in `region`. `headers` must already hold
/// `host` and every other header to sign.
#[allow(clippy::too_many_arguments)]
pub(crate) fn authorize(
    headers: &mut HeaderMap,
    keys: &Keys,
    method: &str,
    url: &Url,
    payload_sha256: &str,
    region: &str,
    service: &str,
    now: OffsetDateTime,
) -> Result<(), S3Error> {
    let stamp = long_date(&now)?;
    headers.insert(HeaderName::from_static("x-amz-date"), header(&stamp)?);
    if let Some(token) = &keys.session_token {
        let mut value = header(token)?;
        value.set_sensitive(true);
        headers.insert(HeaderName::from_static("x-amz-security-token"), value);
    }
    let canonical = canonical_request(method, url, headers, payload_sha256)?;
    let scope = format!("{}/{region}/{service}/aws4_request", &stamp[..8]);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = format!("AWS4{}", keys.secret_access_key).into_bytes();
    for part in [&stamp[..8], region, service, "aws4_request"] {
        let mut mac = signing::HmacSha256::new_from_slice(&key)?;
        mac.update(part.as_bytes());
        key = mac.finalize().into_bytes().to_vec();
    }
    let mut mac = signing::HmacSha256::new_from_slice(&key)?;
    mac.update(to_sign.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    let mut authorization = header(&format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope},SignedHeaders={},Signature={signature}",
        keys.access_key_id,
        signed_headers(headers)
    ))?;
    authorization.set_sensitive(true);
    headers.insert(AUTHORIZATION, authorization);
    Ok(())
}

/// A request for `url` with `headers` added, signed over them and over the hex
/// `payload_sha256` with the store's current keys; anonymous access leaves it
/// unsigned. Keys that cannot be had are `AttemptError::Credentials`.
pub(crate) async fn signed(
    target: &Target,
    method: Method,
    url: Url,
    payload_sha256: &str,
    mut headers: HeaderMap,
) -> Result<RequestBuilder, AttemptError> {
    let bucket = &target.bucket;
    let host = bucket.host();
    let authority = host.split('/').next().unwrap_or(&host);
    headers.insert(HOST, header(authority)?);
    headers.insert(
        HeaderName::from_static("x-amz-content-sha256"),
        header(payload_sha256)?,
    );
    match target.credentials.keys().await {
        Ok(Some(keys)) => authorize(
            &mut headers,
            &keys,
            method.as_str(),
            &url,
            payload_sha256,
            &bucket.region().to_string(),
            "s3",
            OffsetDateTime::now_utc(),
        )?,
        Ok(None) => {
            let now = long_date(&OffsetDateTime::now_utc())?;
            headers.insert(HeaderName::from_static("x-amz-date"), header(&now)?);
        }
        Err(failed) => return Err(AttemptError::Credentials(failed.why, failed.transient)),
    }
    let mut request = target.http.request(method, url).headers(headers);
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

    /// AWS's example of a signed GET with a range (the S3 SigV4 documentation's
    /// "GET Object" example): the canonical request, line by line.
    #[test]
    fn canonical_request_of_the_aws_example() {
        let url = Url::parse("https://examplebucket.s3.amazonaws.com/test.txt").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(HOST, header("examplebucket.s3.amazonaws.com").unwrap());
        headers.insert("range", header("bytes=0-9").unwrap());
        headers.insert("x-amz-content-sha256", header(EMPTY_SHA256).unwrap());
        headers.insert("x-amz-date", header("20130524T000000Z").unwrap());
        let expected = "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
             x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            canonical_request("GET", &url, &headers, EMPTY_SHA256).unwrap(),
            expected
        );
    }

    /// A header whose name starts another's comes first in both lists, as in the signed
    /// header list (rust-s3's own canonical request put it second).
    #[test]
    fn canonical_headers_sort_by_name() {
        let url = Url::parse("https://b.s3.amazonaws.com/k").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-amz-server-side-encryption-customer-key-md5",
            header("bWQ1").unwrap(),
        );
        headers.insert(
            "x-amz-server-side-encryption-customer-key",
            header("a2V5").unwrap(),
        );
        headers.insert("x-amz-meta-spaced", header("  a   b  ").unwrap());
        let canonical = canonical_request("PUT", &url, &headers, "UNSIGNED-PAYLOAD").unwrap();
        let lines: Vec<&str> = canonical.lines().collect();
        assert_eq!(lines[3], "x-amz-meta-spaced:a b");
        assert_eq!(lines[4], "x-amz-server-side-encryption-customer-key:a2V5");
        assert_eq!(
            lines[5],
            "x-amz-server-side-encryption-customer-key-md5:bWQ1"
        );
        assert_eq!(
            lines[7],
            "x-amz-meta-spaced;x-amz-server-side-encryption-customer-key;x-amz-server-side-encryption-customer-key-md5"
        );
    }

    /// The same example signed: AWS's documented signature for it.
    #[test]
    fn signature_of_the_aws_example() {
        let url = Url::parse("https://examplebucket.s3.amazonaws.com/test.txt").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(HOST, header("examplebucket.s3.amazonaws.com").unwrap());
        headers.insert("range", header("bytes=0-9").unwrap());
        headers.insert("x-amz-content-sha256", header(EMPTY_SHA256).unwrap());
        let keys = Keys {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let now = OffsetDateTime::from_unix_timestamp(1_369_353_600).unwrap(); // 2013-05-24
        authorize(
            &mut headers,
            &keys,
            "GET",
            &url,
            EMPTY_SHA256,
            "us-east-1",
            "s3",
            now,
        )
        .unwrap();
        assert_eq!(
            headers[AUTHORIZATION].to_str().unwrap(),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn empty_payload_hash_is_sha256_of_nothing() {
        use sha2::{Digest, Sha256};
        assert_eq!(hex::encode(Sha256::digest(b"")), EMPTY_SHA256);
    }
}
