//! Container credentials: ECS task roles (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`,
//! from 169.254.170.2) and EKS Pod Identity (`AWS_CONTAINER_CREDENTIALS_FULL_URI`
//! with an authorization token, often from a file the platform rotates).

use std::path::PathBuf;

use super::{config_error, transient, Env, Failed, Fetched, JsonKeys};
use crate::error::Result;

/// A container credentials endpoint and how to authorize to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Container {
    pub(crate) uri: String,
    token: Option<String>,
    /// Read at every fetch: the platform rotates it.
    token_file: Option<PathBuf>,
}

/// Hosts a full URI may name over plain http: loopback, and the link-local addresses
/// of ECS and EKS Pod Identity.
fn allowed_http_host(host: &str) -> bool {
    matches!(
        host,
        "localhost" | "169.254.170.2" | "169.254.170.23" | "[fd00:ec2::23]"
    ) || host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

impl Container {
    /// From the container variables, if set.
    pub(crate) fn from_env(env: Env) -> Result<Option<Container>> {
        let uri = match (
            env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
            env("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        ) {
            (Some(relative), _) => format!("http://169.254.170.2{relative}"),
            (None, Some(full)) => {
                let url = url::Url::parse(&full).map_err(|e| {
                    config_error(
                        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                        format!("{full:?} is not a URL: {e}"),
                    )
                })?;
                let host = url.host_str().unwrap_or_default();
                if url.scheme() != "https" && !allowed_http_host(host) {
                    return Err(config_error(
                        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                        format!("{full:?}: plain http only to loopback or the ECS / EKS link-local addresses"),
                    ));
                }
                full
            }
            (None, None) => return Ok(None),
        };
        Ok(Some(Container {
            uri,
            token: env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
            token_file: env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").map(PathBuf::from),
        }))
    }

    /// Fetches the keys.
    pub(crate) async fn fetch(
        &self,
        http: &reqwest::Client,
    ) -> std::result::Result<Fetched, Failed> {
        let token = match (&self.token_file, &self.token) {
            (Some(file), _) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| {
                        Failed::from(format!(
                            "cannot read the authorization token file {}: {e}",
                            file.display()
                        ))
                    })?
                    .trim()
                    .to_owned(),
            ),
            (None, token) => token.clone(),
        };
        let mut request = http.get(&self.uri);
        if let Some(token) = token {
            request = request.header(reqwest::header::AUTHORIZATION, token);
        }
        let reply = request.send().await.map_err(|e| {
            transient(format!(
                "{}: {}",
                self.uri,
                super::super::error::chain(&e.without_url())
            ))
        })?;
        let status = reply.status().as_u16();
        let body = reply
            .bytes()
            .await
            .map_err(|e| transient(format!("{}: {e}", self.uri)))?;
        if status != 200 {
            let why = format!("{} answered HTTP {status}", self.uri);
            return Err(if status >= 500 || status == 429 {
                transient(why)
            } else {
                Failed::from(why)
            });
        }
        JsonKeys::parse(&body, &self.uri).map_err(Failed::from)
    }
}
