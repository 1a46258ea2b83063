//! `FsConfig`: the `[block_store.filesystem]` section.

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};
use crate::op::Op;

/// Settings of the filesystem backend, as in `[block_store.filesystem]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FsConfig {
    /// The directory that holds the blocks; required.
    pub base_path: PathBuf,
    /// Create `base_path` (with `dir_mode`) when it is missing. Default `true`.
    #[serde(default = "yes")]
    pub create_dir: bool,
    /// The exact mode of every directory the store creates. Default `0o755`.
    #[serde(default = "default_dir_mode")]
    pub dir_mode: u32,
    /// The exact mode of every block file. Default `0o644`.
    #[serde(default = "default_file_mode")]
    pub file_mode: u32,
    /// Make each write and delete durable before it returns. Default `true`.
    #[serde(default = "yes")]
    pub fsync: bool,
}

fn yes() -> bool {
    true
}
fn default_dir_mode() -> u32 {
    0o755
}
fn default_file_mode() -> u32 {
    0o644
}

impl FsConfig {
    /// The defaults of every key, for `base_path`.
    pub fn new(base_path: impl Into<PathBuf>) -> Self {
        FsConfig {
            base_path: base_path.into(),
            create_dir: true,
            dir_mode: default_dir_mode(),
            file_mode: default_file_mode(),
            fsync: true,
        }
    }

    /// Checks the rules the types cannot express.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| {
            Err(Error::new(ErrorKind::Config, Op::Config)
                .with_key(&format!("block_store.filesystem.{key}"))
                .with_detail(why.to_owned()))
        };
        if self.base_path.as_os_str().is_empty() {
            return bad("base_path", "must not be empty");
        }
        if self.dir_mode > 0o7777 {
            return bad("dir_mode", "must be a permission mode (at most 0o7777)");
        }
        if self.dir_mode & 0o700 != 0o700 {
            return bad(
                "dir_mode",
                "must give the owner read, write and search permission (0o700)",
            );
        }
        if self.file_mode > 0o7777 {
            return bad("file_mode", "must be a permission mode (at most 0o7777)");
        }
        if self.file_mode & 0o600 != 0o600 {
            return bad(
                "file_mode",
                "must give the owner read and write permission (0o600)",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(config: &FsConfig) -> Option<String> {
        config.validate().err().map(|e| {
            assert_eq!(e.kind(), ErrorKind::Config, "{e}");
            e.to_string()
        })
    }

    #[test]
    fn modes_are_permission_bits_and_let_the_owner_in() {
        let mut config = FsConfig::new("/srv/blocks");
        assert_eq!(refused(&config), None);
        // Every permission bit, setuid/setgid/sticky included, is a valid mode.
        config.dir_mode = 0o7777;
        config.file_mode = 0o7777;
        assert_eq!(refused(&config), None);
        for (dir_mode, file_mode, key) in [
            (0o10000, 0o644, "dir_mode"),
            (0o10755, 0o644, "dir_mode"),
            (0o755, 0o10000, "file_mode"),
            (0o755, 0o10644, "file_mode"),
            (0o655, 0o644, "dir_mode"),
            (0o755, 0o444, "file_mode"),
        ] {
            config.dir_mode = dir_mode;
            config.file_mode = file_mode;
            let shown = refused(&config)
                .unwrap_or_else(|| panic!("{dir_mode:o}/{file_mode:o} was accepted"));
            assert!(
                shown.contains(&format!("block_store.filesystem.{key}")),
                "{dir_mode:o}/{file_mode:o}: {shown}"
            );
        }
        config = FsConfig::new("");
        assert!(refused(&config).is_some_and(|e| e.contains("base_path")));
    }
}
