//! The `blockstore` binary end to end: every command and exit code against the
//! filesystem backend, copies to moto (or the configured S3 server) and back, an
//! interrupted copy resumed, and bad configuration files.

#[path = "../../tests/support/proxy.rs"]
#[allow(dead_code)]
mod proxy;
#[path = "../../tests/support/s3.rs"]
mod s3_support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use assert_cmd::Command;

/// The binary with a configuration file (and no `$BLOCKSTORE_CONFIG`).
fn cli(config: &Path) -> Command {
    let mut cmd = Command::cargo_bin("blockstore").unwrap();
    cmd.env_remove("BLOCKSTORE_CONFIG")
        .arg("--config")
        .arg(config);
    cmd
}

fn fs_config(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "[block_store]\ntype = \"filesystem\"\n[block_store.filesystem]\nbase_path = \"{}\"\n[pool]\nworkers = 4\nqueue_capacity = 8\n",
        dir.join(name).display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn s3_config(dir: &Path) -> PathBuf {
    s3_config_at(dir, &s3_support::config().endpoint)
}

/// An S3 configuration with another endpoint (a proxy in front of the server).
fn s3_config_at(dir: &Path, endpoint: &str) -> PathBuf {
    let c = s3_support::config();
    let path = dir.join("s3.toml");
    let text = format!(
        "[block_store]\ntype = \"s3\"\n[block_store.s3]\nbucket = \"{}\"\nendpoint = \"{}\"\nforce_path_style = true\n\
         key_prefix = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
        c.bucket, endpoint, c.key_prefix, c.access_key_id, c.secret_access_key
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_command_and_exit_code_on_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let config = fs_config(dir.path(), "store");
    // Reading commands never create a store.
    cli(&config)
        .args(["ls"])
        .assert()
        .code(3)
        .stderr(predicates::str::contains("no store at"));
    assert!(!dir.path().join("store").exists());

    // put from a file and from stdin; binary data survives.
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    std::fs::write(dir.path().join("in.bin"), &binary).unwrap();
    cli(&config)
        .args(["put", "export/f/chunk-0/block-0"])
        .arg(dir.path().join("in.bin"))
        .assert()
        .success();
    cli(&config)
        .args(["put", "export/f/chunk-0/block-1"])
        .write_stdin(b"\x00\xffhello\n".to_vec())
        .assert()
        .success();
    cli(&config)
        .args(["--quiet", "put", "export/g/chunk-0/block-0"])
        .write_stdin("x")
        .assert()
        .success()
        .stdout("");

    let got = cli(&config)
        .args(["get", "export/f/chunk-0/block-0"])
        .output()
        .unwrap();
    assert!(got.status.success());
    assert_eq!(got.stdout, binary, "get writes the raw bytes");
    cli(&config)
        .args([
            "get",
            "export/f/chunk-0/block-1",
            "--offset",
            "2",
            "--length",
            "5",
        ])
        .assert()
        .success()
        .stdout("hello");
    let out_file = dir.path().join("out.bin");
    cli(&config)
        .args(["get", "export/f/chunk-0/block-0", "-o"])
        .arg(&out_file)
        .assert()
        .success();
    assert_eq!(std::fs::read(&out_file).unwrap(), binary);

    assert_eq!(
        stdout(cli(&config).args(["stat", "export/f/chunk-0/block-0"])),
        "70000\n"
    );
    assert_eq!(
        stdout(cli(&config).args(["ls", "export/f/"])),
        "export/f/chunk-0/block-0\nexport/f/chunk-0/block-1\n"
    );
    assert!(stdout(cli(&config).args(["ls", "-l", "export/f/"]))
        .contains("70000  export/f/chunk-0/block-0"));
    assert_eq!(stdout(cli(&config).args(["ls", "--count"])), "3\n");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(cli(&config).args(["--json", "ls", "export/g/"]))).unwrap();
    assert_eq!(json[0]["key"], "export/g/chunk-0/block-0");
    assert_eq!(json[0]["size"], 1);
    assert_eq!(stdout(cli(&config).args(["health"])), "healthy\n");

    // Exit codes: 3 not found, 2 invalid input, 1 failure.
    cli(&config)
        .args(["get", "export/a/chunk-0/block-3"])
        .assert()
        .code(3)
        .stderr("blockstore: get export/a/chunk-0/block-3: not found: no block (No such file or directory (os error 2))\n");
    cli(&config).args(["stat", "nope"]).assert().code(3);
    cli(&config)
        .args(["get", "a//b"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("invalid key"));
    cli(&config)
        .args(["get", "export/f/chunk-0/block-1", "--offset", "100"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("invalid range"));
    cli(&config)
        .args(["put", "too/big"])
        .write_stdin(vec![0u8; blockstore::BLOCK_SIZE + 1])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("block too large"));
    cli(&config).args(["frobnicate"]).assert().code(2);
    cli(&config)
        .args(["put", "export/f"])
        .write_stdin("x")
        .assert()
        .code(1)
        .stderr(predicates::str::contains("conflicts"));

    // rm: keys, prefixes, and the guard on the empty prefix.
    cli(&config)
        .args(["rm", "export/g/chunk-0/block-0", "never/there"])
        .assert()
        .success();
    cli(&config)
        .args(["rm", "--prefix", ""])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--all"));
    assert_eq!(
        stdout(cli(&config).args(["rm", "--prefix", "export/f/"])),
        "deleted 2 blocks\n"
    );
    cli(&config)
        .args(["put", "x"])
        .write_stdin("1")
        .assert()
        .success();
    assert_eq!(
        stdout(cli(&config).args(["rm", "--prefix", "", "--all"])),
        "deleted 1 blocks\n"
    );
    assert_eq!(stdout(cli(&config).args(["ls", "--count"])), "0\n");

    // Health says what is wrong, non-zero.
    std::fs::remove_dir_all(dir.path().join("store")).unwrap();
    cli(&config)
        .args(["health"])
        .assert()
        .code(3)
        .stderr(predicates::str::contains("no store at"));
}

#[test]
fn default_store_and_environment_variable() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::cargo_bin("blockstore").unwrap();
    cmd.env_remove("BLOCKSTORE_CONFIG")
        .current_dir(dir.path())
        .args(["put", "k"])
        .write_stdin("v");
    cmd.assert().success();
    assert!(
        dir.path().join("blockstore-data/k").exists(),
        "default store is ./blockstore-data"
    );
    let config = fs_config(dir.path(), "other");
    Command::cargo_bin("blockstore")
        .unwrap()
        .env("BLOCKSTORE_CONFIG", &config)
        .args(["put", "e"])
        .write_stdin("v")
        .assert()
        .success();
    assert!(
        dir.path().join("other/e").exists(),
        "$BLOCKSTORE_CONFIG is used"
    );
}

#[test]
fn bad_config_files_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        ("[block_store]\ntype = \"filesystem\"\n[block_store.filesystem]\nbase_path = \"/x\"\nfsynk = true\n", "fsynk"),
        ("[block_store]\ntype = \"s3\"\n[block_store.s3]\nbucket = \"bkt\"\nmax_retries = \"many\"\n", "block_store.s3.max_retries"),
        ("[block_store]\ntype = \"s3\"\n[block_store.s3]\nregion = \"eu-west-1\"\n", "bucket"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        cli(&path).args(["ls"]).assert().code(2).stderr(predicates::str::contains(needle)).stderr(predicates::str::contains("line"));
    }
    cli(&dir.path().join("missing.toml"))
        .args(["ls"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("cannot read"));
}

#[test]
fn copy_to_s3_and_back_with_verify() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_config(dir.path(), "src");
    let s3 = s3_config(dir.path());
    let _cleanup = s3_support::Cleanup(s3_support::config_from_file(&s3));
    for i in 0..12 {
        cli(&fs)
            .args(["put", &format!("share/f{}/chunk-0/block-{i}", i % 3)])
            .write_stdin(vec![i as u8; 1000 + i * 333])
            .assert()
            .success();
    }
    cli(&fs)
        .args(["put", "other/x"])
        .write_stdin("not copied")
        .assert()
        .success();
    let out = stdout(
        cli(&fs)
            .args(["copy", "--to"])
            .arg(&s3)
            .args(["--prefix", "share/", "--verify"]),
    );
    assert!(
        out.contains("copied 12 (") && out.contains("skipped 0 "),
        "{out}"
    );
    assert!(out.contains("all 12 copied blocks verified"), "{out}");
    assert_eq!(stdout(cli(&s3).args(["ls", "--count"])), "12\n");
    // Again: everything is already there.
    let out = stdout(
        cli(&fs)
            .args(["copy", "--to"])
            .arg(&s3)
            .args(["--prefix", "share/"]),
    );
    assert!(out.contains("copied 0 (0 B), skipped 12 "), "{out}");
    // And back into a new filesystem store.
    let back = fs_config(dir.path(), "back");
    let out = stdout(cli(&s3).args(["copy", "--to"]).arg(&back).arg("--verify"));
    assert!(out.contains("copied 12"), "{out}");
    for i in 0..12 {
        let key = format!("share/f{}/chunk-0/block-{i}", i % 3);
        let got = cli(&back).args(["get", &key]).output().unwrap();
        assert_eq!(got.stdout, vec![i as u8; 1000 + i * 333], "{key}");
    }
}

#[test]
fn interrupted_copy_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let src = fs_config(dir.path(), "src");
    let dst = fs_config(dir.path(), "dst");
    for i in 0..400 {
        cli(&src)
            .args(["put", &format!("big/{i:03}")])
            .write_stdin(vec![(i % 256) as u8; 64 * 1024])
            .assert()
            .success();
    }
    // Slow the destination down so the kill lands mid-copy: fsync on every write.
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("blockstore"))
        .env_remove("BLOCKSTORE_CONFIG")
        .arg("--config")
        .arg(&src)
        .args(["copy", "--to"])
        .arg(&dst)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dst_dir = dir.path().join("dst/big");
    let started = std::time::Instant::now();
    while std::fs::read_dir(&dst_dir).map(|d| d.count()).unwrap_or(0) < 20
        && started.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = std::fs::read_dir(&dst_dir).map(|d| d.count()).unwrap_or(0);
    assert!(partial > 0, "the copy had not started");
    let out = stdout(cli(&src).args(["copy", "--to"]).arg(&dst).arg("--verify"));
    let skipped: usize = out
        .split("skipped ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        skipped > 0 && skipped < 400,
        "resumed copy skipped {skipped} (partial had {partial}): {out}"
    );
    assert_eq!(stdout(cli(&dst).args(["ls", "--count", "big/"])), "400\n");
}

#[test]
fn bench_runs_with_no_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("blockstore")
        .unwrap()
        .env_remove("BLOCKSTORE_CONFIG")
        .current_dir(dir.path())
        .args([
            "--json",
            "bench",
            "--blocks",
            "8",
            "--block-size",
            "64K",
            "--workers",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["backend"], "filesystem");
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    for r in results {
        assert!(r["ops_per_sec"].as_f64().unwrap() > 0.0, "{r}");
        assert!(
            r["ratio_to_bare"].as_f64().is_some(),
            "filesystem rows have a baseline: {r}"
        );
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "bench leaves nothing behind"
    );
}

/// `ls` streams: `--limit` stops early, `--start-after` resumes, `--json` is one array;
/// `copy --start-after` copies only what comes after the key.
#[test]
fn listing_flags_and_a_resumed_copy() {
    let dir = tempfile::tempdir().unwrap();
    let src = fs_config(dir.path(), "src");
    for i in 0..30 {
        cli(&src)
            .args(["put", &format!("k/{i:02}")])
            .write_stdin(format!("block {i}"))
            .assert()
            .success();
    }
    assert_eq!(
        stdout(cli(&src).args(["ls", "--limit", "3"])),
        "k/00\nk/01\nk/02\n"
    );
    assert_eq!(
        stdout(cli(&src).args(["ls", "--start-after", "k/26"])),
        "k/27\nk/28\nk/29\n"
    );
    assert_eq!(
        stdout(cli(&src).args(["ls", "--count", "--start-after", "k/19"])),
        "10\n"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(
        cli(&src).args(["--json", "ls", "-l", "--limit", "2"]),
    ))
    .unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(2), "{json}");
    assert_eq!(json[1]["key"], "k/01");
    assert_eq!(json[1]["size"], 7);
    let empty: serde_json::Value =
        serde_json::from_str(&stdout(cli(&src).args(["--json", "ls", "nothing/"]))).unwrap();
    assert_eq!(empty, serde_json::json!([]));
    let dst = fs_config(dir.path(), "dst");
    let out = stdout(
        cli(&src)
            .args(["copy", "--to"])
            .arg(&dst)
            .args(["--start-after", "k/19"]),
    );
    assert!(out.contains("copied 10 ("), "{out}");
    assert_eq!(stdout(cli(&dst).args(["ls", "--limit", "1"])), "k/20\n");
}

/// `-v` shows each call's span on stderr (plain text when stderr is not a terminal);
/// without it a successful command says nothing there. `RUST_LOG` overrides.
#[test]
fn verbose_shows_the_spans() {
    let dir = tempfile::tempdir().unwrap();
    let config = fs_config(dir.path(), "store");
    let quiet = cli(&config)
        .args(["put", "v/chunk-0/block-0"])
        .write_stdin(b"12345".to_vec())
        .output()
        .unwrap();
    assert!(quiet.status.success());
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "");
    let out = cli(&config)
        .args(["-v", "get", "v/chunk-0/block-0"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        !stderr.contains('\x1b'),
        "no colour codes into a pipe: {stderr}"
    );
    let span = stderr
        .lines()
        .find(|l| l.contains("op=\"read\""))
        .unwrap_or_else(|| panic!("no read span in: {stderr}"));
    for field in [
        "backend=\"pool\"",
        "key=\"v/chunk-0/block-0\"",
        "bytes=5",
        "outcome=\"ok\"",
        "elapsed_us=",
    ] {
        assert!(span.contains(field), "{field} missing from {span}");
    }
    let missing = cli(&config)
        .env("RUST_LOG", "blockstore=debug")
        .args(["stat", "v/none"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("outcome=\"not_found\""),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

/// Through a proxy that throttles the first writes and fails health's first request,
/// `bench --json` counts the retries and throttles and `health --json` shows the errors
/// it met.
#[test]
fn bench_counts_retries_and_health_shows_recent_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = s3_support::server();
    let proxy = proxy::Proxy::start(&server.endpoint);
    let config = s3_config_at(dir.path(), &proxy.endpoint());
    let _cleanup = s3_support::Cleanup(s3_support::config());
    proxy.fail_next_method("PUT", 3, 503, "SlowDown");
    let json: serde_json::Value = serde_json::from_str(&stdout(cli(&config).args([
        "--json",
        "bench",
        "--blocks",
        "4",
        "--block-size",
        "4K",
        "--workers",
        "1",
    ])))
    .unwrap();
    assert_eq!(json["backend"], "s3");
    assert_eq!(json["retries"], 3, "{json}");
    assert_eq!(json["throttled"], 3, "{json}");
    assert!(json["attempts"].as_u64().unwrap() > 3, "{json}");

    // A retry is a warning on stderr, which `-q` silences.
    for (quiet, expect_warning) in [(false, true), (true, false)] {
        proxy.fail_next_method("PUT", 1, 503, "SlowDown");
        let mut cmd = cli(&config);
        if quiet {
            cmd.arg("-q");
        }
        let out = cmd
            .args(["put", "w/chunk-0/block-0"])
            .write_stdin(b"x".to_vec())
            .output()
            .unwrap();
        assert!(out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.contains("retrying"),
            expect_warning,
            "quiet {quiet}: {stderr}"
        );
    }

    // Every attempt of health's first request fails: health fails and says why.
    proxy.fail_next(4, 500, "InternalError");
    let out = cli(&config).args(["--json", "health"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["healthy"], false);
    let recent = json["recent_errors"].as_array().unwrap();
    assert!(!recent.is_empty(), "{json}");
    assert!(
        recent
            .iter()
            .all(|e| e["kind"].is_string() && e["message"].is_string()),
        "{json}"
    );
    assert!(
        recent[0]["message"].as_str().unwrap().contains("500"),
        "{json}"
    );
}

/// `health` names the endpoint, the bucket and where the keys come from, never a secret.
#[test]
fn health_names_the_credential_source() {
    let dir = tempfile::tempdir().unwrap();
    let config = s3_config(dir.path());
    let c = s3_support::config();
    let text = stdout(cli(&config).args(["health"]));
    assert!(text.starts_with("healthy"), "{text}");
    assert!(
        text.contains(&format!(
            "credentials: static keys from the configuration (access key {})",
            c.access_key_id
        )),
        "{text}"
    );
    assert!(text.contains(&format!("bucket: {}", c.bucket)), "{text}");
    assert!(!text.contains(&c.secret_access_key), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(cli(&config).args(["--json", "health"]))).unwrap();
    assert!(
        json["about"]["credentials"]
            .as_str()
            .unwrap()
            .contains("static keys"),
        "{json}"
    );
}
