//! Damage done to a stored block behind the store's back, and the checks every read of
//! the damaged block must pass: shared by the integrity tests of every backend.

use blockstore::{BlockStore, ErrorKind};

/// The chunk of each backend's checksums.
pub const FS_CHUNK: u64 = 8 * 1024;
pub const MEMORY_CHUNK: u64 = blockstore::integrity::CHUNK_SIZE;
pub const S3_CHUNK: u64 = 64 * 1024;

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(u32::from(seed)) as u8
        })
        .collect()
}

/// How a block is damaged.
#[derive(Debug, Clone, Copy)]
pub enum Damage {
    /// One byte flipped at this offset.
    Flip(u64),
    /// Cut to this length.
    Truncate(u64),
    /// This many bytes added at the end.
    Extend(u64),
}

impl Damage {
    pub fn apply(self, bytes: &mut Vec<u8>) {
        match self {
            Damage::Flip(at) => bytes[at as usize] ^= 0x20,
            Damage::Truncate(len) => bytes.truncate(len as usize),
            Damage::Extend(n) => bytes.extend(std::iter::repeat_n(0u8, n as usize)),
        }
    }

    pub fn apply_on_disk(self, path: &std::path::Path) {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        match self {
            Damage::Flip(at) => {
                let mut bytes = std::fs::read(path).unwrap();
                std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(at)).unwrap();
                std::io::Write::write_all(&mut file, &[bytes[at as usize] ^ 0x20]).unwrap();
                bytes.clear();
            }
            Damage::Truncate(len) => file.set_len(len).unwrap(),
            Damage::Extend(n) => {
                std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).unwrap();
                std::io::Write::write_all(&mut file, &vec![0u8; n as usize]).unwrap();
            }
        }
        file.sync_all().unwrap();
    }

    /// Whether a read of `[offset, offset + length)` reads a damaged chunk of `chunk`
    /// bytes (a changed length damages every read).
    pub fn touches(self, offset: u64, length: u64, chunk: u64) -> bool {
        match self {
            Damage::Flip(at) => {
                let hit = at / chunk;
                offset / chunk <= hit && (offset + length - 1) / chunk >= hit
            }
            Damage::Truncate(_) | Damage::Extend(_) => true,
        }
    }
}

/// Block length: not a multiple of any backend's chunk, so the last one is short.
pub const LEN: u64 = 200_005;

/// Every damage the tests do: in the first, a middle and the last (short) chunk; cut
/// inside a chunk and by one byte; grown.
pub const DAMAGES: [Damage; 6] = [
    Damage::Flip(10),
    Damage::Flip(100_017),
    Damage::Flip(LEN - 1),
    Damage::Truncate(70_003),
    Damage::Truncate(LEN - 1),
    Damage::Extend(7),
];

/// Ranges that lie in one chunk or cross an edge of 8, 16 or 64 KiB chunks, at the
/// end, and the whole.
pub const RANGES: [(u64, u64); 8] = [
    (0, 4_096),
    (8_190, 20),
    (16_380, 10),
    (65_530, 12),
    (100_100, 4_096),
    (131_072, 65_536),
    (LEN - 1_000, 1_000),
    (0, LEN),
];

/// Checks every read of the damaged `key` on `store`, where the original was `data`.
pub fn reads_see_the_damage(
    store: &dyn BlockStore,
    key: &str,
    data: &[u8],
    damage: Damage,
    chunk: u64,
) {
    let e = store.read_block(key).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{damage:?}: {e}");
    assert_eq!(e.errno(), libc::EIO);
    assert!(!e.is_retryable(), "{damage:?}: {e}");
    let text = e.to_string();
    assert!(text.contains(key), "{damage:?}: {text}");
    match damage {
        Damage::Flip(at) => {
            assert!(
                text.contains(&format!("chunk {} ", at / chunk)),
                "{damage:?}: {text}"
            );
            assert!(
                text.contains("has CRC32C") && text.contains("its checksum says"),
                "{text}"
            );
        }
        _ => assert!(text.contains("bytes long"), "{damage:?}: {text}"),
    }
    assert_eq!(
        store.verify_block(key).unwrap_err().kind(),
        ErrorKind::Corrupt,
        "{damage:?}"
    );
    for (offset, length) in RANGES {
        let end = (offset + length).min(LEN) as usize;
        let mut buf = vec![0u8; length as usize];
        let results = [
            store.read_block_range(key, offset, length),
            store
                .read_block_range_into(key, offset, &mut buf)
                .map(|n| buf[..n].to_vec()),
            store
                .read_at(key, offset, &mut buf)
                .map(|n| buf[..n].to_vec()),
        ];
        for got in results {
            if damage.touches(offset, length, chunk) {
                assert_eq!(
                    got.as_ref().map(Vec::len).unwrap_err().kind(),
                    ErrorKind::Corrupt,
                    "{damage:?}, range ({offset}, {length})"
                );
            } else {
                assert!(
                    got.as_deref().ok() == Some(&data[offset as usize..end]),
                    "{damage:?}, range ({offset}, {length}): {:?}",
                    got.map(|g| g.len())
                );
            }
        }
    }
    // A range wholly past a truncated end is the damage too, not a short block.
    if let Damage::Truncate(_) = damage {
        assert_eq!(
            store.read_block_range(key, LEN - 1, 1).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }
}
