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
    /// The exact mode of every directory the store creates. Default `0o755`. In TOML an
    /// octal integer (`0o755`) or a string (`"0755"`, `"755"`, `"0o755"`).
    #[serde(default = "default_dir_mode", deserialize_with = "mode")]
    pub dir_mode: u32,
    /// The exact mode of every block file. Default `0o644`; written as `dir_mode` is.
    #[serde(default = "default_file_mode", deserialize_with = "mode")]
    pub file_mode: u32,
    /// Make each write and delete durable before it returns. Default `true`.
    #[serde(default = "yes")]
    pub fsync: bool,
    /// Keep a CRC32C per chunk with each block (in the extended attribute
    /// `user.blockstore.sums`) and verify it on each read. Default `"crc32c"`.
    #[serde(default)]
    pub checksums: crate::Checksums,
    /// The chunk each checksum covers, in KiB: a power of two from 4 to 1024. Default
    /// 8: a 4 KiB range reads and checks 8 KiB, and a 4 MiB block's record (2,072
    /// bytes) fits every filesystem with 4 KiB blocks, so copies with their attributes
    /// keep their checksums anywhere. 4 makes a chunk's first small range cheaper where
    /// the filesystem holds the 4,120-byte record (XFS, btrfs, tmpfs; not ext4, where
    /// the store takes the smallest chunk that fits, shown by `health` as
    /// `checksum_chunk`); later ranges of a hot block check 1 KiB pieces whatever the
    /// chunk (see `# Checksums` on [`FsStore`](crate::FsStore)).
    #[serde(default = "default_chunk_kib")]
    pub checksum_chunk_kib: u64,
}

fn default_chunk_kib() -> u64 {
    8
}

fn yes() -> bool {
    true
}

/// A permission mode: an integer as written, or a string read as octal.
fn mode<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u32, D::Error> {
    struct Mode;
    impl serde::de::Visitor<'_> for Mode {
        type Value = u32;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(
                "a permission mode: an octal integer such as 0o755, or a string such as \"0755\"",
            )
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<u32, E> {
            u32::try_from(v).map_err(|_| E::custom(format!("{v} is not a permission mode")))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<u32, E> {
            u32::try_from(v).map_err(|_| E::custom(format!("{v} is not a permission mode")))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<u32, E> {
            let digits = v.trim().trim_start_matches("0o");
            if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                return Err(E::custom(format!(
                    "{v:?} is not an octal permission mode such as \"0755\""
                )));
            }
            u32::from_str_radix(digits, 8)
                .map_err(|_| E::custom(format!("{v:?} is too large for a mode")))
        }
    }
    d.deserialize_any(Mode)
}

/// A hint for a mode that was probably meant as octal but written as a decimal integer
/// (`755` rather than `0o755`): its decimal digits are all octal digits.
fn decimal_hint(mode: u32) -> String {
    let digits = mode.to_string();
    if (3..=4).contains(&digits.len()) && digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        format!(
            " ({mode} was read as a decimal number, 0o{mode:o}; write 0o{digits} or \"{digits}\")"
        )
    } else {
        String::new()
    }
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
            checksums: crate::Checksums::Crc32c,
            checksum_chunk_kib: default_chunk_kib(),
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
        let (dir_hint, file_hint) = (decimal_hint(self.dir_mode), decimal_hint(self.file_mode));
        if self.dir_mode > 0o7777 {
            return bad(
                "dir_mode",
                &format!("must be a permission mode (at most 0o7777){dir_hint}"),
            );
        }
        if self.dir_mode & 0o700 != 0o700 {
            return bad(
                "dir_mode",
                &format!("must give the owner read, write and search permission (0o700){dir_hint}"),
            );
        }
        if self.dir_mode & 0o5000 != 0 {
            return bad(
                "dir_mode",
                "must not have the setuid (0o4000) or sticky (0o1000) bit: the sticky bit would keep the store from removing other users' files; setgid (0o2000) is allowed",
            );
        }
        if self.file_mode & 0o7000 != 0 {
            return bad(
                "file_mode",
                "must not have the setuid, setgid or sticky bits (0o7000): blocks are data, not programs",
            );
        }
        if self.file_mode > 0o7777 {
            return bad(
                "file_mode",
                &format!("must be a permission mode (at most 0o7777){file_hint}"),
            );
        }
        if self.file_mode & 0o600 != 0o600 {
            return bad(
                "file_mode",
                &format!("must give the owner read and write permission (0o600){file_hint}"),
            );
        }
        let chunk = self.checksum_chunk_kib;
        if !chunk.is_power_of_two() || !(4..=1024).contains(&chunk) {
            return bad(
                "checksum_chunk_kib",
                &format!("is {chunk}, must be a power of two from 4 to 1024"),
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
        // Every permission bit is a valid mode, and setgid on directories (group
        // inheritance); setuid and sticky directories, and special bits on block files,
        // are not.
        config.dir_mode = 0o2777;
        config.file_mode = 0o777;
        assert_eq!(refused(&config), None);
        for (dir_mode, file_mode, key) in [
            (0o4755, 0o644, "dir_mode"),
            (0o1755, 0o644, "dir_mode"),
            (0o755, 0o4644, "file_mode"),
            (0o755, 0o2644, "file_mode"),
            (0o755, 0o1644, "file_mode"),
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

    #[test]
    fn checksum_chunks_are_powers_of_two_from_4_to_1024_kib() {
        let mut config = FsConfig::new("/srv/blocks");
        assert_eq!(config.checksum_chunk_kib, 8);
        for good in [4, 8, 64, 1024] {
            config.checksum_chunk_kib = good;
            assert_eq!(refused(&config), None, "{good}");
        }
        for bad in [0, 1, 2, 3, 6, 12, 2048, u64::MAX] {
            config.checksum_chunk_kib = bad;
            let shown = refused(&config).unwrap_or_else(|| panic!("{bad} was accepted"));
            assert!(
                shown.contains("block_store.filesystem.checksum_chunk_kib")
                    && shown.contains(&bad.to_string())
                    && shown.contains("4 to 1024"),
                "{shown}"
            );
        }
    }
}
