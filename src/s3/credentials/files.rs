//! The shared files: `~/.aws/credentials` (sections `[name]`) and `~/.aws/config`
//! (sections `[profile name]`, and `[default]`), or the files `AWS_SHARED_CREDENTIALS_FILE`
//! and `AWS_CONFIG_FILE` name. A profile's settings are merged from both, the
//! credentials file winning. A profile gives static keys, a `credential_process`, or a
//! `role_arn` with a `source_profile`, a `web_identity_token_file` or a
//! `credential_source`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ini::Ini;

use super::{config_error, container, imds_source, session_name, sts, Env, Keys, Source};
use crate::error::Result;
use crate::s3::config::S3Config;

/// How many `source_profile` hops a role may take (a loop is an error).
const MAX_HOPS: usize = 8;

/// The two files, parsed; a missing file is empty.
pub(super) struct Files {
    credentials: (PathBuf, Option<Ini>),
    config: (PathBuf, Option<Ini>),
}

fn load(path: PathBuf, variable: &str) -> Result<(PathBuf, Option<Ini>)> {
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((path, None)),
        Err(e) => {
            return Err(config_error(
                variable,
                format!("cannot read {}: {e}", path.display()),
            ))
        }
    };
    // The INI reader is lenient where these files must not be: a stray line would
    // swallow the sections after it without a word.
    if let Err((line, why)) = check_lines(&text) {
        return Err(config_error(
            variable,
            format!("{} line {line}: {why}", path.display()),
        ));
    }
    let ini = Ini::load_from_str_noescape(&text)
        .map_err(|e| config_error(variable, format!("cannot read {}: {e}", path.display())))?;
    Ok((path, Some(ini)))
}

/// Every line of a shared file is blank, a comment, a `[section]`, a `key = value`
/// inside a section, or an indented line under a `key =` (a nested setting).
fn check_lines(text: &str) -> std::result::Result<(), (usize, String)> {
    let mut in_section = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            if !line.ends_with(']') || line.len() < 3 {
                return Err((i + 1, format!("{line:?} is not a [section] header")));
            }
            in_section = true;
            continue;
        }
        if raw.starts_with([' ', '\t']) && in_section {
            continue;
        }
        if !line.contains('=') {
            return Err((
                i + 1,
                format!("{line:?} is neither a [section] nor a key = value line"),
            ));
        }
        if !in_section {
            return Err((i + 1, format!("{line:?} comes before any [section]")));
        }
    }
    Ok(())
}

impl Files {
    /// The files the environment names, else those in `~/.aws`.
    pub(super) fn from_env(env: Env) -> Result<Files> {
        let home = env("HOME").map(PathBuf::from).unwrap_or_default();
        let path = |var: &str, name: &str| {
            env(var).map_or_else(|| home.join(".aws").join(name), PathBuf::from)
        };
        Ok(Files {
            credentials: load(
                path("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
                "AWS_SHARED_CREDENTIALS_FILE",
            )?,
            config: load(path("AWS_CONFIG_FILE", "config"), "AWS_CONFIG_FILE")?,
        })
    }

    /// The profile's settings from both files (the credentials file wins); `None` when
    /// neither has it.
    fn profile(&self, name: &str) -> Option<HashMap<String, String>> {
        let mut found = None::<HashMap<String, String>>;
        let config_section = if name == "default" {
            "default".to_owned()
        } else {
            format!("profile {name}")
        };
        for (ini, section) in [
            (&self.config.1, config_section.as_str()),
            (&self.credentials.1, name),
        ] {
            if let Some(props) = ini.as_ref().and_then(|i| i.section(Some(section))) {
                let merged = found.get_or_insert_with(HashMap::new);
                for (k, v) in props.iter() {
                    merged.insert(k.trim().to_owned(), v.trim().to_owned());
                }
            }
        }
        found
    }

    /// Whether either file has the profile.
    pub(super) fn has(&self, name: &str) -> bool {
        self.profile(name).is_some()
    }

    fn where_(&self) -> String {
        format!(
            "{} or {}",
            self.credentials.0.display(),
            self.config.0.display()
        )
    }

    /// The source profile `name` describes.
    pub(super) fn source(&self, name: &str, config: &S3Config, env: Env) -> Result<Source> {
        self.source_hop(name, config, env, 0)
    }

    fn source_hop(&self, name: &str, config: &S3Config, env: Env, hops: usize) -> Result<Source> {
        let key = "block_store.s3.profile";
        if hops > MAX_HOPS {
            return Err(config_error(
                key,
                format!("profile {name:?}: source_profile goes round in a loop"),
            ));
        }
        let props = self.profile(name).ok_or_else(|| {
            config_error(key, format!("no profile {name:?} in {}", self.where_()))
        })?;
        let get = |k: &str| props.get(k).filter(|v| !v.is_empty()).cloned();
        let static_keys = || -> Result<Option<Source>> {
            match (get("aws_access_key_id"), get("aws_secret_access_key")) {
                (Some(access), Some(secret)) => Ok(Some(Source::Static {
                    keys: Keys {
                        access_key_id: access,
                        secret_access_key: secret,
                        session_token: get("aws_session_token"),
                    },
                    from: format!("profile {name:?}"),
                })),
                (None, None) => Ok(None),
                _ => Err(config_error(
                    key,
                    format!(
                        "profile {name:?} in {} has only one of aws_access_key_id and aws_secret_access_key",
                        self.where_()
                    ),
                )),
            }
        };
        let region = get("region").unwrap_or_else(|| config.region.clone());
        if let Some(role_arn) = get("role_arn") {
            let session = get("role_session_name").unwrap_or_else(|| session_name(env));
            let sts = sts::Endpoint::from_env(&region, env);
            if let Some(file) = get("web_identity_token_file") {
                return Ok(Source::WebIdentity {
                    role_arn,
                    session_name: session,
                    token_file: Path::new(&file).to_owned(),
                    sts,
                });
            }
            let base = if let Some(source) = get("source_profile") {
                if source == name {
                    static_keys()?.ok_or_else(|| {
                        config_error(
                            key,
                            format!("profile {name:?} is its own source_profile but has no keys"),
                        )
                    })?
                } else {
                    self.source_hop(&source, config, env, hops + 1)?
                }
            } else if let Some(source) = get("credential_source") {
                match source.as_str() {
                    "Environment" => super::env_keys(env)?.ok_or_else(|| {
                        config_error(key, format!("profile {name:?}: credential_source = Environment, but AWS_ACCESS_KEY_ID is not set"))
                    })?,
                    "Ec2InstanceMetadata" => imds_source(config, env),
                    "EcsContainer" => container::Container::from_env(env)?.map(Source::Container).ok_or_else(|| {
                        config_error(key, format!("profile {name:?}: credential_source = EcsContainer, but no container credentials variable is set"))
                    })?,
                    other => {
                        return Err(config_error(
                            key,
                            format!("profile {name:?}: credential_source {other:?} is not Environment, Ec2InstanceMetadata or EcsContainer"),
                        ))
                    }
                }
            } else {
                return Err(config_error(
                    key,
                    format!("profile {name:?} has role_arn but neither source_profile, credential_source nor web_identity_token_file"),
                ));
            };
            return Ok(Source::AssumeRole {
                role_arn,
                session_name: session,
                external_id: get("external_id"),
                base: Box::new(base),
                sts,
                profile: name.to_owned(),
            });
        }
        if let Some(command) = get("credential_process") {
            return Ok(Source::Process {
                command,
                profile: name.to_owned(),
            });
        }
        static_keys()?.ok_or_else(|| {
            config_error(
                key,
                format!(
                    "profile {name:?} in {} has no credentials (keys, role_arn or credential_process)",
                    self.where_()
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(
        credentials: &str,
        config: &str,
    ) -> (tempfile::TempDir, impl Fn(&str) -> Option<String>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("credentials"), credentials).unwrap();
        std::fs::write(dir.path().join("config"), config).unwrap();
        let (c, f) = (
            dir.path().join("credentials").display().to_string(),
            dir.path().join("config").display().to_string(),
        );
        let env = move |name: &str| match name {
            "AWS_SHARED_CREDENTIALS_FILE" => Some(c.clone()),
            "AWS_CONFIG_FILE" => Some(f.clone()),
            _ => None,
        };
        (dir, env)
    }

    #[test]
    fn profiles_give_keys_roles_and_processes() {
        let (_dir, env) = files(
            "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s1\n\n[base]\naws_access_key_id = AKIDBASE\naws_secret_access_key = s2\n",
            "[profile ops]\nrole_arn = arn:aws:iam::1:role/ops\nsource_profile = base\nregion = eu-west-1\n\n[profile tool]\ncredential_process = /usr/bin/get-keys --json\n\n[profile loop]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = loop2\n[profile loop2]\nrole_arn = arn:aws:iam::1:role/y\nsource_profile = loop\n\n[profile empty]\nregion = us-east-2\n",
        );
        let f = Files::from_env(&env).unwrap();
        let config = S3Config::new("bkt");
        let d = f.source("default", &config, &env).unwrap();
        assert!(d.describe().contains("AKIDDEFAULT"), "{}", d.describe());
        match f.source("ops", &config, &env).unwrap() {
            Source::AssumeRole {
                role_arn,
                base,
                sts,
                ..
            } => {
                assert_eq!(role_arn, "arn:aws:iam::1:role/ops");
                assert!(base.describe().contains("AKIDBASE"));
                assert_eq!(sts.url, "https://sts.eu-west-1.amazonaws.com");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            f.source("tool", &config, &env).unwrap(),
            Source::Process { .. }
        ));
        for (name, says) in [
            ("loop", "loop"),
            ("empty", "no credentials"),
            ("missing", "no profile \"missing\""),
        ] {
            let e = f.source(name, &config, &env).unwrap_err();
            assert!(e.to_string().contains(says), "{name}: {e}");
            assert!(e.to_string().contains("block_store.s3.profile"), "{e}");
        }
    }

    #[test]
    fn a_malformed_file_is_named_with_its_line() {
        for (text, line, says) in [
            ("[default\naws_access_key_id = x\n", 1, "not a [section]"),
            ("garbage\n[default]\naws_access_key_id = x\n", 1, "neither"),
            ("[default]\naws_access_key_id = x\nstray\n", 3, "neither"),
            ("key = value\n[default]\n", 1, "before any [section]"),
        ] {
            let (_dir, env) = files(text, "");
            let e = Files::from_env(&env).err().expect("an error");
            let shown = e.to_string();
            assert!(
                shown.contains(&format!("credentials line {line}: ")),
                "{text:?}: {shown}"
            );
            assert!(shown.contains(says), "{text:?}: {shown}");
        }
        // Nested settings under a key (as the AWS CLI writes them) are fine.
        let (_dir, env) = files(
            "",
            "[profile x]\ns3 =\n  max_concurrent_requests = 20\nregion = eu-west-1\n",
        );
        assert!(Files::from_env(&env).is_ok());
    }
}
