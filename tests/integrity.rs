//! Checksums against damage done behind the store's back: bytes flipped, files
//! truncated and extended on disk, blocks changed through the memory store's hook.
//! Damaged chunks are `Corrupt` for every read that touches them, through the pool
//! too; chunks that are not damaged still read.

mod support;

use std::sync::Arc;

use blockstore::{
    BlockStore, Checksums, ErrorKind, FsConfig, FsStore, Integrity, MemoryStore, Pool, PoolConfig,
};
use support::damage::{
    pattern, reads_see_the_damage, Damage, DAMAGES, FS_CHUNK, LEN, MEMORY_CHUNK,
};

fn fs_store(dir: &std::path::Path, checksums: Checksums) -> FsStore {
    let mut config = FsConfig::new(dir);
    config.checksums = checksums;
    FsStore::open(config).unwrap()
}

#[test]
fn filesystem_damage_on_disk_is_corrupt_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let store = fs_store(dir.path(), Checksums::Crc32c);
    let data = pattern(LEN as usize, 3);
    for (i, damage) in DAMAGES.into_iter().enumerate() {
        let key = format!("f/{i}/chunk-0/block-0");
        store.write_block(&key, &data).unwrap();
        assert_eq!(store.verify_block(&key).unwrap(), Integrity::Verified);
        damage.apply_on_disk(&dir.path().join(&key));
        reads_see_the_damage(&store, &key, &data, damage, FS_CHUNK);
        // A new write of the block heals it.
        store.write_block(&key, &data).unwrap();
        assert_eq!(store.read_block(&key).unwrap(), data);
    }
}

#[test]
fn damage_is_corrupt_through_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(fs_store(dir.path(), Checksums::Crc32c));
    let pool = Pool::new(store, PoolConfig::default()).unwrap();
    let data = pattern(LEN as usize, 5);
    let key = "p/chunk-0/block-0";
    pool.write_block(key, &data).unwrap();
    let damage = Damage::Flip(2 * FS_CHUNK + 1);
    damage.apply_on_disk(&dir.path().join(key));
    reads_see_the_damage(&pool, key, &data, damage, FS_CHUNK);
}

#[test]
fn memory_damage_through_the_hook() {
    let store = MemoryStore::with_checksums(Checksums::Crc32c);
    let data = pattern(LEN as usize, 7);
    for (i, damage) in DAMAGES.into_iter().enumerate() {
        let key = format!("m/{i}");
        store.write_block(&key, &data).unwrap();
        assert!(store.damage(&key, |bytes| damage.apply(bytes)));
        reads_see_the_damage(&store, &key, &data, damage, MEMORY_CHUNK);
    }
    assert!(!store.damage("m/none", |_| {}));
    // Without checksums the same damage goes unseen: what `off` means.
    let plain = MemoryStore::new();
    plain.write_block("k", &data).unwrap();
    plain.damage("k", |b| b[0] ^= 1);
    assert_eq!(plain.verify_block("k").unwrap(), Integrity::Unverified);
    assert_ne!(plain.read_block("k").unwrap(), data);
}

/// Blocks written with checksums off (or before checksums existed) stay readable and
/// are reported unverified; a store with checksums off still verifies on request.
#[test]
fn blocks_without_checksums_are_unverified_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(LEN as usize, 11);
    {
        let off = fs_store(dir.path(), Checksums::Off);
        off.write_block("old/block", &data).unwrap();
        off.write_block("new/block", b"placeholder").unwrap();
    }
    let on = fs_store(dir.path(), Checksums::Crc32c);
    on.write_block("new/block", &data).unwrap();
    assert_eq!(on.read_block("old/block").unwrap(), data);
    assert_eq!(
        on.read_block_range("old/block", FS_CHUNK - 1, 2).unwrap(),
        &data[FS_CHUNK as usize - 1..FS_CHUNK as usize + 1]
    );
    assert_eq!(on.verify_block("old/block").unwrap(), Integrity::Unverified);
    assert_eq!(on.verify_block("new/block").unwrap(), Integrity::Verified);
    let off = fs_store(dir.path(), Checksums::Off);
    assert_eq!(off.verify_block("new/block").unwrap(), Integrity::Verified);
    // A store with checksums off neither checks nor refuses on ordinary reads.
    Damage::Flip(5).apply_on_disk(&dir.path().join("new/block"));
    assert_eq!(off.read_block("new/block").unwrap().len(), LEN as usize);
    assert_eq!(
        off.verify_block("new/block").unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    assert_eq!(
        on.read_block("new/block").unwrap_err().kind(),
        ErrorKind::Corrupt
    );
}

/// The record itself: removed, the block is unverified; rewritten with garbage or with
/// another block's record, it is corrupt.
#[test]
fn a_damaged_record_is_corrupt_and_a_missing_one_unverified() {
    let dir = tempfile::tempdir().unwrap();
    let store = fs_store(dir.path(), Checksums::Crc32c);
    let data = pattern(LEN as usize, 13);
    store.write_block("r/a", &data).unwrap();
    store
        .write_block("r/b", &pattern(LEN as usize, 14))
        .unwrap();
    let path = |k: &str| {
        std::ffi::CString::new(dir.path().join(k).into_os_string().into_encoded_bytes()).unwrap()
    };
    let name = c"user.blockstore.sums";
    let get = |k: &str| {
        let mut buf = vec![0u8; 1024];
        let n = unsafe {
            libc::getxattr(
                path(k).as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert!(n > 0, "{k} has a record");
        buf.truncate(n as usize);
        buf
    };
    let set = |k: &str, value: &[u8]| {
        let r = unsafe {
            libc::setxattr(
                path(k).as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        assert_eq!(r, 0);
    };
    let record = get("r/a");
    assert_eq!(&record[..4], b"BSUM");
    assert_eq!(record.len() as u64, 24 + 4 * LEN.div_ceil(FS_CHUNK));
    set("r/a", &get("r/b"));
    assert_eq!(
        store.read_block("r/a").unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    set("r/a", b"garbage");
    let e = store.read_block("r/a").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.to_string().contains("checksum record"), "{e}");
    set("r/a", &[b'x'; 900]);
    assert_eq!(
        store.read_block("r/a").unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    let r = unsafe { libc::removexattr(path("r/a").as_ptr(), name.as_ptr()) };
    assert_eq!(r, 0);
    assert_eq!(store.read_block("r/a").unwrap(), data);
    assert_eq!(store.verify_block("r/a").unwrap(), Integrity::Unverified);
}

/// On a filesystem without user extended attributes (ramfs; some network mounts) the
/// store opens, writes without checksums, reads back, and says so in its report.
#[test]
fn without_extended_attributes_the_store_writes_unverified() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = support::mount_or_explain(
        support::Mount::new(&dir.path().join("ramfs"), &["-t", "ramfs", "ramfs"]),
        "ramfs",
    ) else {
        return;
    };
    let store = fs_store(&mount.path.join("store"), Checksums::Crc32c);
    let data = pattern(LEN as usize, 17);
    store.write_block("x/chunk-0/block-0", &data).unwrap();
    assert_eq!(store.read_block("x/chunk-0/block-0").unwrap(), data);
    assert_eq!(
        store.verify_block("x/chunk-0/block-0").unwrap(),
        Integrity::Unverified
    );
    assert_eq!(
        store.report().about("checksums"),
        Some("off: the filesystem keeps no user extended attributes")
    );
    store.close().unwrap();
}

/// `checksum_chunk_kib = 4` gives 4 KiB chunks where the filesystem holds their
/// 4,120-byte record (XFS, btrfs, tmpfs) and the smallest chunk that fits where it
/// does not (ext4 with 4 KiB blocks: 8 KiB); ranges and damage follow the chunk used.
#[test]
fn four_kib_chunks_where_the_filesystem_holds_their_record() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mounts) = support::loop_mounts(dir.path(), &["ext4", "xfs", "btrfs"], 300) else {
        return;
    };
    let mut bases: Vec<_> = mounts
        .iter()
        .map(|(kind, m)| (*kind, m.path.join("store")))
        .collect();
    let Some(tmpfs) = support::mount_or_explain(
        support::Mount::new(&dir.path().join("tmpfs"), &["-t", "tmpfs", "tmpfs"]),
        "tmpfs",
    ) else {
        return;
    };
    bases.push(("tmpfs", tmpfs.path.join("store")));
    let data = pattern(blockstore::BLOCK_SIZE, 35);
    for (kind, base) in bases {
        let mut config = FsConfig::new(&base);
        config.checksum_chunk_kib = 4;
        let store = FsStore::open(config).unwrap();
        let chunk: u64 = if kind == "ext4" { 8192 } else { 4096 };
        assert_eq!(
            store.report().about("checksum_chunk"),
            Some(format!("{} KiB", chunk / 1024).as_str()),
            "{kind}"
        );
        let key = "four/chunk-0/block-0";
        store.write_block(key, &data).unwrap();
        let record = record_of(&base.join(key));
        assert_eq!(
            u64::from(u32::from_le_bytes(record[8..12].try_into().unwrap())),
            chunk
        );
        assert_eq!(
            record.len() as u64,
            24 + 4 * blockstore::BLOCK_SIZE as u64 / chunk
        );
        let mut buf = vec![0u8; 4096];
        for offset in [
            0u64,
            4095,
            8192,
            1_000_001,
            blockstore::BLOCK_SIZE as u64 - 4096,
        ] {
            let n = store.read_block_range_into(key, offset, &mut buf).unwrap();
            assert_eq!(
                buf[..n],
                data[offset as usize..offset as usize + n],
                "{kind} {offset}"
            );
        }
        // A flip in the sixth 4 KiB page: the chunk named is that page's (or its
        // 8 KiB chunk's), and the page before is still read on XFS, btrfs and tmpfs.
        Damage::Flip(5 * 4096 + 7).apply_on_disk(&base.join(key));
        let e = store.read_block_range(key, 5 * 4096, 4096).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{kind}: {e}");
        let index = 5 * 4096 / chunk;
        let named = format!(
            "chunk {index} (bytes {}..{})",
            index * chunk,
            (index + 1) * chunk
        );
        assert!(e.to_string().contains(&named), "{kind}: {e}");
        let before = store.read_block_range(key, 4 * 4096, 4096);
        assert_eq!(before.is_ok(), chunk == 4096, "{kind}: {before:?}");
        store.close().unwrap();
    }
    drop(tmpfs);
    drop(mounts);
}

/// The checksum attribute survives on every filesystem the store runs on: damage on
/// loop-mounted ext4, xfs and btrfs, and on an overlayfs, is found.
#[test]
fn damage_is_found_on_every_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(LEN as usize, 19);
    let Some(mounts) = support::loop_mounts(dir.path(), &["ext4", "xfs", "btrfs"], 300) else {
        return;
    };
    let mut bases: Vec<_> = mounts
        .iter()
        .map(|(kind, m)| (kind.to_string(), m.path.join("store")))
        .collect();
    let (lower, upper, work) = (
        dir.path().join("lower"),
        dir.path().join("upper"),
        dir.path().join("work"),
    );
    for d in [&lower, &upper, &work] {
        std::fs::create_dir_all(d).unwrap();
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let Some(overlay) = support::mount_or_explain(
        support::Mount::new(
            &dir.path().join("overlay"),
            &["-t", "overlay", "overlay", "-o", &options],
        ),
        "overlay",
    ) else {
        return;
    };
    bases.push(("overlay".into(), overlay.path.join("store")));
    for (kind, base) in bases {
        let store = fs_store(&base, Checksums::Crc32c);
        assert_eq!(store.report().about("checksums"), Some("crc32c"), "{kind}");
        store.write_block("k/chunk-0/block-0", &data).unwrap();
        assert_eq!(
            store.verify_block("k/chunk-0/block-0").unwrap(),
            Integrity::Verified,
            "{kind}"
        );
        // The same chunk everywhere, so a store copied with its attributes from one
        // filesystem to another keeps its checksums.
        assert_eq!(
            store.report().about("checksum_chunk"),
            Some("8 KiB"),
            "{kind}"
        );
        Damage::Flip(2 * FS_CHUNK + 9).apply_on_disk(&base.join("k/chunk-0/block-0"));
        let e = store.read_block("k/chunk-0/block-0").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{kind}: {e}");
        assert!(e.to_string().contains("chunk 2 "), "{kind}: {e}");
        let e = store
            .read_block_range("k/chunk-0/block-0", 2 * FS_CHUNK + 4096, 4096)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{kind}: {e}");
        let next = 3 * FS_CHUNK as usize;
        assert_eq!(
            store
                .read_block_range("k/chunk-0/block-0", next as u64, 4096)
                .unwrap(),
            &data[next..next + 4096],
            "{kind}"
        );
        assert_eq!(
            store.read_block_range("k/chunk-0/block-0", 0, 100).unwrap(),
            &data[..100],
            "{kind}"
        );
        store.close().unwrap();
    }
    drop(overlay);
    drop(mounts);
}

/// A 300 MiB ext4 with 1 KiB blocks (the room for a file's attributes is one such
/// block), loop-mounted at `at`; `None` (explained) where mounts cannot be made.
fn ext4_1k(dir: &std::path::Path, at: &std::path::Path) -> Option<support::Mount> {
    let image = dir.join("ext4-1k.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let made = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "1024"])
        .arg(&image)
        .status();
    let made = match made {
        Ok(s) if s.success() => Ok(()),
        other => Err(format!("mkfs.ext4 -b 1024 failed: {other:?}")),
    };
    let mount =
        made.and_then(|()| support::Mount::new(at, &["-o", "loop", image.to_str().unwrap()]));
    support::mount_or_explain(mount, "ext4 with 1 KiB blocks")
}

/// Writes a 4 MiB block at `key` and checks that it verifies and that damage in its
/// fourth 32 KiB chunk is found there: the record fits ext4 with 1 KiB blocks.
fn full_block_fits(store: &FsStore, key: &str, file: &std::path::Path) {
    let data = pattern(blockstore::BLOCK_SIZE, 31);
    store.write_block(key, &data).unwrap();
    assert_eq!(store.verify_block(key).unwrap(), Integrity::Verified);
    assert_eq!(store.read_block(key).unwrap(), data);
    Damage::Flip(100_000).apply_on_disk(file);
    let e = store.read_block(key).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(
        e.to_string().contains("chunk 3 (bytes 98304..131072)"),
        "{e}"
    );
}

/// The room for attributes is probed on the base's filesystem; a directory below the
/// base may be another with less (README: mounts below the base are allowed). A full
/// block written there takes larger chunks there, rather than failing "no space".
#[test]
fn a_mount_below_the_base_with_less_attribute_room_takes_full_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    let Some(_mount) = ext4_1k(dir.path(), &base.join("small")) else {
        return;
    };
    let store = fs_store(&base, Checksums::Crc32c);
    assert_eq!(store.report().about("checksum_chunk"), Some("8 KiB"));
    let key = "small/chunk-0/block-0";
    full_block_fits(&store, key, &base.join(key));
    // The base's own blocks keep the base's chunk.
    let data = pattern(blockstore::BLOCK_SIZE, 32);
    store.write_block("here/chunk-0/block-0", &data).unwrap();
    Damage::Flip(100_000).apply_on_disk(&base.join("here/chunk-0/block-0"));
    let e = store.read_block("here/chunk-0/block-0").unwrap_err();
    assert!(
        e.to_string().contains("chunk 12 (bytes 98304..106496)"),
        "{e}"
    );
    assert_eq!(store.report().about("checksum_chunk"), Some("8 KiB"));
    store.close().unwrap();
}

/// A store opened where it cannot probe (a read-only mount, or a full disk) writes
/// once the filesystem takes writes again, without a restart: full blocks on ext4 with
/// 1 KiB blocks take the chunk that fits, and the store keeps it from then on.
#[test]
fn a_store_opened_read_only_finds_the_chunk_that_fits_once_writable() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = ext4_1k(dir.path(), &dir.path().join("mnt")) else {
        return;
    };
    let base = mount.path.join("store");
    std::fs::create_dir(&base).unwrap();
    mount.remount("remount,ro").unwrap();
    let store = fs_store(&base, Checksums::Crc32c);
    mount.remount("remount,rw").unwrap();
    // Nearly full first: the block is stored with the chunk that fits, but "no space"
    // for a record may mean a full disk (ext4 says the same for both), which must not
    // change the store's chunk for good.
    let filler = mount.path.join("filler");
    let file = std::fs::File::create(&filler).unwrap();
    let take = free_bytes(&mount.path) - 6 * blockstore::BLOCK_SIZE as u64;
    let r = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&file), 0, 0, take as i64) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    full_block_fits(&store, "a/chunk-0/block-0", &base.join("a/chunk-0/block-0"));
    assert_eq!(store.report().about("checksum_chunk"), Some("8 KiB"));
    drop(file);
    std::fs::remove_file(&filler).unwrap();
    // With room to spare, the chunk that fitted is the store's from then on.
    full_block_fits(&store, "a/chunk-0/block-2", &base.join("a/chunk-0/block-2"));
    assert_eq!(store.report().about("checksum_chunk"), Some("32 KiB"));
    let data = pattern(blockstore::BLOCK_SIZE, 33);
    store.write_block("a/chunk-0/block-1", &data).unwrap();
    assert_eq!(store.read_block("a/chunk-0/block-1").unwrap(), data);
    store.close().unwrap();
}

/// Bytes free to an unprivileged user on the filesystem at `path`.
fn free_bytes(path: &std::path::Path) -> u64 {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut vfs) }, 0);
    vfs.f_bavail * vfs.f_frsize
}

/// ext4 keeps a file's attributes in one block: with 1 KiB blocks the 8 KiB chunks'
/// record (2,072 bytes) does not fit, so the store picks larger chunks at open and
/// full-size blocks still write and verify.
#[test]
fn small_block_ext4_gets_larger_chunks_and_full_blocks_write() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = ext4_1k(dir.path(), &dir.path().join("mnt")) else {
        return;
    };
    let store = fs_store(&mount.path.join("store"), Checksums::Crc32c);
    assert_eq!(store.report().about("checksums"), Some("crc32c"));
    assert_eq!(store.report().about("checksum_chunk"), Some("32 KiB"));
    let data = pattern(blockstore::BLOCK_SIZE, 29);
    store.write_block("big/chunk-0/block-0", &data).unwrap();
    assert_eq!(
        store.verify_block("big/chunk-0/block-0").unwrap(),
        Integrity::Verified
    );
    Damage::Flip(100_000).apply_on_disk(&mount.path.join("store/big/chunk-0/block-0"));
    let e = store.read_block("big/chunk-0/block-0").unwrap_err();
    assert!(
        e.to_string().contains("chunk 3 (bytes 98304..131072)"),
        "{e}"
    );
    store.close().unwrap();
}

/// A backend whose answer does not cover the range asked for (an S3 object replaced
/// between the two requests of one read) is asked again, twice at most; then the read
/// gives a retryable error, never a panic or wrong bytes.
#[test]
fn a_read_that_does_not_cover_its_range_is_a_retryable_error() {
    use blockstore::backend::{Backend, Checked, Fields, Sealed};
    use blockstore::{Blocks, Result};
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Shifting(AtomicUsize);
    impl Backend for Shifting {
        fn name(&self) -> &'static str {
            "shifting"
        }
        fn write(&self, _: &str, _: &[u8]) -> Result<()> {
            Ok(())
        }
        fn read(&self, _: &str) -> Result<Vec<u8>> {
            Ok(vec![0; 10])
        }
        fn read_range(&self, _: &str, _: u64, _: u64) -> Result<Vec<u8>> {
            Ok(vec![0; 10])
        }
        fn size(&self, _: &str) -> Result<u64> {
            Ok(4 << 20)
        }
        fn delete(&self, _: &str) -> Result<()> {
            Ok(())
        }
        fn delete_prefix(&self, _: &str) -> Result<u64> {
            Ok(0)
        }
        fn scan(&self, _: &str, _: Option<&str>, _: Fields) -> Result<Blocks<'_>> {
            Ok(Box::new(std::iter::empty()))
        }
        fn health(&self) -> Result<()> {
            Ok(())
        }
        fn checksums(&self) -> Checksums {
            Checksums::Crc32c
        }
        // Says its bytes start past the offset asked for, with no record; the key
        // "heals" is answered right on its second read.
        fn read_sealed(&self, key: &str, _: Option<(u64, u64)>) -> Result<Sealed> {
            let call = self.0.fetch_add(1, Ordering::SeqCst);
            if key == "heals" && call % 2 == 1 {
                return Ok(Sealed {
                    data: vec![7; 10],
                    start: 70_000,
                    size: 4 << 20,
                    record: None,
                    remembered: false,
                    crc32c: None,
                    granules: None,
                });
            }
            Ok(Sealed {
                data: vec![0; 100],
                start: 1_000_000,
                size: 4 << 20,
                record: None,
                remembered: false,
                crc32c: None,
                granules: None,
            })
        }
    }
    let store = Checked::from_backend(Shifting(AtomicUsize::new(0)));
    let calls = || store.backend().0.swap(0, Ordering::SeqCst);
    let by_range = store.read_block_range("k", 70_000, 10).unwrap_err();
    assert_eq!(calls(), 3);
    let into = store
        .read_block_range_into("k", 70_000, &mut [0u8; 10])
        .unwrap_err();
    assert_eq!(calls(), 3);
    for e in [by_range, into] {
        assert_eq!(e.kind(), ErrorKind::Backend, "{e}");
        assert!(e.is_retryable(), "{e}");
        assert!(e.to_string().contains("changed while it was read"), "{e}");
    }
    assert_eq!(
        store.read_block_range("heals", 70_000, 10).unwrap(),
        [7; 10]
    );
    assert_eq!(calls(), 2);
}

/// `checksums = "require"`: a block without a record (written with checksums off, or
/// rewritten by a tool that dropped the attribute) is `Corrupt`, for reads and for
/// `verify_block`; on a filesystem without attributes the store refuses to open.
#[test]
fn require_refuses_blocks_without_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(LEN as usize, 31);
    fs_store(dir.path(), Checksums::Off)
        .write_block("plain/block", &data)
        .unwrap();
    let strict = fs_store(dir.path(), Checksums::Require);
    assert_eq!(strict.report().about("checksums"), Some("require"));
    strict.write_block("sealed/block", &data).unwrap();
    assert_eq!(strict.read_block("sealed/block").unwrap(), data);
    assert_eq!(
        strict.verify_block("sealed/block").unwrap(),
        Integrity::Verified
    );
    for e in [
        strict.read_block("plain/block").unwrap_err(),
        strict.read_block_range("plain/block", 10, 10).unwrap_err(),
        strict.verify_block("plain/block").unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("requires them"), "{e}");
    }
    // A rewrite through a new inode (as `sed -i` does) drops the attribute.
    let path = dir.path().join("sealed/block");
    let copy = dir.path().join("sealed/.edited");
    std::fs::write(&copy, &data).unwrap();
    std::fs::rename(&copy, &path).unwrap();
    assert_eq!(
        strict.read_block("sealed/block").unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    assert_eq!(
        fs_store(dir.path(), Checksums::Crc32c)
            .verify_block("sealed/block")
            .unwrap(),
        Integrity::Unverified
    );

    let Some(ramfs) = support::mount_or_explain(
        support::Mount::new(&dir.path().join("ramfs"), &["-t", "ramfs", "ramfs"]),
        "ramfs",
    ) else {
        return;
    };
    let mut config = FsConfig::new(ramfs.path.join("store"));
    config.checksums = Checksums::Require;
    let e = FsStore::open(config).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("extended attributes"), "{e}");
}

/// The offset on its filesystem's device of byte `at` of the file at `path` (FIEMAP).
fn physical_offset(path: &std::path::Path, at: u64) -> u64 {
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Extent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }
    #[repr(C)]
    struct Map {
        start: u64,
        length: u64,
        flags: u32,
        mapped: u32,
        count: u32,
        reserved: u32,
        extents: [Extent; 32],
    }
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const FIEMAP_FLAG_SYNC: u32 = 1;
    let file = std::fs::File::open(path).unwrap();
    let mut map = Map {
        start: 0,
        length: u64::MAX,
        flags: FIEMAP_FLAG_SYNC,
        mapped: 0,
        count: 32,
        reserved: 0,
        extents: [Extent::default(); 32],
    };
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            FS_IOC_FIEMAP,
            &mut map as *mut Map,
        )
    };
    assert_eq!(r, 0, "FIEMAP: {}", std::io::Error::last_os_error());
    let extent = map.extents[..map.mapped as usize]
        .iter()
        .find(|e| e.logical <= at && at < e.logical + e.length)
        .unwrap_or_else(|| panic!("no extent holds byte {at} of {}", path.display()));
    extent.physical + (at - extent.logical)
}

/// Bit rot: a byte changes on the device under a live store, not through the
/// filesystem, so the file's times and size stay as they were. Once the page cache
/// lets go of the file, every read touching the byte is `Corrupt`, ranges read before
/// the damage (whose checksum records, and the CRCs of whose 1 KiB pieces, the store
/// may have kept) included; ranges elsewhere still read.
#[test]
fn rot_on_the_device_under_a_live_store_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = support::mount_or_explain(
        support::loop_fs(dir.path(), "ext4", 64),
        "rot_on_the_device_under_a_live_store_is_corrupt",
    ) else {
        return;
    };
    let store = fs_store(&mount.path.join("store"), Checksums::Crc32c);
    let data = pattern(LEN as usize, 23);
    let key = "rot/chunk-0/block-0";
    store.write_block(key, &data).unwrap();
    let ranges = [(5 * FS_CHUNK + 100, 4096), (0, 4096), (LEN - 10, 10)];
    // Old enough that the store may remember its record (two seconds unchanged).
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    for _ in 0..3 {
        for (offset, length) in ranges {
            let at = offset as usize;
            assert_eq!(
                store.read_block_range(key, offset, length).unwrap(),
                &data[at..at + length as usize]
            );
        }
    }
    let path = mount.path.join("store").join(key);
    let before = std::fs::metadata(&path).unwrap();
    let at = 5 * FS_CHUNK + 200;
    let on_device = physical_offset(&path, at);
    let image = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join("ext4.img"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&image, &[data[at as usize] ^ 0x04], on_device)
        .unwrap();
    image.sync_all().unwrap();
    // Let go of the file's cached pages: the next read comes from the device.
    let file = std::fs::File::open(&path).unwrap();
    let r = unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    assert_eq!(r, 0);
    assert_eq!(
        std::fs::read(&path).unwrap()[at as usize],
        data[at as usize] ^ 0x04,
        "the damage reached the file"
    );
    let after = std::fs::metadata(&path).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (after.ctime(), after.ctime_nsec(), after.ino(), after.len()),
        (
            before.ctime(),
            before.ctime_nsec(),
            before.ino(),
            before.len()
        ),
        "the file looks unchanged"
    );
    for _ in 0..2 {
        let e = store
            .read_block_range(key, 5 * FS_CHUNK + 100, 4096)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("chunk 5 "), "{e}");
        let mut buf = [0u8; 10];
        let e = store.read_block_range_into(key, at, &mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert_eq!(
            store.read_block(key).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        assert_eq!(
            store.verify_block(key).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        assert_eq!(store.read_block_range(key, 0, 4096).unwrap(), &data[..4096]);
    }
    store.close().unwrap();
    drop(file);
    drop(mount);
}

/// An operator moves a store to another filesystem with `cp -a` (as the README
/// advises): from XFS and from btrfs to ext4 and back, every block still verifies, so
/// no filesystem may write records another cannot hold.
#[test]
fn a_store_copied_with_cp_a_to_another_filesystem_keeps_its_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mounts) = support::loop_mounts(dir.path(), &["xfs", "btrfs", "ext4"], 300) else {
        return;
    };
    let blocks: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            let len = [4 << 20, LEN as usize, 4096][i];
            (
                format!("e/f{i}/chunk-0/block-0"),
                pattern(len, 40 + i as u8),
            )
        })
        .collect();
    for (from, to) in [(0, 2), (1, 2), (2, 0)] {
        let (source, target) = (&mounts[from], &mounts[to]);
        let base = source.1.path.join(format!("to-{}", target.0));
        let store = fs_store(&base, Checksums::Crc32c);
        for (key, data) in &blocks {
            store.write_block(key, data).unwrap();
        }
        store.close().unwrap();
        let copy = target.1.path.join(format!("from-{}", source.0));
        let out = std::process::Command::new("cp")
            .arg("-a")
            .arg(&base)
            .arg(&copy)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "cp -a {} -> {}: {}",
            source.0,
            target.0,
            String::from_utf8_lossy(&out.stderr)
        );
        let copied = fs_store(&copy, Checksums::Require);
        for (key, data) in &blocks {
            assert_eq!(
                copied.verify_block(key).unwrap(),
                Integrity::Verified,
                "{key} copied from {} to {}",
                source.0,
                target.0
            );
            assert_eq!(&copied.read_block(key).unwrap(), data);
        }
        copied.close().unwrap();
    }
    drop(mounts);
}

/// Bytes that repeat nowhere in a filesystem image, from a seed.
fn unique_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// The extended attribute `name` of the file at `path` (`None` to remove it).
fn set_record(path: &std::path::Path, value: Option<&[u8]>) {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let name = c"user.blockstore.sums";
    let r = unsafe {
        match value {
            Some(v) => libc::setxattr(path.as_ptr(), name.as_ptr(), v.as_ptr().cast(), v.len(), 0),
            None => libc::removexattr(path.as_ptr(), name.as_ptr()),
        }
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

fn record_of(path: &std::path::Path) -> Vec<u8> {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 8192];
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"user.blockstore.sums".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert!(n > 0, "{}", std::io::Error::last_os_error());
    buf.truncate(n as usize);
    buf
}

/// Where a file's times move once a second (ext4 with 128-byte inodes; before Linux
/// 6.13 they move once a clock tick everywhere), a block changed behind the store's
/// back within the second of its last change keeps its times. Ranges must still be
/// checked against the record stored now: another block's record and data copied over
/// part of it, or its record removed under `checksums = "require"`, make ranges that
/// no longer match it `Corrupt`, whatever the store read of the block before.
#[test]
fn a_change_within_one_timestamp_tick_is_still_found_by_ranges() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = support::mount_or_explain(
        support::loop_fs_with(dir.path(), "ext4", 64, &["-I", "128"]),
        "a_change_within_one_timestamp_tick_is_still_found_by_ranges",
    ) else {
        return;
    };
    let base = mount.path.join("store");
    let store = fs_store(&base, Checksums::Require);
    let (b, c) = (unique_bytes(1 << 20, 1), unique_bytes(1 << 20, 2));
    store.write_block("b", &b).unwrap();
    let times = |path: &std::path::Path| {
        let m = std::fs::metadata(path).unwrap();
        (
            m.ctime(),
            m.ctime_nsec(),
            m.mtime(),
            m.mtime_nsec(),
            m.ino(),
        )
    };
    let mut seen = [false; 2];
    for attempt in 0..40 {
        let scenario = attempt % 2;
        if seen[scenario] {
            continue;
        }
        let key = format!("c{attempt}");
        let path = base.join(&key);
        store.write_block(&key, &c).unwrap();
        // Read ranges of it: the store may remember its record now.
        for _ in 0..3 {
            assert_eq!(
                store.read_block_range(&key, 100_000, 4096).unwrap(),
                &c[100_000..104_096]
            );
        }
        let before = times(&path);
        if scenario == 0 {
            // b's record, and the first 64 KiB of b's bytes: a restore cut short.
            set_record(&path, Some(&record_of(&base.join("b"))));
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.write_all_at(&b[..65_536], 0).unwrap();
        } else {
            set_record(&path, None);
        }
        if times(&path) != before {
            // The second turned: the times moved, which is not the case looked for.
            continue;
        }
        seen[scenario] = true;
        let Err(e) = store.read_block_range(&key, 100_000, 4096) else {
            panic!("scenario {scenario}: a range of a block whose record no longer matches it read as data");
        };
        assert_eq!(e.kind(), ErrorKind::Corrupt, "scenario {scenario}: {e}");
        let mut buf = [0u8; 100];
        let e = store
            .read_block_range_into(&key, 200_000, &mut buf)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "scenario {scenario}: {e}");
        if seen == [true, true] {
            break;
        }
    }
    assert_eq!(
        seen,
        [true, true],
        "no change fell within the second of the last"
    );
    store.close().unwrap();
    drop(mount);
}

/// btrfs checksums data itself: a bit flipped on its device makes the read fail with
/// EIO before the store sees the bytes. That block is damaged all the same: `Corrupt`
/// for every read that touches it (so `scrub` counts it and `copy` repairs it), while
/// the rest of the block still reads.
#[test]
fn damage_the_filesystem_finds_first_is_corrupt_too() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = support::mount_or_explain(
        support::loop_fs(dir.path(), "btrfs", 300),
        "damage_the_filesystem_finds_first_is_corrupt_too",
    ) else {
        return;
    };
    for checksums in [Checksums::Crc32c, Checksums::Off] {
        let base = mount.path.join(checksums.as_str());
        let store = fs_store(&base, checksums);
        let data = unique_bytes(1 << 20, 9 + checksums as u64);
        let key = "rot/chunk-0/block-0";
        store.write_block(key, &data).unwrap();
        let at = 600_000usize;
        // Where the block's bytes lie in the image: the one place holding them.
        let image = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.path().join("btrfs.img"))
            .unwrap();
        let bytes = std::fs::read(dir.path().join("btrfs.img")).unwrap();
        let needle = &data[at..at + 64];
        let found: Vec<usize> = bytes
            .windows(64)
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(found.len(), 1, "the block's bytes appear once in the image");
        drop(bytes);
        std::os::unix::fs::FileExt::write_all_at(&image, &[data[at] ^ 0x10], found[0] as u64)
            .unwrap();
        image.sync_all().unwrap();
        let file = std::fs::File::open(base.join(key)).unwrap();
        let r = unsafe {
            libc::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
                0,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        assert_eq!(r, 0);
        drop(file);
        let e = store.read_block(key).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{checksums:?}: {e}");
        assert_eq!(e.errno(), libc::EIO);
        assert!(!e.is_retryable(), "{e}");
        assert!(e.to_string().contains(key), "{e}");
        let e = store.read_block_range(key, at as u64, 10).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{checksums:?}: {e}");
        let mut buf = [0u8; 10];
        let e = store
            .read_block_range_into(key, at as u64, &mut buf)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{checksums:?}: {e}");
        assert_eq!(
            store.verify_block(key).unwrap_err().kind(),
            ErrorKind::Corrupt,
            "{checksums:?}"
        );
        assert_eq!(store.read_block_range(key, 0, 4096).unwrap(), &data[..4096]);
        // A new write of the block heals it.
        store.write_block(key, &data).unwrap();
        assert_eq!(store.read_block(key).unwrap(), data);
        store.close().unwrap();
    }
    drop(mount);
}

/// A record whose chunk CRC is damaged while its whole-block CRC still matches the
/// bytes: whole reads, `verify_block` (what scrub and copy use) and ranges over that
/// chunk must all say `Corrupt`, or scrub passes a block that ranges refuse and a
/// repair by copy skips it.
#[test]
fn a_damaged_chunk_checksum_is_corrupt_for_whole_reads_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = fs_store(dir.path(), Checksums::Crc32c);
    let data = pattern(65_535, 11);
    store.write_block("c/chunk-0/block-0", &data).unwrap();
    let path = dir.path().join("c/chunk-0/block-0");
    let mut record = record_of(&path);
    // The second chunk's CRC (records: a 24-byte header, then a CRC per chunk).
    record[24 + 4 + 2] ^= 1;
    set_record(&path, Some(&record));
    for e in [
        store.read_block("c/chunk-0/block-0").unwrap_err(),
        store.verify_block("c/chunk-0/block-0").unwrap_err(),
        store
            .read_block_range("c/chunk-0/block-0", 9_000, 10)
            .unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    }
    // Chunks whose CRCs are intact still read.
    assert_eq!(
        store
            .read_block_range("c/chunk-0/block-0", 100, 10)
            .unwrap(),
        data[100..110]
    );
}

/// Blocks of 2 MiB and more are read in parts whose CRCs are taken while the rest is
/// still read (by a helper thread where a CPU is free): damage in the first part, a
/// middle one and the last, or a block cut or grown, is still `Corrupt` and named, in
/// blocks of a whole number of parts and not, and clean blocks read back exact while
/// damaged ones are read beside them.
#[test]
fn large_blocks_read_in_parts_still_find_damage_in_every_part() {
    let dir = tempfile::tempdir().unwrap();
    let store = fs_store(dir.path(), Checksums::Crc32c);
    for len in [blockstore::BLOCK_SIZE, 3 * 1024 * 1024 + 5, 2 * 1024 * 1024] {
        let data = pattern(len, 11);
        let len = len as u64;
        let damages = [
            Damage::Flip(10),
            Damage::Flip(len / 2 + 3),
            Damage::Flip(len - 1),
            Damage::Truncate(len - 600_000),
            Damage::Truncate(len - 1),
            Damage::Extend(9),
        ];
        let clean = format!("large/{len}/clean");
        store.write_block(&clean, &data).unwrap();
        for (i, damage) in damages.into_iter().enumerate() {
            let key = format!("large/{len}/{i}");
            store.write_block(&key, &data).unwrap();
            assert!(store.read_block(&key).unwrap() == data, "{len}: {damage:?}");
            damage.apply_on_disk(&dir.path().join(&key));
            std::thread::scope(|scope| {
                let reader = scope.spawn(|| {
                    for _ in 0..20 {
                        assert!(store.read_block(&clean).unwrap() == data, "{len}");
                    }
                });
                for _ in 0..20 {
                    let e = store.read_block(&key).unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::Corrupt, "{len}: {damage:?}: {e}");
                    let text = e.to_string();
                    match damage {
                        Damage::Flip(at) => assert!(
                            text.contains(&format!("chunk {} ", at / FS_CHUNK)),
                            "{len}: {damage:?}: {text}"
                        ),
                        _ => assert!(text.contains("bytes long"), "{damage:?}: {text}"),
                    }
                }
                reader.join().unwrap();
            });
            // Chunks away from a flipped byte still read (a cut or grown block is
            // corrupt for every read: its length is not the one checksummed).
            if let Damage::Flip(at) = damage {
                let away = if at < len / 4 { len / 2 } else { 0 };
                assert_eq!(
                    store.read_block_range(&key, away, 4096).unwrap(),
                    data[away as usize..away as usize + 4096],
                    "{len}: {damage:?}"
                );
            }
        }
    }
}
