//! Checksums on S3 (moto by default, RGW in CI): objects rewritten by another client
//! (rust-s3's own requests) with their metadata kept and their bytes damaged are
//! `Corrupt` where the damage is; a body damaged once on the way is read again and
//! served; blocks without checksums stay readable; scrub-style verification finds
//! exactly the damaged ones.

mod support;

use blockstore::{BlockStore, Checksums, ErrorKind, Integrity, S3Config, S3Store};
use support::damage::{pattern, reads_see_the_damage, Damage, DAMAGES, LEN, S3_CHUNK};
use support::proxy::Proxy;
use support::s3;

const SUMS: &str = "x-amz-meta-blockstore-sums";

/// Rewrites the object of `key` through rust-s3: its bytes changed by `damage`, its
/// checksum metadata kept (or dropped), as a server with a bug, or a person, might.
fn rewrite(c: &S3Config, key: &str, damage: Option<Damage>, keep_sums: bool) {
    let (bucket, runtime) = s3::raw_bucket(c);
    let full = format!("{}{key}", c.key_prefix);
    runtime.block_on(async {
        let got = bucket.get_object(&full).await.unwrap();
        assert_eq!(got.status_code(), 200);
        let sums = got.headers().get(SUMS).cloned();
        let mut bytes = got.bytes().to_vec();
        if let Some(damage) = damage {
            damage.apply(&mut bytes);
        }
        let mut put = bucket.put_object_builder(&full, &bytes);
        if keep_sums {
            let sums = sums.unwrap_or_else(|| panic!("{key} was stored without {SUMS}"));
            put = put.with_metadata("blockstore-sums", sums).unwrap();
        }
        let reply = put.execute().await.unwrap();
        assert_eq!(reply.status_code(), 200);
    });
}

#[test]
fn objects_damaged_at_rest_are_corrupt_where_they_are() {
    let c = s3::config();
    let _cleanup = s3::Cleanup(c.clone());
    let store = S3Store::open(c.clone()).unwrap();
    let data = pattern(LEN as usize, 21);
    for (i, damage) in DAMAGES.into_iter().enumerate() {
        let key = format!("d/{i}/chunk-0/block-0");
        store.write_block(&key, &data).unwrap();
        assert_eq!(store.verify_block(&key).unwrap(), Integrity::Verified);
        rewrite(&c, &key, Some(damage), true);
        reads_see_the_damage(&store, &key, &data, damage, S3_CHUNK);
    }
    // Only the damaged blocks fail a scrub.
    store.write_block("d/clean/chunk-0/block-0", &data).unwrap();
    let mut corrupt = Vec::new();
    for block in store.scan("d/", None).unwrap() {
        let key = block.unwrap().key;
        match store.verify_block(&key) {
            Ok(Integrity::Verified) => {}
            Err(e) if e.kind() == ErrorKind::Corrupt => corrupt.push(key),
            other => panic!("{key}: {other:?}"),
        }
    }
    assert_eq!(corrupt.len(), DAMAGES.len(), "{corrupt:?}");
    assert!(!corrupt.iter().any(|k| k.contains("clean")));
}

/// An object without the metadata (written with checksums off, or by another tool) is
/// served unverified; with a record that is not base64 it is corrupt.
#[test]
fn objects_without_checksums_are_unverified() {
    let c = s3::config();
    let _cleanup = s3::Cleanup(c.clone());
    let store = S3Store::open(c.clone()).unwrap();
    let data = pattern(LEN as usize, 22);
    store.write_block("u/a", &data).unwrap();
    rewrite(&c, "u/a", None, false);
    assert_eq!(store.read_block("u/a").unwrap(), data);
    assert_eq!(
        store.read_block_range("u/a", 70_000, 10).unwrap(),
        &data[70_000..70_010]
    );
    assert_eq!(store.verify_block("u/a").unwrap(), Integrity::Unverified);
    // A store that requires checksums calls the same object corrupt.
    let mut strict = c.clone();
    strict.checksums = Checksums::Require;
    let strict = S3Store::open(strict).unwrap();
    assert_eq!(
        strict.read_block("u/a").unwrap_err().kind(),
        ErrorKind::Corrupt
    );

    let mut off = c.clone();
    off.checksums = Checksums::Off;
    let plain = S3Store::open(off).unwrap();
    plain.write_block("u/b", &data).unwrap();
    assert_eq!(store.verify_block("u/b").unwrap(), Integrity::Unverified);

    let (bucket, runtime) = s3::raw_bucket(&c);
    runtime.block_on(async {
        let reply = bucket
            .put_object_builder(format!("{}u/c", c.key_prefix), &data)
            .with_metadata("blockstore-sums", "not base64!")
            .unwrap()
            .execute()
            .await
            .unwrap();
        assert_eq!(reply.status_code(), 200);
    });
    let e = store.read_block("u/c").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("checksum record"), "{e}");
}

/// A body damaged on the way back (once) is read again and served; damaged every time,
/// the read fails with `Corrupt` after exactly two GETs.
#[test]
fn damage_in_transit_is_read_again() {
    let server = s3::server();
    let proxy = Proxy::start(&server.endpoint);
    let mut c = s3::config();
    let _cleanup = s3::Cleanup(c.clone());
    c.endpoint = proxy.endpoint();
    let store = S3Store::open(c).unwrap();
    let data = pattern(LEN as usize, 23);
    store.write_block("t/k", &data).unwrap();
    proxy.take_seen();
    proxy.corrupt_next_response_bodies(1);
    assert_eq!(store.read_block("t/k").unwrap(), data);
    assert_eq!(
        proxy
            .take_seen()
            .iter()
            .filter(|s| s.method == "GET")
            .count(),
        2
    );
    proxy.corrupt_next_response_bodies(2);
    let e = store.read_block_range("t/k", 0, 100).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert_eq!(
        proxy
            .take_seen()
            .iter()
            .filter(|s| s.method == "GET")
            .count(),
        2
    );
}

/// A record in the documented layout with chunks of `chunk` bytes, built here from the
/// README's description rather than by the crate.
fn record_with_chunks(data: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = b"BSUM".to_vec();
    out.extend_from_slice(&[1, 1, 0, 0]);
    out.extend_from_slice(&(chunk as u32).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    for piece in data.chunks(chunk) {
        out.extend_from_slice(&crc32c::crc32c(piece).to_le_bytes());
    }
    out
}

/// Records are the same on every backend, so an object may carry one with chunks
/// other than the 64 KiB this backend writes (copied from elsewhere, or by another
/// tool): ranges are read and checked by the record's own chunks, larger or smaller.
#[test]
fn ranges_follow_the_records_own_chunks() {
    use base64::prelude::{Engine, BASE64_STANDARD};
    let c = s3::config();
    let _cleanup = s3::Cleanup(c.clone());
    let store = S3Store::open(c.clone()).unwrap();
    let mut data = pattern(1_234_567, 31);
    let (bucket, runtime) = s3::raw_bucket(&c);
    // Stores `body` under `key` with the record of `good`.
    let put = |key: &str, body: &[u8], good: &[u8], chunk: usize| {
        let full = format!("{}{key}", c.key_prefix);
        let sums = BASE64_STANDARD.encode(record_with_chunks(good, chunk));
        runtime.block_on(async {
            let reply = bucket
                .put_object_builder(&full, body)
                .with_metadata("blockstore-sums", &sums)
                .unwrap()
                .execute()
                .await
                .unwrap();
            assert_eq!(reply.status_code(), 200);
        });
    };
    for chunk in [4096, 131_072, 1 << 20] {
        let key = format!("r/{chunk}/chunk-0/block-0");
        put(&key, &data, &data, chunk);
        assert_eq!(store.verify_block(&key).unwrap(), Integrity::Verified);
        for (offset, len) in [(70_000, 10), (131_000, 200), (1_234_000, 567), (0, 1)] {
            assert_eq!(
                store.read_block_range(&key, offset, len).unwrap(),
                data[offset as usize..(offset + len) as usize],
                "chunks of {chunk}: {len} bytes at {offset}"
            );
        }
    }
    // Damage in the second 128 KiB chunk: ranges there fail, ranges elsewhere read.
    let key = "r/damaged/chunk-0/block-0";
    let good = data.clone();
    data[200_000] ^= 1;
    put(key, &data, &good, 131_072);
    let e = store.read_block_range(key, 140_000, 10).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("chunk 1 "), "{e}");
    assert_eq!(
        store.read_block_range(key, 300_000, 10).unwrap(),
        data[300_000..300_010]
    );
}
