//! The TOML configuration and [`open`], which builds the store it describes.
//!
//! Every key, its default and its rules are in the README's configuration reference.
//! Unknown keys, wrong types and missing required keys are `Config` errors that name the
//! key and its line, before any store is opened. Only the backend section named by
//! `type` is used; the others must still parse, so a file can switch back and forth.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};
use crate::fs::FsConfig;
use crate::memory::MemoryStore;
use crate::op::Op;
use crate::pool::{Pool, PoolConfig};
use crate::s3::S3Config;
use crate::store::BlockStore;

/// The whole configuration file.
///
/// ```
/// use blockstore::{BackendKind, Config, ErrorKind};
///
/// let config = Config::from_toml_str(r#"
///     [block_store]
///     type = "filesystem"
///
///     [block_store.filesystem]
///     base_path = "/srv/blocks"
///     fsync = true
///
///     [pool]
///     workers = 8
/// "#)?;
/// assert_eq!(config.block_store.backend, BackendKind::Filesystem);
/// assert_eq!(config.pool.map(|p| p.workers), Some(8));
///
/// // Mistakes name the key and the line.
/// let e = Config::from_toml_str("[block_store]\ntype = \"filesystem\"\n[block_store.filesystem]\nbase_path = \"/x\"\nfsynk = true\n").unwrap_err();
/// assert_eq!(e.kind(), ErrorKind::Config);
/// assert!(e.to_string().contains("fsynk") && e.to_string().contains("line 5"));
/// # Ok::<(), blockstore::Error>(())
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[block_store]`: which backend, and the settings of each.
    pub block_store: BlockStoreConfig,
    /// `[pool]`: when present, [`open`] wraps the store in a worker pool.
    #[serde(default)]
    pub pool: Option<PoolConfig>,
}

/// The `[block_store]` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BlockStoreConfig {
    /// `type`: the backend to open.
    #[serde(rename = "type")]
    pub backend: BackendKind,
    /// `[block_store.filesystem]`.
    #[serde(default)]
    pub filesystem: Option<FsConfig>,
    /// `[block_store.s3]`.
    #[serde(default)]
    pub s3: Option<S3Config>,
    /// `slow_call_ms`: calls slower than this many milliseconds are `warn` events
    /// (feature `tracing`). Unset: none are.
    #[serde(default)]
    pub slow_call_ms: Option<u64>,
}

/// The backends a configuration can name.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BackendKind {
    /// `"memory"`: [`MemoryStore`].
    Memory,
    /// `"filesystem"`: the filesystem backend.
    Filesystem,
    /// `"s3"`: the S3 backend.
    S3,
}

fn config_error(key: &str, why: &str) -> Error {
    Error::new(ErrorKind::Config, Op::Config)
        .with_key(key)
        .with_detail(why.to_owned())
}

impl Config {
    /// Parses and checks a configuration.
    pub fn from_toml_str(text: &str) -> Result<Config> {
        let deserializer = toml::Deserializer::parse(text).map_err(|e| toml_error(text, &e, ""))?;
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            toml_error(text, e.inner(), &path)
        })?;
        config.validate().map_err(|e| with_line(text, e))?;
        Ok(config)
    }

    /// Reads, parses and checks a configuration file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(ErrorKind::Config, Op::Config)
                .with_key(&path.display().to_string())
                .with_detail("cannot read the file")
                .with_source(e)
        })?;
        Config::from_toml_str(&text).map_err(|e| {
            let detail = e.detail().unwrap_or_default().to_owned();
            let key = e.key().unwrap_or_default().to_owned();
            Error::new(ErrorKind::Config, Op::Config)
                .with_key(&format!("{}: {key}", path.display()))
                .with_detail(detail)
        })
    }

    /// The configuration the CLI and examples use when given none: the filesystem store
    /// in `base_path`.
    pub fn filesystem(base_path: impl Into<std::path::PathBuf>) -> Config {
        Config {
            block_store: BlockStoreConfig {
                backend: BackendKind::Filesystem,
                filesystem: Some(FsConfig::new(base_path)),
                s3: None,
                slow_call_ms: None,
            },
            pool: None,
        }
    }

    /// Checks every section that is present, and that the one `type` names exists.
    pub fn validate(&self) -> Result<()> {
        let store = &self.block_store;
        if let Some(fs) = &store.filesystem {
            fs.validate()?;
        }
        if let Some(s3) = &store.s3 {
            s3.validate()?;
        }
        if let Some(pool) = &self.pool {
            pool.validate()?;
        }
        let missing = |section: &str, ty: &str| {
            Err(config_error(
                &format!("block_store.{section}"),
                &format!("section is missing, and block_store.type is \"{ty}\""),
            ))
        };
        match store.backend {
            BackendKind::Filesystem if store.filesystem.is_none() => {
                missing("filesystem", "filesystem")
            }
            BackendKind::S3 if store.s3.is_none() => missing("s3", "s3"),
            _ => Ok(()),
        }
    }
}

/// Adds the line of the key a validation error names (or, for a missing section, of
/// the `type` that asks for it), so every Config error points into the file.
fn with_line(text: &str, e: Error) -> Error {
    let key = e.key().unwrap_or_default().to_owned();
    let Some(line) = line_of(text, &key).or_else(|| line_of(text, "block_store.type")) else {
        return e;
    };
    let detail = e.detail().unwrap_or_default();
    config_error(&key, &format!("line {line}: {detail}"))
}

/// The line where `path` (`table.key`, or a table) is written, from the spans the TOML
/// parser keeps.
fn line_of(text: &str, path: &str) -> Option<usize> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let (key, value) = table.iter().find(|(k, _)| k.get_ref() == part)?;
        if parts.peek().is_none() {
            return Some(text[..key.span().start].matches('\n').count() + 1);
        }
        table = value.get_ref().as_table()?;
    }
    None
}

/// A TOML or schema error as one line: the key, the line, and what is wrong.
fn toml_error(text: &str, err: &toml::de::Error, path: &str) -> Error {
    let line = err
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    // A path of "." means the error is about the whole document (e.g. a missing table).
    let key = if path.is_empty() || path == "." {
        "(document)"
    } else {
        path
    };
    let mut detail = err.message().trim().to_owned();
    if let Some(line) = line {
        detail = format!("line {line}: {detail}");
    }
    config_error(key, &detail)
}

/// A store opened from a configuration, with its pool when `[pool]` asked for one, so
/// a daemon can use the pool's jobs, batches and statistics.
///
/// ```
/// use blockstore::pool::Write;
/// let config = blockstore::Config::from_toml_str(
///     "[block_store]\ntype = \"memory\"\n[pool]\nworkers = 4\n",
/// )?;
/// let opened = config.open()?;
/// let pool = opened.pool().expect("[pool] is configured");
/// pool.submit(Write::new("a/b", b"block".to_vec()))?.wait()?;
/// assert_eq!(opened.store().read_block("a/b")?, b"block");
/// # Ok::<(), blockstore::Error>(())
/// ```
#[derive(Clone)]
pub struct Opened {
    store: Arc<dyn BlockStore>,
    pool: Option<Arc<Pool>>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl Opened {
    /// The store: the pool itself when there is one.
    pub fn store(&self) -> Arc<dyn BlockStore> {
        self.store.clone()
    }

    /// The pool, when the configuration has a `[pool]` section. It owns the backend's
    /// store: closing it closes the store.
    pub fn pool(&self) -> Option<Arc<Pool>> {
        self.pool.clone()
    }
}

impl Config {
    /// Opens the store this configuration describes, and its pool when `[pool]` is
    /// present.
    pub fn open(&self) -> Result<Opened> {
        self.validate()?;
        let slow = self
            .block_store
            .slow_call_ms
            .map(std::time::Duration::from_millis);
        let store: Arc<dyn BlockStore> =
            match self.block_store.backend {
                BackendKind::Memory => {
                    let store = MemoryStore::new();
                    store.set_slow_threshold(slow);
                    Arc::new(store)
                }
                BackendKind::Filesystem => {
                    let fs = self.block_store.filesystem.clone().ok_or_else(|| {
                        config_error("block_store.filesystem", "section is missing")
                    })?;
                    let store = crate::fs::FsStore::open(fs)?;
                    store.set_slow_threshold(slow);
                    Arc::new(store)
                }
                #[cfg(feature = "s3")]
                BackendKind::S3 => {
                    let s3 = self
                        .block_store
                        .s3
                        .clone()
                        .ok_or_else(|| config_error("block_store.s3", "section is missing"))?;
                    let store = crate::s3::S3Store::open(s3)?;
                    store.set_slow_threshold(slow);
                    Arc::new(store)
                }
                #[cfg(not(feature = "s3"))]
                BackendKind::S3 => return Err(config_error(
                    "block_store.type",
                    "this build of blockstore has no S3 backend: build it with the `s3` feature",
                )),
            };
        match self.pool {
            Some(pool) => {
                let pool = Arc::new(Pool::new(store, pool)?);
                Ok(Opened {
                    store: pool.clone(),
                    pool: Some(pool),
                })
            }
            None => Ok(Opened { store, pool: None }),
        }
    }
}

/// Opens the store a configuration describes, wrapped in a pool when `[pool]` is present
/// ([`Config::open`] also hands back the pool).
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let config = blockstore::Config::filesystem(dir.path().join("blocks"));
/// let store = blockstore::open(&config)?;
/// store.write_block("export/f/chunk-0/block-0", b"block")?;
/// assert_eq!(store.block_size("export/f/chunk-0/block-0")?, 5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn open(config: &Config) -> Result<Arc<dyn BlockStore>> {
    Ok(config.open()?.store())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        let e = Config::from_toml_str(text).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        e.to_string()
    }

    #[test]
    fn defaults_are_filled_in() {
        let c = Config::from_toml_str(
            "[block_store]\ntype = \"filesystem\"\n[block_store.filesystem]\nbase_path = \"/x\"\n",
        )
        .unwrap();
        assert_eq!(c.block_store.filesystem, Some(FsConfig::new("/x")));
        assert_eq!(c.pool, None);
        let c = Config::from_toml_str(
            "[block_store]\ntype = \"s3\"\n[block_store.s3]\nbucket = \"bkt\"\n[pool]\n",
        )
        .unwrap();
        assert_eq!(c.block_store.s3, Some(S3Config::new("bkt")));
        assert_eq!(c.pool, Some(PoolConfig::default()));
    }

    #[test]
    fn octal_modes() {
        let c = Config::from_toml_str(
            "[block_store]\ntype = \"filesystem\"\n[block_store.filesystem]\nbase_path = \"/x\"\ndir_mode = 0o750\nfile_mode = 0o600\n",
        )
        .unwrap();
        let fs = c.block_store.filesystem.unwrap();
        assert_eq!((fs.dir_mode, fs.file_mode), (0o750, 0o600));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = err("[block_store]\ntype = \"memory\"\n[block_store.filesystem]\nbase_path = \"/x\"\nfsynk = true\n");
        assert!(e.contains("fsynk"), "{e}");
        assert!(e.contains("line 5"), "{e}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let e = err("[block_store]\ntype = \"s3\"\n\n[block_store.s3]\nbucket = \"bkt\"\nmax_retries = \"three\"\n");
        assert!(e.contains("block_store.s3.max_retries"), "{e}");
        assert!(e.contains("line 6"), "{e}");
    }

    #[test]
    fn missing_required_key_is_named() {
        let e = err("[block_store]\ntype = \"s3\"\n[block_store.s3]\nregion = \"eu-west-1\"\n");
        assert!(e.contains("bucket"), "{e}");
        let e =
            err("[block_store]\ntype = \"filesystem\"\n[block_store.filesystem]\nfsync = false\n");
        assert!(e.contains("base_path"), "{e}");
        let e = err("[block_store]\ntype = \"filesystem\"\n");
        assert!(e.contains("block_store.filesystem"), "{e}");
        let e = err("[pool]\nworkers = 2\n");
        assert!(e.contains("block_store"), "{e}");
    }

    #[test]
    fn unknown_backend_and_bad_values() {
        let e = err("[block_store]\ntype = \"ftp\"\n");
        assert!(e.contains("block_store.type") && e.contains("ftp"), "{e}");
        let e = err("[block_store]\ntype = \"memory\"\n[pool]\nworkers = 0\n");
        assert!(e.contains("pool.workers"), "{e}");
        let e = err("[block_store]\ntype = \"memory\"\n[block_store.s3]\nbucket = \"bkt\"\nkey_prefix = \"nope\"\n");
        assert!(e.contains("key_prefix"), "{e}");
        let e = err("[block_store]\ntype = \"memory\"\n[block_store.filesystem]\nbase_path = \"/x\"\ndir_mode = 0o70000\n");
        assert!(e.contains("dir_mode"), "{e}");
        let e = err("[block_store]\ntype = \"memory\"\n[pool]\nworkers = -1\n");
        assert!(e.contains("pool.workers"), "{e}");
    }

    #[test]
    fn open_builds_the_backend_and_the_pool() {
        let c = Config::from_toml_str(
            "[block_store]\ntype = \"memory\"\n[pool]\nworkers = 2\nqueue_capacity = 4\n",
        )
        .unwrap();
        let store = open(&c).unwrap();
        store.write_block("a/b", b"through the pool").unwrap();
        assert_eq!(store.read_block("a/b").unwrap(), b"through the pool");
        store.close().unwrap();
        assert_eq!(
            store.read_block("a/b").unwrap_err().kind(),
            ErrorKind::Closed
        );
        let c = Config::from_toml_str(
            "[block_store]\ntype = \"s3\"\n[block_store.s3]\nbucket = \"bkt\"\n",
        )
        .unwrap();
        // Opening an S3 store contacts nobody, so this works without a server.
        let s3 = open(&c).unwrap();
        s3.close().unwrap();
    }

    #[test]
    fn validation_errors_name_the_line() {
        let e = err("[block_store]\ntype = \"memory\"\n\n[block_store.filesystem]\nbase_path = \"/x\"\ndir_mode = 0o70000\n");
        assert!(
            e.contains("block_store.filesystem.dir_mode") && e.contains("line 6"),
            "{e}"
        );
        let e = err("[block_store]\ntype = \"s3\"\n[block_store.filesystem]\nbase_path = \"x\"\n");
        assert!(e.contains("block_store.s3") && e.contains("line 2"), "{e}");
        let e = err("[block_store]\ntype = \"memory\"\n[pool]\nworkers = 0\n");
        assert!(e.contains("pool.workers") && e.contains("line 4"), "{e}");
    }

    #[test]
    fn syntax_error_names_line() {
        let e = err("[block_store]\ntype = \"memory\n");
        assert!(e.contains("line 2"), "{e}");
    }
}
