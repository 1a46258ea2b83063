//! Where the S3 store's credentials come from, and keeping them fresh.
//!
//! Each store resolves its source when it opens ([`resolve`], from the configuration,
//! the environment and the shared files; nothing process-wide) and fetches keys when a
//! request first needs them. Temporary keys are refreshed ahead of expiry by one task
//! for all the store's threads while the current keys keep serving; only keys that
//! have expired make callers wait for (or fail with) a refresh.
//!
//! One role per file: `files` (the shared config and credentials files and their
//! profiles), `sts` (AssumeRole, AssumeRoleWithWebIdentity), `imds` (EC2 instance
//! metadata), `container` (ECS and EKS Pod Identity), `process` (`credential_process`).

mod container;
mod files;
mod imds;
mod process;
mod sts;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};
use crate::op::Op;

use super::config::{CredentialSource, S3Config};

/// How long before expiry temporary keys are refreshed (at most half their lifetime).
const REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);

/// Why keys could not be had, and whether trying again later may help (an endpoint
/// that did not answer or answered 5xx) or not (keys refused, a file missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failed {
    pub(crate) why: String,
    pub(crate) transient: bool,
}

impl From<String> for Failed {
    fn from(why: String) -> Failed {
        Failed {
            why,
            transient: false,
        }
    }
}

/// A failure that may pass: no answer, a connection refused, a 5xx.
pub(crate) fn transient(why: String) -> Failed {
    Failed {
        why,
        transient: true,
    }
}

/// How long keys that arrive already expired (or about to) are used before they are
/// fetched again, as the AWS SDKs do: a metadata service with a stale answer must not
/// be asked again for every request.
const STALE_GRACE: Duration = Duration::from_secs(5 * 60);
/// After a failed refresh, the next is not tried sooner than this, in the background or
/// (once the keys expired) for callers, who get the last failure meanwhile.
const REFRESH_RETRY: Duration = Duration::from_secs(5);
/// The most a fetch from a link-local metadata service may take, all its requests
/// together.
const METADATA_LIMIT: Duration = Duration::from_secs(6);

/// Signing keys. `Debug` shows the access key id only.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: Option<String>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Keys and when they stop working (`None`: never).
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub(crate) keys: Keys,
    pub(crate) expires: Option<SystemTime>,
}

/// A resolved way of getting keys.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Anonymous,
    Static {
        keys: Keys,
        /// `the configuration`, `the environment`, `profile "x"`.
        from: String,
    },
    WebIdentity {
        role_arn: String,
        session_name: String,
        token_file: PathBuf,
        sts: sts::Endpoint,
    },
    AssumeRole {
        role_arn: String,
        session_name: String,
        external_id: Option<String>,
        base: Box<Source>,
        sts: sts::Endpoint,
        /// The profile that names the role, for messages.
        profile: String,
    },
    Process {
        command: String,
        profile: String,
    },
    Container(container::Container),
    Imds {
        endpoint: String,
        v1_fallback: bool,
    },
}

impl Source {
    /// What errors and `health` name: never a secret.
    pub(crate) fn describe(&self) -> String {
        match self {
            Source::Anonymous => "anonymous access".into(),
            Source::Static { keys, from } => {
                format!(
                    "static keys from {from} (access key {})",
                    keys.access_key_id
                )
            }
            Source::WebIdentity {
                role_arn,
                token_file,
                ..
            } => format!(
                "web identity role {role_arn} (token file {})",
                token_file.display()
            ),
            Source::AssumeRole {
                role_arn,
                base,
                profile,
                ..
            } => format!(
                "profile {profile:?}: role {role_arn} assumed with {}",
                base.describe()
            ),
            Source::Process { profile, .. } => {
                format!("credential_process of profile {profile:?}")
            }
            Source::Container(c) => format!("container credentials at {}", c.uri),
            Source::Imds { endpoint, .. } => format!("EC2 instance metadata at {endpoint}"),
        }
    }

    /// Fetches keys once; the error says why, without secrets.
    fn fetch<'a>(
        &'a self,
        clients: &'a Clients,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = std::result::Result<Option<Fetched>, Failed>>
                + Send
                + 'a,
        >,
    > {
        Box::pin(async move {
            match self {
                Source::Anonymous => Ok(None),
                Source::Static { keys, .. } => Ok(Some(Fetched {
                    keys: keys.clone(),
                    expires: None,
                })),
                Source::WebIdentity {
                    role_arn,
                    session_name,
                    token_file,
                    sts,
                } => {
                    // Re-read at every refresh: the platform rotates the token.
                    let token = std::fs::read_to_string(token_file).map_err(|e| {
                        Failed::from(format!(
                            "cannot read the web identity token file {}: {e}",
                            token_file.display()
                        ))
                    })?;
                    sts::assume_role_with_web_identity(
                        &clients.general,
                        sts,
                        role_arn,
                        session_name,
                        token.trim(),
                    )
                    .await
                    .map(Some)
                }
                Source::AssumeRole {
                    role_arn,
                    session_name,
                    external_id,
                    base,
                    sts,
                    ..
                } => {
                    let base_keys = base
                        .fetch(clients)
                        .await
                        .map_err(|e| Failed {
                            why: format!("{}: {}", base.describe(), e.why),
                            transient: e.transient,
                        })?
                        .ok_or_else(|| {
                            Failed::from(
                                "the source profile has no keys to sign AssumeRole".to_owned(),
                            )
                        })?;
                    sts::assume_role(
                        &clients.general,
                        sts,
                        role_arn,
                        session_name,
                        external_id.as_deref(),
                        &base_keys.keys,
                    )
                    .await
                    .map(Some)
                }
                Source::Process { command, .. } => {
                    process::run(command, clients.timeout).await.map(Some)
                }
                Source::Container(c) => c.fetch(&clients.metadata).await.map(Some),
                Source::Imds {
                    endpoint,
                    v1_fallback,
                } => imds::fetch(&clients.metadata, endpoint, *v1_fallback)
                    .await
                    .map(Some),
            }
        })
    }
}

/// The HTTP clients credential sources use: `general` (STS, proxies honoured) and
/// `metadata` (link-local services: no proxy, short time limits, so a machine
/// without them does not stall a call for long).
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    pub(crate) general: reqwest::Client,
    pub(crate) metadata: reqwest::Client,
    pub(crate) timeout: Duration,
}

impl Clients {
    pub(crate) fn new(general: reqwest::Client, timeout: Duration) -> Result<Clients> {
        let metadata = reqwest::Client::builder()
            .use_rustls_tls()
            .no_proxy()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5).min(timeout))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Backend, Op::Open)
                    .with_detail("cannot build the metadata HTTP client")
                    .with_source(e)
            })?;
        Ok(Clients {
            general,
            metadata,
            timeout,
        })
    }
}

/// The store's credentials: its source, the keys it has, and their refresh.
pub(crate) struct Provider {
    source: Source,
    described: String,
    clients: Clients,
    current: Mutex<Option<Stamped>>,
    /// One refresh at a time; callers whose keys expired wait on it.
    refresh: tokio::sync::Mutex<()>,
    /// A refresh ahead of expiry is running in the background.
    refreshing_ahead: AtomicBool,
    /// Why the last refresh failed, if it did, and when.
    last_error: Mutex<Option<(Failed, Instant)>>,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("source", &self.described)
            .finish_non_exhaustive()
    }
}

/// Keys that are still good at `now`, and whether it is time to refresh them.
fn state(fetched: &Fetched, fetched_at: SystemTime, now: SystemTime) -> (bool, bool) {
    match fetched.expires {
        None => (true, false),
        Some(expires) => {
            let lifetime = expires.duration_since(fetched_at).unwrap_or_default();
            let ahead = REFRESH_AHEAD.min(lifetime / 2);
            let valid = now < expires;
            let due = now + ahead >= expires;
            (valid, due)
        }
    }
}

impl Provider {
    pub(crate) fn new(source: Source, clients: Clients) -> Provider {
        Provider {
            described: source.describe(),
            source,
            clients,
            current: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            refreshing_ahead: AtomicBool::new(false),
            last_error: Mutex::new(None),
        }
    }

    /// The source, as errors and `health` name it.
    pub(crate) fn describe(&self) -> &str {
        &self.described
    }

    /// The keys to sign with now (`None`: anonymous). Keys near expiry are refreshed
    /// in the background; expired ones are refreshed before the caller goes on, at most
    /// once per [`REFRESH_RETRY`] while the source keeps failing.
    pub(crate) async fn keys(self: &Arc<Self>) -> std::result::Result<Option<Keys>, Failed> {
        if let Some(keys) = self.usable() {
            return Ok(keys);
        }
        let _one = self.refresh.lock().await;
        // Another caller may have refreshed while this one waited.
        if let Some(keys) = self.usable() {
            return Ok(keys);
        }
        if let Some(failed) = self.recent_failure() {
            return Err(self.no_keys(&failed));
        }
        match self.refresh_now().await {
            Ok(keys) => Ok(keys),
            Err(failed) => Err(self.no_keys(&failed)),
        }
    }

    /// The last failure, while it is recent enough to stand for the next attempt.
    fn recent_failure(&self) -> Option<Failed> {
        self.last_error
            .lock()
            .as_ref()
            .filter(|(_, at)| at.elapsed() < REFRESH_RETRY)
            .map(|(f, _)| f.clone())
    }

    /// The error for a caller whose keys expired (or never came) and could not be had.
    fn no_keys(&self, failed: &Failed) -> Failed {
        let current = self.current.lock().clone();
        let why = match current.and_then(|f| f.0.expires) {
            Some(expired) => format!(
                "the credentials from {} expired at {} and could not be refreshed: {}",
                self.described,
                rfc3339(expired),
                failed.why
            ),
            None => format!(
                "cannot get credentials from {}: {}",
                self.described, failed.why
            ),
        };
        Failed {
            why,
            transient: failed.transient,
        }
    }

    /// The current keys if they are still valid, starting a refresh ahead of expiry
    /// when it is due (and no failed one is recent); `None` when the caller must
    /// refresh.
    fn usable(self: &Arc<Self>) -> Option<Option<Keys>> {
        let now = SystemTime::now();
        let current = self.current.lock().clone();
        let fetched = current?;
        let (valid, due) = state(&fetched.0, fetched.1, now);
        if !valid {
            return None;
        }
        if due
            && self.recent_failure().is_none()
            && !self.refreshing_ahead.swap(true, Ordering::AcqRel)
        {
            let provider = self.clone();
            tokio::spawn(async move {
                let _one = provider.refresh.lock().await;
                let still_due = provider
                    .current
                    .lock()
                    .as_ref()
                    .is_some_and(|f| state(&f.0, f.1, SystemTime::now()).1);
                if still_due {
                    let _ = provider.refresh_now().await;
                }
                provider.refreshing_ahead.store(false, Ordering::Release);
            });
        }
        Some(fetched.0.keys_option())
    }

    /// Fetches keys now, within the source's time limit; on failure the current keys
    /// stay while they are valid.
    async fn refresh_now(&self) -> std::result::Result<Option<Keys>, Failed> {
        let limit = match self.source {
            Source::Imds { .. } | Source::Container(_) => METADATA_LIMIT,
            _ => self.clients.timeout,
        };
        let fetched = match tokio::time::timeout(limit, self.source.fetch(&self.clients)).await {
            Ok(result) => result,
            Err(_) => Err(transient(format!("no keys within {} s", limit.as_secs()))),
        };
        match fetched {
            Ok(Some(mut fetched)) => {
                let now = SystemTime::now();
                // Keys already expired: use them a while rather than ask again for every
                // request (a metadata service with a stale answer, or a clock that is
                // off); the server says whether it still takes them.
                if fetched.expires.is_some_and(|e| e <= now) {
                    #[cfg(feature = "tracing")]
                    tracing::warn!(
                        credentials = self.described.as_str(),
                        expires = fetched.expires.map(rfc3339).unwrap_or_default(),
                        "the credential source gave keys that have expired (is the clock right?); using them for five minutes"
                    );
                    fetched.expires = Some(now + STALE_GRACE);
                }
                let keys = fetched.keys.clone();
                *self.current.lock() = Some(Arc::new((fetched, now)));
                *self.last_error.lock() = None;
                Ok(Some(keys))
            }
            Ok(None) => {
                *self.current.lock() = Some(Arc::new((Fetched::anonymous(), SystemTime::now())));
                Ok(None)
            }
            Err(failed) => {
                *self.last_error.lock() = Some((failed.clone(), Instant::now()));
                let current = self.current.lock().clone();
                match current {
                    Some(f) if state(&f.0, f.1, SystemTime::now()).0 => Ok(f.0.keys_option()),
                    _ => Err(failed),
                }
            }
        }
    }

    /// Forgets the current keys (the server said they expired): the next request
    /// fetches new ones.
    pub(crate) fn invalidate(&self) {
        *self.current.lock() = None;
    }

    /// Why the last refresh failed, if it did (for `health`).
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().as_ref().map(|(f, _)| f.why.clone())
    }
}

/// Keys and the moment they were fetched.
type Stamped = Arc<(Fetched, SystemTime)>;

impl Fetched {
    fn anonymous() -> Fetched {
        Fetched {
            keys: Keys {
                access_key_id: String::new(),
                secret_access_key: String::new(),
                session_token: None,
            },
            expires: None,
        }
    }

    fn keys_option(&self) -> Option<Keys> {
        (!self.keys.access_key_id.is_empty()).then(|| self.keys.clone())
    }
}

/// A time as RFC 3339, for messages.
fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{t:?}"))
}

/// Parses an RFC 3339 expiration (`2026-12-01T18:33:52Z`).
pub(crate) fn parse_expiration(text: &str) -> std::result::Result<SystemTime, String> {
    time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| format!("the expiration {text:?} is not an RFC 3339 time: {e}"))
}

/// The JSON shape IMDS, container endpoints and `credential_process` share (the
/// session token is `Token` in the first two, `SessionToken` in the last).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct JsonKeys {
    access_key_id: String,
    secret_access_key: String,
    #[serde(alias = "SessionToken")]
    token: Option<String>,
    expiration: Option<String>,
    /// IMDS's `Success`.
    code: Option<String>,
}

impl JsonKeys {
    pub(crate) fn parse(body: &[u8], what: &str) -> std::result::Result<Fetched, String> {
        let json: JsonKeys = serde_json::from_slice(body)
            .map_err(|e| format!("{what} answered with JSON that holds no keys: {e}"))?;
        if let Some(code) = json.code.as_deref().filter(|c| *c != "Success") {
            return Err(format!("{what} answered Code {code:?}"));
        }
        if json.access_key_id.is_empty() || json.secret_access_key.is_empty() {
            return Err(format!("{what} answered with empty keys"));
        }
        Ok(Fetched {
            keys: Keys {
                access_key_id: json.access_key_id,
                secret_access_key: json.secret_access_key,
                session_token: json.token.filter(|t| !t.is_empty()),
            },
            expires: json
                .expiration
                .as_deref()
                .map(parse_expiration)
                .transpose()?,
        })
    }
}

/// The environment as a lookup, so tests can give their own.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment; empty values count as unset.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn config_error(key: &str, why: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, Op::Open)
        .with_key(key)
        .with_detail(why.into())
}

/// The session name for assumed roles: `AWS_ROLE_SESSION_NAME`, else one naming the
/// program and process.
fn session_name(env: Env) -> String {
    env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| format!("blockstore-{}", std::process::id()))
}

/// Resolves the configuration's credential source; contacts nobody. `Config` errors
/// name what is missing or wrong (key, variable, file, profile).
pub(crate) fn resolve(config: &S3Config, env: Env) -> Result<Source> {
    let key = "block_store.s3.credentials";
    let configured = configured_keys(config)?;
    match config.credentials {
        CredentialSource::Anonymous => Ok(Source::Anonymous),
        CredentialSource::Static => configured.ok_or_else(|| {
            config_error(
                key,
                "\"static\" needs block_store.s3.access_key_id and secret_access_key",
            )
        }),
        CredentialSource::Env => env_keys(env)?.ok_or_else(|| {
            config_error(
                key,
                "\"env\" needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment",
            )
        }),
        CredentialSource::WebIdentity => web_identity(config, env)?.ok_or_else(|| {
            config_error(
                key,
                "\"web_identity\" needs AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN in the environment",
            )
        }),
        CredentialSource::Profile => {
            files::Files::from_env(env)?.source(&profile_name(config, env), config, env)
        }
        CredentialSource::Container => container::Container::from_env(env)?.map(Source::Container).ok_or_else(|| {
            config_error(
                key,
                "\"container\" needs AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or AWS_CONTAINER_CREDENTIALS_FULL_URI",
            )
        }),
        CredentialSource::Imds => Ok(imds_source(config, env)),
        CredentialSource::Chain => {
            if let Some(s) = configured {
                return Ok(s);
            }
            if let Some(s) = env_keys(env)? {
                return Ok(s);
            }
            if let Some(s) = web_identity(config, env)? {
                return Ok(s);
            }
            let files = files::Files::from_env(env)?;
            let profile = profile_name(config, env);
            // A profile named by the configuration or AWS_PROFILE must exist; the
            // default profile is used when the files have one.
            if !config.profile.is_empty() || env("AWS_PROFILE").is_some() || files.has(&profile) {
                return files.source(&profile, config, env);
            }
            if let Some(c) = container::Container::from_env(env)? {
                return Ok(Source::Container(c));
            }
            if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
                return Err(config_error(
                    key,
                    "no credentials found: none in the configuration, none in AWS_* variables, no web identity, no profile, no container credentials, and AWS_EC2_METADATA_DISABLED=true; set credentials = \"anonymous\" for a public bucket",
                ));
            }
            Ok(imds_source(config, env))
        }
    }
}

fn profile_name(config: &S3Config, env: Env) -> String {
    if !config.profile.is_empty() {
        config.profile.clone()
    } else {
        env("AWS_PROFILE").unwrap_or_else(|| "default".into())
    }
}

fn imds_source(config: &S3Config, env: Env) -> Source {
    Source::Imds {
        endpoint: env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or_else(|| "http://169.254.169.254".into())
            .trim_end_matches('/')
            .to_owned(),
        v1_fallback: config.imds_v1,
    }
}

/// The configuration's own keys, if it has them.
fn configured_keys(config: &S3Config) -> Result<Option<Source>> {
    match (
        config.access_key_id.is_empty(),
        config.secret_access_key.is_empty(),
    ) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some(Source::Static {
            keys: Keys {
                access_key_id: config.access_key_id.clone(),
                secret_access_key: config.secret_access_key.clone(),
                session_token: (!config.session_token.is_empty())
                    .then(|| config.session_token.clone()),
            },
            from: "the configuration".into(),
        })),
        (false, true) => Err(config_error(
            "block_store.s3.secret_access_key",
            "an access key id is set but no secret access key",
        )),
        (true, false) => Err(config_error(
            "block_store.s3.access_key_id",
            "a secret access key is set but no access key id",
        )),
    }
}

/// `AWS_ACCESS_KEY_ID` and friends, if set.
fn env_keys(env: Env) -> Result<Option<Source>> {
    match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (None, None) => Ok(None),
        (Some(access), Some(secret)) => Ok(Some(Source::Static {
            keys: Keys {
                access_key_id: access,
                secret_access_key: secret,
                session_token: env("AWS_SESSION_TOKEN"),
            },
            from: "the environment (AWS_ACCESS_KEY_ID)".into(),
        })),
        (Some(_), None) => Err(config_error(
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not",
        )),
        (None, Some(_)) => Err(config_error(
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not",
        )),
    }
}

/// Web identity from `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`, if set.
fn web_identity(config: &S3Config, env: Env) -> Result<Option<Source>> {
    match (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN")) {
        (None, None) => Ok(None),
        (Some(file), Some(role_arn)) => Ok(Some(Source::WebIdentity {
            role_arn,
            session_name: session_name(env),
            token_file: PathBuf::from(file),
            sts: sts::Endpoint::from_env(&config.region, env),
        })),
        (Some(_), None) => Err(config_error(
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not",
        )),
        (None, Some(_)) => Err(config_error(
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_ROLE_ARN is set but AWS_WEB_IDENTITY_TOKEN_FILE is not",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_chain_takes_the_first_source_that_is_there() {
        let mut config = S3Config::new("bkt");
        let nothing = env_of(&[
            ("AWS_CONFIG_FILE", "/nonexistent"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ]);
        assert!(matches!(
            resolve(&config, &nothing).unwrap(),
            Source::Imds { .. }
        ));
        let container = env_of(&[
            ("AWS_CONFIG_FILE", "/nonexistent"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
            (
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "/v2/credentials/x",
            ),
        ]);
        assert!(matches!(
            resolve(&config, &container).unwrap(),
            Source::Container(_)
        ));
        let web = env_of(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            (
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "/v2/credentials/x",
            ),
        ]);
        assert!(matches!(
            resolve(&config, &web).unwrap(),
            Source::WebIdentity { .. }
        ));
        let keys = env_of(&[
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
        ]);
        let s = resolve(&config, &keys).unwrap();
        assert!(s.describe().contains("AKIDENV"), "{}", s.describe());
        config.access_key_id = "AKIDCONF".into();
        config.secret_access_key = "secret".into();
        let s = resolve(&config, &keys).unwrap();
        assert!(s.describe().contains("AKIDCONF"), "{}", s.describe());
        assert!(
            !format!("{s:?} {}", s.describe()).contains("secret\""),
            "{s:?}"
        );
        let disabled = env_of(&[
            ("AWS_CONFIG_FILE", "/nonexistent"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]);
        let e = resolve(&S3Config::new("bkt"), &disabled).unwrap_err();
        assert!(e.to_string().contains("anonymous"), "{e}");
    }

    #[test]
    fn explicit_sources_say_what_they_miss() {
        let nothing = env_of(&[]);
        for (source, names) in [
            (CredentialSource::Static, "access_key_id"),
            (CredentialSource::Env, "AWS_ACCESS_KEY_ID"),
            (CredentialSource::WebIdentity, "AWS_WEB_IDENTITY_TOKEN_FILE"),
            (CredentialSource::Container, "AWS_CONTAINER_CREDENTIALS"),
        ] {
            let mut config = S3Config::new("bkt");
            config.credentials = source;
            let e = resolve(&config, &nothing).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config);
            assert!(e.to_string().contains(names), "{source:?}: {e}");
        }
        let half = env_of(&[("AWS_ACCESS_KEY_ID", "AKID")]);
        let e = resolve(&S3Config::new("bkt"), &half).unwrap_err();
        assert!(e.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{e}");
    }

    #[test]
    fn keys_are_refreshed_ahead_of_expiry_and_kept_until_it() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Fetched {
            keys: Fetched::anonymous().keys,
            expires: Some(t0 + Duration::from_secs(3600)),
        };
        assert_eq!(state(&hour, t0, t0), (true, false));
        assert_eq!(
            state(&hour, t0, t0 + Duration::from_secs(3600 - 301)),
            (true, false)
        );
        assert_eq!(
            state(&hour, t0, t0 + Duration::from_secs(3600 - 299)),
            (true, true)
        );
        assert_eq!(
            state(&hour, t0, t0 + Duration::from_secs(3600)),
            (false, true)
        );
        // Short-lived keys are refreshed half-way through their life.
        let ten = Fetched {
            keys: Fetched::anonymous().keys,
            expires: Some(t0 + Duration::from_secs(10)),
        };
        assert_eq!(state(&ten, t0, t0 + Duration::from_secs(4)), (true, false));
        assert_eq!(state(&ten, t0, t0 + Duration::from_secs(6)), (true, true));
    }
}
