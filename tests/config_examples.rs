//! Every file in `config-examples/` parses, and says what its name promises.

use std::path::Path;

use blockstore::{BackendKind, Config};

fn load(name: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config-examples")
        .join(name);
    Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_example_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config-examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert_eq!(
        seen, 7,
        "memory, local, local-s3, filesystem, s3-aws, s3-minio-ceph, localstack"
    );
}

#[test]
fn examples_name_their_backend() {
    assert_eq!(load("memory.toml").block_store.backend, BackendKind::Memory);
    let local = load("local.toml").block_store.filesystem.unwrap();
    assert!(local.base_path.is_relative(), "runs from a clone as it is");
    let fs = load("filesystem.toml");
    assert_eq!(fs.block_store.backend, BackendKind::Filesystem);
    let fs = fs.block_store.filesystem.unwrap();
    assert_eq!((fs.dir_mode, fs.file_mode, fs.fsync), (0o750, 0o640, true));
    for (name, path_style) in [
        ("s3-aws.toml", false),
        ("s3-minio-ceph.toml", true),
        ("localstack.toml", true),
    ] {
        let c = load(name);
        assert_eq!(c.block_store.backend, BackendKind::S3, "{name}");
        assert_eq!(
            c.block_store.s3.unwrap().force_path_style,
            path_style,
            "{name}"
        );
    }
    assert_eq!(load("s3-minio-ceph.toml").pool.unwrap().workers, 32);
}

#[test]
fn load_names_the_file_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[block_store]\ntype = \"s3\"\n[block_store.s3]\nbuckit = \"x\"\n",
    )
    .unwrap();
    let e = Config::load(&path).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("bad.toml") && msg.contains("buckit") && msg.contains("line 4"),
        "{msg}"
    );
    let e = Config::load(dir.path().join("missing.toml")).unwrap_err();
    assert_eq!(e.kind(), blockstore::ErrorKind::Config);
}
