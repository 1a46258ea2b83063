//! What the two checksum benches share: the modes they set against each other, the
//! block they write, and a filesystem store per mode.

use std::path::Path;

use blockstore::{Checksums, FsConfig, FsStore};

/// Checksums off, then on.
pub const MODES: [Checksums; 2] = [Checksums::Off, Checksums::Crc32c];

/// The bytes written: deterministic, different in every 4 KiB.
pub fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
}

/// A filesystem store per mode, each in its own folder under `dir`.
pub fn fs_stores(dir: &Path, fsync: bool) -> Vec<(Checksums, FsStore)> {
    MODES
        .iter()
        .map(|&mode| {
            let mut config = FsConfig::new(dir.join(mode.as_str()));
            config.fsync = fsync;
            config.checksums = mode;
            // The chunk to measure (`checksum_chunk_kib`), 8 KiB unless asked.
            if let Some(kib) = std::env::var("BLOCKSTORE_RATIO_CHUNK_KIB")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                config.checksum_chunk_kib = kib;
            }
            (mode, FsStore::open(config).unwrap())
        })
        .collect()
}
