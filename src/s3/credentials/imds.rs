//! The EC2 instance metadata service: IMDSv2 (a session token from a PUT, then the
//! role's keys with the token), IMDSv1 (no token) only when configured.

use super::{transient, Failed, Fetched, JsonKeys};

/// How long the session token asked for lives, in seconds.
const TOKEN_TTL: &str = "21600";

async fn text(request: reqwest::RequestBuilder, what: &str) -> Result<String, Failed> {
    let reply = request.send().await.map_err(|e| {
        transient(format!(
            "{what}: {}",
            super::super::error::chain(&e.without_url())
        ))
    })?;
    let status = reply.status().as_u16();
    if status != 200 {
        let why = format!("{what}: HTTP {status}");
        return Err(if status >= 500 || status == 429 {
            transient(why)
        } else {
            Failed::from(why)
        });
    }
    reply
        .text()
        .await
        .map_err(|e| transient(format!("{what}: {e}")))
}

/// The instance role's keys from the service at `endpoint`.
pub(crate) async fn fetch(
    http: &reqwest::Client,
    endpoint: &str,
    v1_fallback: bool,
) -> Result<Fetched, Failed> {
    let token = text(
        http.put(format!("{endpoint}/latest/api/token"))
            .header("x-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL),
        &format!("IMDSv2 token from {endpoint}"),
    )
    .await;
    let token = match token {
        Ok(token) => Some(token.trim().to_owned()),
        Err(_) if v1_fallback => None,
        Err(e) => return Err(e),
    };
    let get = |path: &str| {
        let request = http.get(format!(
            "{endpoint}/latest/meta-data/iam/security-credentials/{path}"
        ));
        match &token {
            Some(t) => request.header("x-aws-ec2-metadata-token", t.as_str()),
            None => request,
        }
    };
    let roles = text(get(""), &format!("the instance role at {endpoint}")).await?;
    let role = roles
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or_else(|| {
            Failed::from(format!(
                "{endpoint} names no instance role (is one attached?)"
            ))
        })?
        .to_owned();
    let body = text(
        get(&role),
        &format!("the keys of role {role} at {endpoint}"),
    )
    .await?;
    JsonKeys::parse(body.as_bytes(), &format!("instance metadata at {endpoint}"))
        .map_err(Failed::from)
}
