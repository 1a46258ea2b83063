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
    let health = stdout(cli(&config).args(["health"]));
    assert!(health.starts_with("healthy\n"), "{health}");
    assert!(health.contains("checksums: crc32c"), "{health}");

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
        "deleted 2 blocks under \"export/f/\"\n"
    );
    cli(&config)
        .args(["put", "x"])
        .write_stdin("1")
        .assert()
        .success();
    assert_eq!(
        stdout(cli(&config).args(["rm", "--prefix", "", "--all"])),
        "deleted 1 block (the whole store)\n"
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

    // Throttling is a warning on stderr (one summary per ten seconds), which `-q`
    // silences.
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
            stderr.contains("WARN") && stderr.contains("S3 is throttling the store"),
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

// -------------------------------------------------------------------------------------
// The CLI as a newcomer meets it (issue 19), one test per item.

/// The binary's path, for commands run outside assert_cmd.
fn binary() -> PathBuf {
    assert_cmd::cargo::cargo_bin("blockstore")
}

fn run_text(cmd: &mut Command) -> (Option<i32>, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Item 1: SIGINT and SIGTERM stop `bench`, which removes what it wrote (blocks and bare
/// files) and says so; its scratch files live inside the store's internal area, never
/// beside base_path; with a configuration it makes no temporary folder.
#[test]
fn an_interrupted_bench_removes_what_it_wrote() {
    for signal in [libc_sigterm(), libc_sigint()] {
        let dir = tempfile::tempdir().unwrap();
        let config = fs_config(dir.path(), "store");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let child = std::process::Command::new(binary())
            .env_remove("BLOCKSTORE_CONFIG")
            .env("TMPDIR", &tmp)
            .arg("--config")
            .arg(&config)
            .args([
                "bench",
                "--blocks",
                "256",
                "--block-size",
                "1M",
                "--workers",
                "2",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until it has written blocks.
        let store = dir.path().join("store");
        let started = std::time::Instant::now();
        while !store.read_dir().is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("bench-")))
        }) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "bench wrote nothing"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        unsafe_kill(child.id(), signal);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{stderr}");
        assert!(stderr.contains("interrupted; removed the"), "{stderr}");
        // Nothing left: no blocks, no scratch files inside or beside the store, no
        // temporary folder.
        let left: Vec<String> = walk(&store)
            .into_iter()
            .filter(|p| !p.ends_with(".lock") && !p.contains(".blockstore/w-"))
            .collect();
        assert_eq!(left, [".blockstore"], "left in the store");
        let beside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(beside.iter().all(|n| !n.contains("bench")), "{beside:?}");
        assert_eq!(
            std::fs::read_dir(&tmp).unwrap().count(),
            0,
            "a config means no temp folder"
        );
    }
}

/// Every path under `root`, relative.
fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn libc_sigterm() -> i32 {
    15
}
fn libc_sigint() -> i32 {
    2
}

fn unsafe_kill(pid: u32, signal: i32) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Item 1: `--blocks` bounds the whole run: the cheap phases run 64 operations per block.
#[test]
fn bench_blocks_bound_every_phase() {
    let dir = tempfile::tempdir().unwrap();
    let config = fs_config(dir.path(), "store");
    let json: serde_json::Value = serde_json::from_str(&stdout(cli(&config).args([
        "--json",
        "bench",
        "--blocks",
        "2",
        "--block-size",
        "4K",
    ])))
    .unwrap();
    let ops: Vec<u64> = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ops"].as_u64().unwrap())
        .collect();
    assert_eq!(ops, [2, 2, 128, 128, 200, 2], "{json}");
}

/// Item 3: Errors name what is wrong: the endpoint, the bucket, the path (absolute, for a
/// relative base_path), the limit on a timeout; configuration mistakes found at first
/// use are exit 2.
#[test]
fn errors_name_the_endpoint_bucket_path_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = |name: &str, lines: &str| {
        let c = s3_support::config();
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[block_store]\ntype = \"s3\"\n[block_store.s3]\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n{lines}\n",
                c.access_key_id, c.secret_access_key
            ),
        )
        .unwrap();
        path
    };
    // Nothing listens on port 1.
    let (code, _, err) = run_text(cli(&s3("refused.toml", "bucket = \"bkt\"\nendpoint = \"http://127.0.0.1:1\"\nforce_path_style = true\nmax_retries = 0")).arg("health"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("http://127.0.0.1:1"), "{err}");
    // A bucket that does not exist: named on stderr.
    let endpoint = s3_support::server().endpoint.clone();
    let (code, _, err) = run_text(cli(&s3("nobucket.toml", &format!("bucket = \"no-such-bucket-here\"\nendpoint = \"{endpoint}\"\nforce_path_style = true"))).arg("health"));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("\"no-such-bucket-here\" does not exist"),
        "{err}"
    );
    // Virtual-hosted with an IP endpoint: exit 2, saying why.
    let (code, _, err) = run_text(
        cli(&s3(
            "ip.toml",
            "bucket = \"bkt\"\nendpoint = \"http://127.0.0.1:9\"",
        ))
        .arg("health"),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("IP address") && err.contains("force_path_style"),
        "{err}"
    );
    // https to a server that speaks plain HTTP: exit 2, saying so.
    let https = endpoint.replace("http://", "https://");
    let (code, _, err) = run_text(
        cli(&s3(
            "tls.toml",
            &format!("bucket = \"bkt\"\nendpoint = \"{https}\"\nforce_path_style = true"),
        ))
        .arg("health"),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("does not speak TLS"), "{err}");
    // A server that never answers: the limit is named.
    let proxy = proxy::Proxy::start(&endpoint);
    proxy.blackhole(true);
    let (code, _, err) = run_text(cli(&s3("slow.toml", &format!("bucket = \"bkt\"\nendpoint = \"{}\"\nforce_path_style = true\nrequest_timeout_secs = 1\noperation_deadline_secs = 2\nmax_retries = 0", proxy.endpoint()))).arg("health"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("request_timeout_secs = 1"), "{err}");
    // A relative base_path that is a file: the absolute path is named, exit 2.
    std::fs::write(dir.path().join("plain-file"), "x").unwrap();
    let rel = dir.path().join("rel.toml");
    std::fs::write(&rel, "[block_store]\ntype = \"filesystem\"\n[block_store.filesystem]\nbase_path = \"plain-file\"\n").unwrap();
    let (code, _, err) = run_text(
        cli(&rel)
            .current_dir(dir.path())
            .args(["put", "k"])
            .write_stdin("x"),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&dir.path().join("plain-file").display().to_string()),
        "{err}"
    );
}

/// Item 4: `rm KEY…` says how many existed and were removed.
#[test]
fn rm_tells_how_many_existed() {
    let dir = tempfile::tempdir().unwrap();
    let config = fs_config(dir.path(), "store");
    stdout(cli(&config).args(["put", "a/1"]).write_stdin("x"));
    let text = stdout(cli(&config).args(["rm", "a/1", "a/2", "a/3"]));
    assert_eq!(text.trim(), "deleted 1 block of 3 (2 did not exist)");
    let text = stdout(cli(&config).args(["rm", "a/2", "a/3"]));
    assert_eq!(text.trim(), "deleted 0 blocks of 2 (2 did not exist)");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(cli(&config).args(["--json", "rm", "a/9"]))).unwrap();
    assert_eq!(json["absent"], serde_json::json!(["a/9"]));
}

/// Item 5: `put` of a file larger than a block says its real size.
#[test]
fn put_of_a_large_file_says_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let config = fs_config(dir.path(), "store");
    let big = dir.path().join("big");
    std::fs::write(&big, vec![0u8; 5 << 20]).unwrap();
    let (code, _, err) = run_text(cli(&config).args(["put", "k"]).arg(&big));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is 5242880 bytes (5.0 MiB)"), "{err}");
    let (code, _, err) = run_text(
        cli(&config)
            .args(["put", "k"])
            .write_stdin(vec![0u8; 5 << 20]),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("standard input holds more than 4194304 bytes"),
        "{err}"
    );
}

/// Item 6: The memory backend warns that nothing is kept (and `-q` keeps it quiet).
#[test]
fn the_memory_store_warns_that_it_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("memory.toml");
    std::fs::write(&config, "[block_store]\ntype = \"memory\"\n").unwrap();
    let (code, _, err) = run_text(cli(&config).args(["put", "k"]).write_stdin("x"));
    assert_eq!(code, Some(0));
    assert!(
        err.contains("the memory store lives only as long as this command"),
        "{err}"
    );
    let (_, _, err) = run_text(cli(&config).args(["-q", "put", "k"]).write_stdin("x"));
    assert_eq!(err, "");
}

/// Item 7: Modes as strings; a decimal mode gets a hint.
#[test]
fn modes_as_strings_and_a_hint_for_decimal() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("modes.toml");
    std::fs::write(&config, format!("[block_store]\ntype = \"filesystem\"\n[block_store.filesystem]\nbase_path = \"{}\"\ndir_mode = \"0750\"\nfile_mode = \"0640\"\n", dir.path().join("s").display())).unwrap();
    stdout(cli(&config).args(["put", "a/b"]).write_stdin("x"));
    let mode = |p: &str| {
        std::fs::metadata(dir.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!((mode("s/a"), mode("s/a/b")), (0o750, 0o640));
    std::fs::write(&config, "[block_store]\ntype = \"filesystem\"\n[block_store.filesystem]\nbase_path = \"x\"\ndir_mode = 755\n").unwrap();
    let (code, _, err) = run_text(cli(&config).args(["put", "a/b"]).write_stdin("x"));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("755 was read as a decimal number") && err.contains("0o755"),
        "{err}"
    );
}

/// Item 8: A bad key is shown escaped, cut short, after the rule it broke.
#[test]
fn a_bad_key_is_shown_escaped_and_short() {
    let dir = tempfile::tempdir().unwrap();
    let config = fs_config(dir.path(), "store");
    let key = format!("a\u{7}b/{}", "k".repeat(300));
    let (code, _, err) = run_text(cli(&config).args(["put", &key]).write_stdin("x"));
    assert_eq!(code, Some(2), "{err}");
    let line = err.trim();
    assert!(
        line.starts_with("blockstore: put: invalid key: has a control character"),
        "{line}"
    );
    assert!(line.contains("a\\u{7}b/kkk"), "{line}");
    assert!(!line.contains('\u{7}'));
    assert!(line.len() < 250, "{} bytes: {line}", line.len());
}

/// Item 9: `get … | head` ends quietly with exit 0 when the reader goes away.
#[test]
fn get_into_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let config = fs_config(dir.path(), "store");
    stdout(
        cli(&config)
            .args(["put", "big"])
            .write_stdin(vec![7u8; 4 << 20]),
    );
    let mut child = std::process::Command::new(binary())
        .env_remove("BLOCKSTORE_CONFIG")
        .arg("--config")
        .arg(&config)
        .args(["get", "big"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 10];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// Item 10: `put` on a terminal says it reads standard input; a missing file is exit 2; the
/// `rm` usage shows the `--prefix` form.
#[test]
fn put_and_rm_guide_a_newcomer() {
    let dir = tempfile::tempdir().unwrap();
    let config = fs_config(dir.path(), "store");
    // A pseudo-terminal on standard input (util-linux's script), ended at once.
    let out = std::process::Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!(
            "{} --config {} put k </dev/tty & sleep 1; kill $!",
            binary().display(),
            config.display()
        ))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("reading the block for k from standard input"),
        "{all}"
    );
    let (code, _, err) = run_text(cli(&config).args(["put", "k", "/nonexistent/file"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent/file"), "{err}");
    let help = stdout(cli(&config).args(["rm", "--help"]));
    assert!(help.contains("blockstore rm --prefix PREFIX"), "{help}");
}

/// `scrub` finds exactly the blocks damaged on disk (a flipped byte, a cut, an extra
/// byte), counts the ones written without checksums apart, resumes with
/// `--start-after`, and exits 1 while any block is corrupt.
#[test]
fn scrub_finds_exactly_the_damaged_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let config = fs_config(dir.path(), "store");
    let block: Vec<u8> = (0..200_000u32).map(|i| (i * 13 + i / 300) as u8).collect();
    std::fs::write(dir.path().join("block"), &block).unwrap();
    for i in 0..10 {
        cli(&config)
            .args(["put", &format!("s/{i}/chunk-0/block-0")])
            .arg(dir.path().join("block"))
            .assert()
            .success();
    }
    // Two blocks written by a store with checksums off.
    let off = dir.path().join("off.toml");
    std::fs::write(
        &off,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("[pool]", "checksums = \"off\"\n[pool]"),
    )
    .unwrap();
    for i in 10..12 {
        cli(&off)
            .args(["put", &format!("s/{i}/chunk-0/block-0")])
            .arg(dir.path().join("block"))
            .assert()
            .success();
    }
    let clean: serde_json::Value =
        serde_json::from_str(&stdout(cli(&config).args(["--json", "scrub", "s/"]))).unwrap();
    assert_eq!(clean["verified"], 10, "{clean}");
    assert_eq!(clean["unverified"], 2, "{clean}");
    assert_eq!(clean["corrupt"], 0, "{clean}");

    let path = |i: u32| dir.path().join(format!("store/s/{i}/chunk-0/block-0"));
    let mut flipped = block.clone();
    flipped[150_000] ^= 4;
    std::fs::write(path(3), &flipped).unwrap();
    std::fs::write(path(5), &block[..100_000]).unwrap();
    let mut longer = block.clone();
    longer.push(0);
    std::fs::write(path(8), &longer).unwrap();

    let out = cli(&config)
        .args(["--json", "scrub", "s/"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found["corrupt"], 3, "{found}");
    assert_eq!(
        found["corrupt_keys"],
        serde_json::json!([
            "s/3/chunk-0/block-0",
            "s/5/chunk-0/block-0",
            "s/8/chunk-0/block-0"
        ])
    );
    assert_eq!(found["verified"], 7, "{found}");
    assert_eq!(found["resume_after"], "s/9/chunk-0/block-0");
    // The bytes counted are those of the blocks checked (the shortened one is 100,000).
    assert_eq!(found["bytes"], 11 * 200_000 + 100_000 + 1, "{found}");

    // Text: one line per corrupt block, naming the chunk; the summary; exit 1.
    let out = cli(&config).args(["scrub"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("corrupt s/3/chunk-0/block-0: chunk 18 (bytes 147456..155648)"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("corrupt ")).count(),
        3,
        "{text}"
    );
    assert!(
        text.contains("7 verified, 3 corrupt, 2 without checksums"),
        "{text}"
    );
    // Resuming past the damage finds none; a read of a damaged block fails.
    let rest: serde_json::Value = serde_json::from_str(&stdout(cli(&config).args([
        "--json",
        "scrub",
        "s/",
        "--start-after",
        "s/8/chunk-0/block-0",
    ])))
    .unwrap();
    assert_eq!(
        (rest["verified"].as_u64(), rest["corrupt"].as_u64()),
        (Some(1), Some(0)),
        "{rest}"
    );
    cli(&config)
        .args(["get", "s/3/chunk-0/block-0"])
        .assert()
        .code(1)
        .stdout(predicates::str::is_empty())
        .stderr(predicates::str::contains("block is corrupt"));
    // A file that cannot be read as a block (longer than any) is counted apart, and
    // its bytes are not counted as scrubbed.
    std::fs::create_dir_all(dir.path().join("store/t")).unwrap();
    std::fs::write(dir.path().join("store/t/big"), vec![1u8; 5 << 20]).unwrap();
    cli(&config)
        .args(["put", "t/ok"])
        .arg(dir.path().join("block"))
        .assert()
        .success();
    let out = cli(&config)
        .args(["--json", "scrub", "t/"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            found["verified"].as_u64(),
            found["failed"].as_u64(),
            found["bytes"].as_u64()
        ),
        (Some(1), Some(1), Some(200_000)),
        "{found}"
    );
    let text =
        String::from_utf8_lossy(&cli(&config).args(["scrub", "t/"]).output().unwrap().stdout)
            .into_owned();
    // Every block listed is counted, those that could not be read among them.
    assert!(
        text.contains("scrubbed 2 blocks (195.3 KiB checked)"),
        "{text}"
    );
    assert!(text.contains("1 could not be read"), "{text}");
}

/// `copy` from a good store repairs a destination block that fails its checksums (it
/// differs, so it is copied over), and names which store a corrupt source block is in.
#[test]
fn copy_repairs_a_corrupt_destination_block() {
    let dir = tempfile::tempdir().unwrap();
    let source = fs_config(dir.path(), "good");
    let dest = fs_config(dir.path(), "damaged");
    let block: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    std::fs::write(dir.path().join("block"), &block).unwrap();
    cli(&source)
        .args(["put", "k/chunk-0/block-0"])
        .arg(dir.path().join("block"))
        .assert()
        .success();
    cli(&source)
        .arg("copy")
        .arg("--to")
        .arg(&dest)
        .assert()
        .success();
    let copy = dir.path().join("damaged/k/chunk-0/block-0");
    let mut damaged = std::fs::read(&copy).unwrap();
    damaged[50_000] ^= 1;
    std::fs::write(&copy, &damaged).unwrap();
    cli(&dest).args(["scrub"]).assert().code(1);
    let out = stdout(cli(&source).args(["copy", "--verify", "--to"]).arg(&dest));
    assert!(out.contains("copied 1"), "{out}");
    cli(&dest).args(["scrub"]).assert().success();
    // A corrupt source block is named as the source's.
    let original = dir.path().join("good/k/chunk-0/block-0");
    std::fs::write(&original, &damaged).unwrap();
    cli(&source)
        .arg("copy")
        .arg("--to")
        .arg(&dest)
        .assert()
        .code(1)
        .stderr(predicates::str::contains("in the source store"));
}

/// `scrub | head -1` ends quietly (exit 0, no panic) when the reader goes away.
#[test]
fn scrub_into_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let config = fs_config(dir.path(), "store");
    std::fs::write(dir.path().join("block"), vec![5u8; 20_000]).unwrap();
    for i in 0..200 {
        cli(&config)
            .args(["put", &format!("p/{i:03}")])
            .arg(dir.path().join("block"))
            .assert()
            .success();
        std::fs::write(
            dir.path().join(format!("store/p/{i:03}")),
            vec![6u8; 20_000],
        )
        .unwrap();
    }
    let mut child = std::process::Command::new(binary())
        .env_remove("BLOCKSTORE_CONFIG")
        .arg("--config")
        .arg(&config)
        .arg("scrub")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, then go away.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "{:?}: {stderr}",
        out.status
    );
}

/// Ctrl-C or SIGTERM stops a scrub: the blocks in flight finish, the summary and the
/// key to resume after are printed, exit 130; resuming there checks the rest.
#[test]
fn an_interrupted_scrub_says_where_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let server = s3_support::server();
    let proxy = proxy::Proxy::start(&server.endpoint);
    let config = s3_config_at(dir.path(), &proxy.endpoint());
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[pool]\nworkers = 1\nqueue_capacity = 1\n");
    std::fs::write(&config, text).unwrap();
    let _cleanup = s3_support::Cleanup(s3_support::config_from_file(&config));
    std::fs::write(dir.path().join("block"), b"scrub me").unwrap();
    for i in 0..60 {
        cli(&config)
            .args(["put", &format!("i/{i:02}")])
            .arg(dir.path().join("block"))
            .assert()
            .success();
    }
    // Each reply 100 ms late: one worker needs 6 s for all 60.
    proxy.delay_each_response(Some(Duration::from_millis(100)));
    let child = std::process::Command::new(binary())
        .env_remove("BLOCKSTORE_CONFIG")
        .arg("--config")
        .arg(&config)
        .args(["--json", "scrub", "i/"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    unsafe_kill(child.id(), libc_sigint());
    let out = child.wait_with_output().unwrap();
    proxy.delay_each_response(None);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["interrupted"], true);
    let done = json["verified"].as_u64().unwrap();
    assert!((1..60).contains(&done), "{json}");
    let after = json["resume_after"].as_str().unwrap().to_owned();
    assert_eq!(after, format!("i/{:02}", done - 1), "{json}");
    let rest: serde_json::Value = serde_json::from_str(&stdout(cli(&config).args([
        "--json",
        "scrub",
        "i/",
        "--start-after",
        &after,
    ])))
    .unwrap();
    assert_eq!(rest["verified"].as_u64().unwrap() + done, 60, "{rest}");
}
