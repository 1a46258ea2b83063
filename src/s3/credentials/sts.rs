//! STS: AssumeRoleWithWebIdentity (unsigned; the token is the proof) and AssumeRole
//! (signed with the source profile's keys), as form POSTs, answered in XML.

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, HOST};
use sha2::{Digest, Sha256};
use url::Url;

use super::{parse_expiration, transient, Env, Failed, Fetched, Keys};
use crate::s3::sign::authorize;

/// Where STS requests go, and the region they are signed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) url: String,
    pub(crate) region: String,
}

impl Endpoint {
    /// `AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL`, else the regional STS endpoint.
    pub(crate) fn from_env(region: &str, env: Env) -> Endpoint {
        let url = env("AWS_ENDPOINT_URL_STS")
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
        Endpoint {
            url: url.trim_end_matches('/').to_owned(),
            region: region.to_owned(),
        }
    }
}

/// The first `<name>…</name>` of an XML document, unescaped.
fn element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    quick_xml::escape::unescape(&xml[start..end])
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Posts `form` to STS and reads the credentials of its reply.
async fn call(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    form: &[(&str, &str)],
    signer: Option<&Keys>,
) -> Result<Fetched, Failed> {
    let action = form
        .iter()
        .find(|(k, _)| *k == "Action")
        .map_or("STS", |(_, v)| *v);
    let url = Url::parse(&format!("{}/", endpoint.url)).map_err(|e| {
        Failed::from(format!(
            "the STS endpoint {:?} is not a URL: {e}",
            endpoint.url
        ))
    })?;
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
    );
    if let Some(keys) = signer {
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => {
                return Err(Failed::from(format!(
                    "the STS endpoint {} has no host",
                    endpoint.url
                )))
            }
        };
        headers.insert(
            HOST,
            HeaderValue::from_str(&host).map_err(|e| Failed::from(e.to_string()))?,
        );
        let payload = hex::encode(Sha256::digest(body.as_bytes()));
        authorize(
            &mut headers,
            keys,
            "POST",
            &url,
            &payload,
            &endpoint.region,
            "sts",
            time::OffsetDateTime::now_utc(),
        )
        .map_err(|e| Failed::from(format!("cannot sign the {action} request: {e}")))?;
    }
    let reply = http
        .post(url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| {
            format!(
                "{action} at {}: {}",
                endpoint.url,
                super::super::error::chain(&e.without_url())
            )
        })?;
    let status = reply.status().as_u16();
    let text = reply.text().await.map_err(|e| {
        transient(format!(
            "{action} at {}: reading the reply: {e}",
            endpoint.url
        ))
    })?;
    if !(200..300).contains(&status) {
        let failed = if status >= 500 || status == 429 {
            transient
        } else {
            Failed::from
        };
        return Err(failed(format!(
            "{action} at {} answered HTTP {status} {}: {}",
            endpoint.url,
            element(&text, "Code").unwrap_or_default(),
            element(&text, "Message").unwrap_or_default()
        )));
    }
    let field = |name: &str| {
        element(&text, name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Failed::from(format!(
                    "{action} at {} answered without {name}",
                    endpoint.url
                ))
            })
    };
    Ok(Fetched {
        keys: Keys {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            session_token: Some(field("SessionToken")?),
        },
        expires: Some(parse_expiration(&field("Expiration")?).map_err(Failed::from)?),
    })
}

/// EKS IRSA and friends: the platform's token for a role's keys.
pub(crate) async fn assume_role_with_web_identity(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    role_arn: &str,
    session_name: &str,
    token: &str,
) -> Result<Fetched, Failed> {
    call(
        http,
        endpoint,
        &[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", role_arn),
            ("RoleSessionName", session_name),
            ("WebIdentityToken", token),
        ],
        None,
    )
    .await
}

/// A profile's `role_arn` with its `source_profile`'s keys.
pub(crate) async fn assume_role(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    role_arn: &str,
    session_name: &str,
    external_id: Option<&str>,
    base: &Keys,
) -> Result<Fetched, Failed> {
    let mut form = vec![
        ("Action", "AssumeRole"),
        ("Version", "2011-06-15"),
        ("RoleArn", role_arn),
        ("RoleSessionName", session_name),
    ];
    if let Some(id) = external_id {
        form.push(("ExternalId", id));
    }
    call(http, endpoint, &form, Some(base)).await
}
