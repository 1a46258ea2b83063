//! The quickstart runs as the README says and leaves nothing behind: the folder it made
//! is gone afterwards, hidden internal area included.

use std::path::Path;
use std::process::Command;

#[test]
fn the_quickstart_runs_and_leaves_nothing_behind() {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(Path::parent).unwrap();
    let quickstart = debug.join("examples/quickstart");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(&quickstart)
        .current_dir(dir.path())
        .output()
        .expect("the quickstart example is built by cargo test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("wrote 4 blocks") && stdout.contains("deleted 4 blocks; 0 left"),
        "{stdout}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // A folder that was there before stays.
    std::fs::create_dir(dir.path().join("blockstore-data")).unwrap();
    let out = Command::new(&quickstart)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(dir.path().join("blockstore-data").is_dir());
}
