//! Real S3 servers for the tests.
//!
//! With `BLOCKSTORE_S3_ENDPOINT` set (for example to the Ceph RGW that
//! `scripts/rgw.sh start` runs), tests use that server with `BLOCKSTORE_S3_ACCESS_KEY`
//! and `BLOCKSTORE_S3_SECRET_KEY`. Otherwise the first test that needs S3 starts
//! `moto_server` on a free loopback port, once per test binary; it stops when the test
//! binary exits. Without moto the tests fail, naming the set-up command. Set
//! `BLOCKSTORE_S3_SERVER=moto` when the endpoint is a moto, whose checks are laxer.
#![allow(dead_code)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use blockstore::{BlockStore, S3Config, S3Store};

/// The server every S3 test in this binary talks to.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// `moto` (started here, or named by `BLOCKSTORE_S3_SERVER=moto`) or `external`.
    pub flavour: &'static str,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    /// The bucket this test binary works in.
    pub bucket: String,
    /// Keeps moto alive: closing this pipe (at exit) makes its wrapper stop it.
    _lifeline: Option<Mutex<(Child, ChildStdin)>>,
}

static SERVER: OnceLock<Server> = OnceLock::new();

/// The shared server, started on first use.
pub fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        let mut server = match std::env::var("BLOCKSTORE_S3_ENDPOINT") {
            Ok(endpoint) if !endpoint.is_empty() => Server {
                endpoint,
                flavour: match std::env::var("BLOCKSTORE_S3_SERVER").as_deref() {
                    Ok("moto") => "moto",
                    _ => "external",
                },
                access_key: std::env::var("BLOCKSTORE_S3_ACCESS_KEY")
                    .unwrap_or_else(|_| "test".into()),
                secret_key: std::env::var("BLOCKSTORE_S3_SECRET_KEY")
                    .unwrap_or_else(|_| "testtesttest".into()),
                region: std::env::var("BLOCKSTORE_S3_REGION")
                    .unwrap_or_else(|_| "us-east-1".into()),
                bucket: String::new(),
                _lifeline: None,
            },
            _ => start_moto(),
        };
        server.bucket = unique("bs");
        create_bucket(&server);
        server
    })
}

/// A name no other test run uses: `{stem}-{pid}-{time}-{n}`, lower case.
pub fn unique(stem: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        % 1_000_000_000_000;
    format!(
        "{stem}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn moto_path() -> Option<PathBuf> {
    // scripts/test.sh installs it into the workspace root's .venv.
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for root in here.ancestors().take(2) {
        let local = root.join(".venv/bin/moto_server");
        if local.exists() {
            return Some(local);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("moto_server"))
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_moto() -> Server {
    let moto = moto_path().unwrap_or_else(|| {
        panic!(
            "the S3 tests need moto_server: run `scripts/test.sh` (it installs moto[server] into .venv), \
             or `pip install 'moto[server]'`, or set BLOCKSTORE_S3_ENDPOINT to a running S3 server"
        )
    });
    let port = free_port();
    // The shell stops moto when our end of its stdin closes, i.e. when this process ends.
    let script = format!(
        "'{}' -H 127.0.0.1 -p {port} >/dev/null 2>&1 & pid=$!; read _; kill $pid",
        moto.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let stdin = child.stdin.take().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    wait_until_up(port, Duration::from_secs(60));
    Server {
        endpoint,
        flavour: "moto",
        access_key: "test".into(),
        secret_key: "testtesttest".into(),
        region: "us-east-1".into(),
        bucket: String::new(),
        _lifeline: Some(Mutex::new((child, stdin))),
    }
}

fn wait_until_up(port: u16, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Write;
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            if s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .is_ok()
            {
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the S3 server on port {port} did not come up within {limit:?}");
}

fn create_bucket(server: &Server) {
    use s3::bucket::Bucket;
    use s3::creds::Credentials;
    use s3::region::Region;
    use s3::BucketConfiguration;
    // moto, like AWS, refuses a LocationConstraint of us-east-1.
    std::env::set_var("RUST_S3_SKIP_LOCATION_CONSTRAINT", "true");
    let region = Region::Custom {
        region: server.region.clone(),
        endpoint: server.endpoint.clone(),
    };
    let creds = Credentials::new(
        Some(&server.access_key),
        Some(&server.secret_key),
        None,
        None,
        None,
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let name = server.bucket.clone();
    let created = runtime.block_on(Bucket::create_with_path_style(
        &name,
        region,
        creds,
        BucketConfiguration::default(),
    ));
    match created {
        Ok(r) if r.success() => {}
        Ok(r) => panic!(
            "creating bucket {name} on {}: HTTP {} {}",
            server.endpoint, r.response_code, r.response_text
        ),
        Err(e) => panic!("creating bucket {name} on {}: {e}", server.endpoint),
    }
}

/// A configuration for the shared bucket under a fresh key prefix.
pub fn config() -> S3Config {
    let s = server();
    let mut c = S3Config::new(&s.bucket);
    c.endpoint = s.endpoint.clone();
    c.region = s.region.clone();
    c.force_path_style = true;
    c.access_key_id = s.access_key.clone();
    c.secret_access_key = s.secret_key.clone();
    c.key_prefix = format!("{}/", unique("t"));
    c.max_retries = 3;
    c.request_timeout_secs = 30;
    c.operation_deadline_secs = 60;
    c
}

/// Deletes everything under a configuration's key prefix when dropped.
pub struct Cleanup(pub S3Config);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(store) = S3Store::open(self.0.clone()) {
            let _ = store.delete_by_prefix("");
        }
    }
}

/// The S3 section of a configuration file.
pub fn config_from_file(path: &std::path::Path) -> S3Config {
    blockstore::Config::load(path)
        .unwrap()
        .block_store
        .s3
        .unwrap()
}

/// A rust-s3 bucket handle for `c` (path style), to look at what the server stored
/// through a client other than the store, and a runtime to drive it.
pub fn raw_bucket(c: &S3Config) -> (Box<s3::Bucket>, tokio::runtime::Runtime) {
    let region = s3::region::Region::Custom {
        region: c.region.clone(),
        endpoint: c.endpoint.clone(),
    };
    let creds = s3::creds::Credentials::new(
        Some(&c.access_key_id),
        Some(&c.secret_access_key),
        None,
        None,
        None,
    )
    .unwrap();
    let bucket = s3::Bucket::new(&c.bucket, region, creds)
        .unwrap()
        .with_path_style();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (bucket, runtime)
}
