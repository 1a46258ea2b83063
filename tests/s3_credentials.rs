//! Credential sources as production runs them, on loopback: IMDSv2 and container
//! credentials from a responder that follows AWS's protocols (and moto's own instance
//! metadata), web identity and assumed roles through moto's STS, profiles and
//! `credential_process` from shared files in a temporary HOME. The fault proxy in front
//! of the S3 server records the access key id of every request's `Authorization`, which
//! proves which keys signed it.
//!
//! The sources read `AWS_*` variables, which belong to the whole process, so each
//! scenario runs in a child process of this test binary with its own environment; the
//! servers, the proxy and the responder stay in the parent.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use blockstore::{BlockStore, CredentialSource, ErrorKind, S3Config, S3Store};
use support::metadata::Responder;
use support::proxy::{Proxy, Seen};
use support::s3::{config, server, Cleanup};

/// The access key id a request was signed with.
fn signer(s: &Seen) -> Option<String> {
    let auth = s.header("authorization")?;
    let start = auth.find("Credential=")? + "Credential=".len();
    Some(auth[start..].split('/').next()?.to_owned())
}

/// `x-amz-date` of a request, as a time.
fn signed_at(s: &Seen) -> SystemTime {
    let d = s.header("x-amz-date").expect("x-amz-date");
    let n = |r: std::ops::Range<usize>| d[r].parse::<u64>().unwrap();
    let days = days_from_civil(n(0..4) as i64, n(4..6) as i64, n(6..8) as i64);
    SystemTime::UNIX_EPOCH
        + Duration::from_secs(days as u64 * 86_400 + n(9..11) * 3600 + n(11..13) * 60 + n(13..15))
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

/// Runs this test's child role in a child process with `env` (and no `AWS_*` of
/// ours), giving it the S3 server and `proxy`.
fn child(test: &str, proxy: &Proxy, home: &Path, env: &[(&str, String)]) -> Output {
    let mut cmd = support::child_command(test, test);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home)
        .env("TEST_S3_PROXY", proxy.endpoint())
        .env("BLOCKSTORE_S3_ENDPOINT", &server().endpoint)
        .env("BLOCKSTORE_S3_SERVER", server().flavour)
        .env("BLOCKSTORE_S3_ACCESS_KEY", &server().access_key)
        .env("BLOCKSTORE_S3_SECRET_KEY", &server().secret_key);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "child failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// In a child: a store on the proxy whose keys come from `source` (no static keys).
fn child_store(source: CredentialSource, tweak: impl FnOnce(&mut S3Config)) -> (S3Store, Cleanup) {
    let mut c = config();
    let cleanup = Cleanup(c.clone());
    c.endpoint = std::env::var("TEST_S3_PROXY").unwrap();
    c.access_key_id.clear();
    c.secret_access_key.clear();
    c.credentials = source;
    tweak(&mut c);
    (S3Store::open(c).expect("open S3Store"), cleanup)
}

fn role() -> Option<String> {
    support::child_role()
}

/// The keys these sources give are the responder's or moto STS's own, which only a
/// server that takes any keys (moto) accepts: elsewhere the scenarios are skipped,
/// saying so.
fn skipped_off_moto(test: &str) -> bool {
    let off = server().flavour != "moto";
    if off {
        eprintln!("!!! {test}: NOT RUN: it needs moto, which accepts any keys");
    }
    off
}

/// The store's calls on the proxy, signed: the access key ids used.
fn signers(seen: &[Seen]) -> BTreeSet<String> {
    seen.iter().filter_map(signer).collect()
}

#[test]
fn imds_v2_keys_sign_every_request_and_are_refreshed_for_all_threads() {
    const TEST: &str = "imds_v2_keys_sign_every_request_and_are_refreshed_for_all_threads";
    if role().as_deref() == Some(TEST) {
        let (store, _cleanup) = child_store(CredentialSource::Imds, |_| {});
        let errors = AtomicUsize::new(0);
        let started = Instant::now();
        std::thread::scope(|s| {
            for t in 0..16 {
                let (store, errors) = (&store, &errors);
                s.spawn(move || {
                    let mut i = 0;
                    while started.elapsed() < Duration::from_secs(7) {
                        let key = format!("t{t}/{}", i % 4);
                        if store.write_block(&key, b"x").is_err() || store.read_block(&key).is_err()
                        {
                            errors.fetch_add(1, Ordering::SeqCst);
                        }
                        i += 1;
                    }
                });
            }
        });
        assert_eq!(errors.load(Ordering::SeqCst), 0);
        let report = store.report();
        let about = report.about("credentials").unwrap();
        assert!(
            about.contains("EC2 instance metadata at http://127.0.0.1"),
            "{about}"
        );
        return;
    }
    if skipped_off_moto(TEST) {
        return;
    }
    let responder = Responder::start(Duration::from_secs(2), "unused");
    let proxy = Proxy::start(&server().endpoint);
    let home = tempfile::tempdir().unwrap();
    succeeded(&child(
        TEST,
        &proxy,
        home.path(),
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", responder.endpoint())],
    ));
    let issued = responder.issued();
    let seen = proxy.take_seen();
    let used = signers(&seen);
    // Seven seconds of keys that live two: refreshed a few times, once each time for
    // all sixteen threads (not once per thread).
    assert!(
        (3..=12).contains(&issued.len()),
        "{} keys issued",
        issued.len()
    );
    assert!(used.len() >= 3, "{used:?}");
    for s in &seen {
        let key = signer(s).expect("every request signed");
        let given = issued
            .iter()
            .find(|i| i.access_key_id == key)
            .unwrap_or_else(|| panic!("{key} was not issued by the responder"));
        // x-amz-date has whole seconds.
        assert!(signed_at(s) <= given.expires, "{key} used after it expired");
        assert!(s.header("x-amz-security-token").is_some());
    }
}

#[test]
fn a_failing_refresh_keeps_the_keys_until_they_expire_then_names_the_source() {
    const TEST: &str = "a_failing_refresh_keeps_the_keys_until_they_expire_then_names_the_source";
    if role().as_deref() == Some(TEST) {
        let (store, _cleanup) = child_store(CredentialSource::Imds, |_| {});
        store.write_block("k", b"x").unwrap();
        // The parent makes the responder fail now; these keys live 4 s.
        println!("fetched");
        std::fs::write(std::env::var("TEST_SIGNAL").unwrap(), "fetched").unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        store.read_block("k").expect("still within the keys' life");
        std::thread::sleep(Duration::from_millis(3500));
        let e = store.read_block("k").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        let text = e.to_string();
        assert!(
            text.contains("EC2 instance metadata at http://127.0.0.1"),
            "{text}"
        );
        assert!(
            text.contains("expired") && text.contains("HTTP 500"),
            "{text}"
        );
        assert!(store.report().about("credentials_error").is_some());
        return;
    }
    if skipped_off_moto(TEST) {
        return;
    }
    let responder = Responder::start(Duration::from_secs(4), "unused");
    let proxy = Proxy::start(&server().endpoint);
    let home = tempfile::tempdir().unwrap();
    let signal = home.path().join("signal");
    let watcher = {
        let signal = signal.clone();
        let failing = std::sync::Arc::new(responder);
        let r = failing.clone();
        let t = std::thread::spawn(move || {
            while !signal.exists() {
                std::thread::sleep(Duration::from_millis(10));
            }
            r.fail(true);
        });
        (t, failing)
    };
    succeeded(&child(
        TEST,
        &proxy,
        home.path(),
        &[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", watcher.1.endpoint()),
            ("TEST_SIGNAL", signal.display().to_string()),
        ],
    ));
    watcher.0.join().unwrap();
}

/// Keys that arrive already expired (a metadata service with a stale answer, a clock
/// that is off) are used for a while, not fetched again for every request.
#[test]
fn keys_that_arrive_expired_are_not_fetched_for_every_request() {
    const TEST: &str = "keys_that_arrive_expired_are_not_fetched_for_every_request";
    if role().as_deref() == Some(TEST) {
        let (store, _cleanup) = child_store(CredentialSource::Imds, |_| {});
        std::thread::scope(|s| {
            for t in 0..8 {
                let store = &store;
                s.spawn(move || {
                    for i in 0..10 {
                        store.write_block(&format!("t{t}/{i}"), b"x").unwrap();
                    }
                });
            }
        });
        return;
    }
    if skipped_off_moto(TEST) {
        return;
    }
    let responder = Responder::start(Duration::from_secs(3600), "unused");
    responder.give_stale_keys(true);
    let proxy = Proxy::start(&server().endpoint);
    let home = tempfile::tempdir().unwrap();
    succeeded(&child(
        TEST,
        &proxy,
        home.path(),
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", responder.endpoint())],
    ));
    assert_eq!(responder.issued().len(), 1, "80 writes, one fetch");
    assert_eq!(signers(&proxy.take_seen()).len(), 1);
}

#[test]
fn an_imds_that_never_answers_fails_within_the_time_limit() {
    const TEST: &str = "an_imds_that_never_answers_fails_within_the_time_limit";
    if role().as_deref() == Some(TEST) {
        let (store, _cleanup) =
            child_store(CredentialSource::Chain, |c| c.request_timeout_secs = 2);
        let started = Instant::now();
        let e = store.health_check().unwrap_err();
        // The metadata sources have six seconds, all their requests together (about
        // three here when the machine is quiet); a store that waited for the silent
        // service would take its 60. The bound leaves room for a loaded CI machine,
        // where one run took 8.6 s.
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
        // No keys is PermissionDenied; retryable, since the source may answer later.
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        assert!(e.is_retryable());
        // For five seconds the store does not ask again: the same error at once.
        let started = Instant::now();
        assert_eq!(
            store.health_check().unwrap_err().kind(),
            ErrorKind::PermissionDenied
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert!(
            e.to_string()
                .contains(&std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap()),
            "{e}"
        );
        return;
    }
    if skipped_off_moto(TEST) {
        return;
    }
    let responder = Responder::start(Duration::from_secs(60), "unused");
    responder.go_silent(true);
    let proxy = Proxy::start(&server().endpoint);
    let home = tempfile::tempdir().unwrap();
    succeeded(&child(
        TEST,
        &proxy,
        home.path(),
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", responder.endpoint())],
    ));
    assert!(proxy.take_seen().is_empty(), "nothing sent unsigned");
}

#[test]
fn moto_instance_metadata_gives_its_keys() {
    const TEST: &str = "moto_instance_metadata_gives_its_keys";
    if role().as_deref() == Some(TEST) {
        let (store, _cleanup) = child_store(CredentialSource::Imds, |_| {});
        store.write_block("k", b"x").unwrap();
        return;
    }
    if skipped_off_moto(TEST) {
        return;
    }
    let proxy = Proxy::start(&server().endpoint);
    let home = tempfile::tempdir().unwrap();
    succeeded(&child(
        TEST,
        &proxy,
        home.path(),
        &[(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            server().endpoint.clone(),
        )],
    ));
    // moto's instance role keys.
    assert_eq!(
        signers(&proxy.take_seen()),
        BTreeSet::from(["test-key".to_owned()])
    );
}

#[test]
fn container_credentials_with_a_rotating_token_file() {
    const TEST: &str = "container_credentials_with_a_rotating_token_file";
    if role().as_deref() == Some(TEST) {
        let (store, _cleanup) = child_store(CredentialSource::Chain, |_| {});
        store.write_block("k", b"one").unwrap();
        // The platform rotates the token; keys live 1 s, so the next call refreshes.
        let file = std::env::var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").unwrap();
        std::fs::write(&file, "pod-token-2\n").unwrap();
        std::fs::write(std::env::var("TEST_SIGNAL").unwrap(), "rotated").unwrap();
        std::thread::sleep(Duration::from_millis(1200));
        assert_eq!(store.read_block("k").unwrap(), b"one");
        let about = store.report().about("credentials").unwrap().to_owned();
        assert!(
            about.contains("container credentials at http://127.0.0.1"),
            "{about}"
        );
        return;
    }
    if skipped_off_moto(TEST) {
        return;
    }
    let responder = std::sync::Arc::new(Responder::start(Duration::from_secs(1), "pod-token-1"));
    let proxy = Proxy::start(&server().endpoint);
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("token");
    std::fs::write(&token_file, "pod-token-1\n").unwrap();
    let signal = home.path().join("signal");
    let r = responder.clone();
    let s = signal.clone();
    let watcher = std::thread::spawn(move || {
        while !s.exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        r.expect_container_token("pod-token-2");
    });
    succeeded(&child(
        TEST,
        &proxy,
        home.path(),
        &[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                responder.container_uri(),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token_file.display().to_string(),
            ),
            ("TEST_SIGNAL", signal.display().to_string()),
        ],
    ));
    watcher.join().unwrap();
    let issued: BTreeSet<String> = responder
        .issued()
        .into_iter()
        .map(|i| i.access_key_id)
        .collect();
    let used = signers(&proxy.take_seen());
    assert_eq!(
        used.len(),
        2,
        "keys before and after the rotation: {used:?}"
    );
    assert!(used.is_subset(&issued), "{used:?} not all from {issued:?}");
}

#[test]
fn web_identity_through_sts() {
    const TEST: &str = "web_identity_through_sts";
    if role().as_deref() == Some(TEST) {
        let (store, _cleanup) = child_store(CredentialSource::WebIdentity, |_| {});
        store.write_block("k", b"x").unwrap();
        assert!(store
            .report()
            .about("credentials")
            .unwrap()
            .contains("arn:aws:iam::123456789012:role/irsa"));
        // A token file that cannot be read: a credential error naming it.
        std::env::set_var("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/irsa-token");
        let (store, _cleanup) = child_store(CredentialSource::WebIdentity, |_| {});
        let e = store.write_block("k", b"x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        assert!(e.to_string().contains("/nonexistent/irsa-token"), "{e}");
        return;
    }
    if skipped_off_moto(TEST) {
        return;
    }
    let proxy = Proxy::start(&server().endpoint);
    let sts = Proxy::start(&server().endpoint);
    let home = tempfile::tempdir().unwrap();
    let token = home.path().join("token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.irsa-test-token.sig\n").unwrap();
    succeeded(&child(
        TEST,
        &proxy,
        home.path(),
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/irsa".into()),
            ("AWS_ROLE_SESSION_NAME", "blockstore-test".into()),
            ("AWS_ENDPOINT_URL_STS", sts.endpoint()),
        ],
    ));
    let calls = sts.take_seen();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].method, "POST");
    assert!(
        calls[0].header("authorization").is_none(),
        "web identity is unsigned"
    );
    let used = signers(&proxy.take_seen());
    assert_eq!(used.len(), 1, "{used:?}");
    assert!(
        used.iter().all(|k| k.starts_with("ASIA")),
        "STS keys: {used:?}"
    );
}

#[test]
fn profiles_static_assumed_and_process_keys() {
    const TEST: &str = "profiles_static_assumed_and_process_keys";
    if role().as_deref() == Some(TEST) {
        for (profile, expect) in [("plain", "AKIDPLAINPROFILE"), ("tool", "AKIDFROMPROCESS")] {
            let (store, _cleanup) =
                child_store(CredentialSource::Profile, |c| c.profile = profile.into());
            store.write_block("k", b"x").unwrap();
            println!("{profile}={expect}");
        }
        let (store, _cleanup) = child_store(CredentialSource::Chain, |_| {});
        store.write_block("k", b"x").unwrap();
        let about = store.report().about("credentials").unwrap().to_owned();
        assert!(
            about.contains("profile \"ops\"")
                && about.contains("arn:aws:iam::123456789012:role/ops"),
            "{about}"
        );
        // A profile that is not there, and a malformed file: Config errors at open.
        let mut c = config();
        c.access_key_id.clear();
        c.secret_access_key.clear();
        c.profile = "nope".into();
        let e = S3Store::open(c.clone()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(e.to_string().contains("no profile \"nope\""), "{e}");
        assert!(e.to_string().contains(".aws/credentials"), "{e}");
        std::fs::write(
            std::env::var("AWS_SHARED_CREDENTIALS_FILE").unwrap(),
            "[broken\n",
        )
        .unwrap();
        let e = S3Store::open(c).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(e.to_string().contains("credentials"), "{e}");
        return;
    }
    if skipped_off_moto(TEST) {
        return;
    }
    let proxy = Proxy::start(&server().endpoint);
    let sts = Proxy::start(&server().endpoint);
    let home = tempfile::tempdir().unwrap();
    let aws = home.path().join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("credentials"),
        "[base]\naws_access_key_id = AKIDBASEPROFILE\naws_secret_access_key = base-secret\n\n\
         [plain]\naws_access_key_id = AKIDPLAINPROFILE\naws_secret_access_key = plain-secret\n",
    )
    .unwrap();
    std::fs::write(
        aws.join("config"),
        "[profile ops]\nrole_arn = arn:aws:iam::123456789012:role/ops\nsource_profile = base\n\n\
         [profile tool]\ncredential_process = echo '{\"Version\": 1, \"AccessKeyId\": \"AKIDFROMPROCESS\", \"SecretAccessKey\": \"p\"}'\n",
    )
    .unwrap();
    succeeded(&child(
        TEST,
        &proxy,
        home.path(),
        &[
            ("AWS_PROFILE", "ops".into()),
            ("AWS_ENDPOINT_URL_STS", sts.endpoint()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                aws.join("credentials").display().to_string(),
            ),
        ],
    ));
    let used = signers(&proxy.take_seen());
    assert!(
        used.contains("AKIDPLAINPROFILE") && used.contains("AKIDFROMPROCESS"),
        "{used:?}"
    );
    assert!(
        used.iter().any(|k| k.starts_with("ASIA")),
        "the assumed role's keys: {used:?}"
    );
    // AssumeRole was signed, for STS, with the source profile's keys.
    let calls = sts.take_seen();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let auth = calls[0]
        .header("authorization")
        .expect("AssumeRole is signed");
    assert!(
        auth.contains("Credential=AKIDBASEPROFILE/") && auth.contains("/sts/aws4_request"),
        "{auth}"
    );
}

#[test]
fn an_expired_token_reply_refreshes_the_keys_and_retries_once() {
    const TEST: &str = "an_expired_token_reply_refreshes_the_keys_and_retries_once";
    if role().as_deref() == Some(TEST) {
        let (store, _cleanup) = child_store(CredentialSource::Imds, |_| {});
        store.write_block("k", b"x").unwrap();
        std::fs::write(std::env::var("TEST_SIGNAL").unwrap(), "go").unwrap();
        // The proxy answers the next GET ExpiredToken.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(store.read_block("k").unwrap(), b"x");
        return;
    }
    if skipped_off_moto(TEST) {
        return;
    }
    let responder = Responder::start(Duration::from_secs(3600), "unused");
    let proxy = std::sync::Arc::new(Proxy::start(&server().endpoint));
    let home = tempfile::tempdir().unwrap();
    let signal = home.path().join("signal");
    let (p, s) = (proxy.clone(), signal.clone());
    let watcher = std::thread::spawn(move || {
        while !s.exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        p.reply_next_method(
            "GET",
            400,
            &["Content-Type: application/xml"],
            "<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>",
        );
    });
    succeeded(&child(
        TEST,
        &proxy,
        home.path(),
        &[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", responder.endpoint()),
            ("TEST_SIGNAL", signal.display().to_string()),
        ],
    ));
    watcher.join().unwrap();
    assert_eq!(
        responder.issued().len(),
        2,
        "one refresh after ExpiredToken"
    );
    let gets: Vec<String> = proxy
        .take_seen()
        .iter()
        .filter(|s| s.method == "GET")
        .filter_map(signer)
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_ne!(gets[0], gets[1], "the retry used the new keys");
}

#[test]
fn anonymous_sends_no_signature() {
    if skipped_off_moto("anonymous_sends_no_signature") {
        return;
    }
    let proxy = Proxy::start(&server().endpoint);
    let mut c = config();
    c.endpoint = proxy.endpoint();
    c.credentials = CredentialSource::Anonymous;
    let store = S3Store::open(c).unwrap();
    let _ = store.read_block("k");
    let seen = proxy.take_seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|s| s.header("authorization").is_none()),
        "{seen:?}"
    );
    assert_eq!(
        store.report().about("credentials"),
        Some("anonymous access")
    );
}
