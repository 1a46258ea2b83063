//! Fuzzed inputs (proptest; `cargo fuzz` needs nightly): the key and prefix validator,
//! the block-key parser and the configuration loader never panic on anything, and every
//! key the validator accepts round-trips through every backend.

mod support;

use std::sync::Arc;

use blockstore::key::{validate_key, validate_prefix};
use blockstore::{
    block_key, parse_block_key, BlockStore, Config, ErrorKind, FsConfig, FsStore, MemoryStore,
};
use proptest::prelude::*;

fn cases(default: u32) -> u32 {
    std::env::var("BLOCKSTORE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Strings that look like keys: path-ish characters, dots, slashes, Unicode, controls.
fn keyish() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-c./%#?+ ~\\-]{0,12}",
        "[a-z]{1,4}(/[a-z.]{0,4}){0,4}",
        "(\\.blockstore|\\.|\\.\\.|ü|日本|\u{FFFF}|\u{7f}|\n)(/[a-z]{0,3}){0,2}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2000), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn validators_never_panic_and_agree(s in keyish()) {
        let key = validate_key(&s);
        let prefix = validate_prefix(&s);
        if key.is_ok() {
            prop_assert!(prefix.is_ok(), "{s:?} is a key but not a prefix");
        }
        // A valid key extended by a valid segment is still a valid prefix.
        if key.is_ok() && s.len() < 1000 {
            let extended = format!("{s}/x");
            prop_assert!(validate_prefix(&extended).is_ok(), "{:?}", extended);
        }
        // Every prefix of a valid key is a valid prefix.
        if key.is_ok() {
            for (i, _) in s.char_indices() {
                prop_assert!(validate_prefix(&s[..i]).is_ok(), "{:?} (prefix of {s:?})", &s[..i]);
            }
        }
        let _ = blockstore::key::check_key(blockstore::Op::Write, &s).map_err(|e| assert_eq!(e.kind(), ErrorKind::InvalidKey));
    }

    #[test]
    fn block_key_parser_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let s = String::from_utf8_lossy(&bytes);
        if let Ok(parts) = parse_block_key(&s) {
            prop_assert_eq!(block_key(parts.content_id, parts.chunk_idx, parts.block_idx), s.as_ref());
        }
    }

    #[test]
    fn built_block_keys_parse_back(id in "[a-z/]{1,20}", chunk in any::<u64>(), block in any::<u64>()) {
        let key = block_key(&id, chunk, block);
        let parts = parse_block_key(&key).unwrap();
        prop_assert_eq!((parts.content_id, parts.chunk_idx, parts.block_idx), (id.as_str(), chunk, block));
    }

    #[test]
    fn config_loader_never_panics(text in any::<String>()) {
        if let Err(e) = Config::from_toml_str(&text) {
            prop_assert_eq!(e.kind(), ErrorKind::Config);
        }
    }

    #[test]
    fn config_loader_names_keys_in_plausible_documents(
        ty in prop_oneof![Just("memory"), Just("filesystem"), Just("s3"), Just("ftp"), Just("")],
        key in prop_oneof![Just("base_path"), Just("bucket"), Just("fsync"), Just("max_retries"), Just("dir_mode"), Just("bogus")],
        value in prop_oneof![Just("\"x\""), Just("1"), Just("-1"), Just("true"), Just("0o777"), Just("[1]"), Just("{}")],
        section in prop_oneof![Just("filesystem"), Just("s3"), Just("memory")],
    ) {
        let text = format!("[block_store]\ntype = \"{ty}\"\n[block_store.{section}]\n{key} = {value}\n");
        if let Err(e) = Config::from_toml_str(&text) {
            prop_assert_eq!(e.kind(), ErrorKind::Config);
            prop_assert!(e.to_string().contains("line"), "{} has no line: {}", text, e);
        }
    }
}

/// Valid keys drawn from a broad alphabet.
fn valid_key() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 .%#?+~ü日\\-]{1,12}(/[a-zA-Z0-9 .%#?+~ü日\\-]{1,12}){0,3}"
        .prop_filter("valid key", |k| validate_key(k).is_ok())
}

fn round_trip(store: &dyn BlockStore, key: &str) -> Result<(), TestCaseError> {
    let data = key.as_bytes().repeat(3);
    store
        .write_block(key, &data)
        .map_err(|e| TestCaseError::fail(format!("write {key:?}: {e}")))?;
    prop_assert_eq!(
        store
            .read_block(key)
            .map_err(|e| TestCaseError::fail(format!("read {key:?}: {e}")))?,
        data
    );
    prop_assert_eq!(
        store
            .list_by_prefix(key)
            .map_err(|e| TestCaseError::fail(e.to_string()))?,
        vec![key.to_owned()]
    );
    store
        .delete_block(key)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(
        store.read_block(key).map_err(|e| e.kind()).err(),
        Some(ErrorKind::NotFound)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(300), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn accepted_keys_round_trip_in_memory(key in valid_key()) {
        round_trip(&MemoryStore::new(), &key)?;
    }

    #[test]
    fn accepted_keys_round_trip_on_the_filesystem(key in valid_key()) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(FsConfig::new(dir.path())).unwrap();
        round_trip(&store, &key)?;
        let left = support::tree_outside_internal(dir.path());
        prop_assert!(left.is_empty(), "left behind: {left:?}");
    }
}

#[cfg(feature = "s3")]
#[test]
fn accepted_keys_round_trip_on_s3() {
    let config = support::s3::config();
    let _cleanup = support::s3::Cleanup(config.clone());
    let store: Arc<dyn BlockStore> = Arc::new(blockstore::S3Store::open(config).unwrap());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(40).min(80),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&valid_key(), |key| round_trip(&*store, &key))
        .unwrap();
}
