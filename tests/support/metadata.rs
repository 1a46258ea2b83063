//! A loopback credentials responder that follows AWS's documented protocols: the EC2
//! instance metadata service (IMDSv2: a PUT for a session token with its TTL header,
//! then the role name and the role's keys, each refused without the token) and the
//! container credentials endpoint (ECS / EKS Pod Identity: keys for a request whose
//! `Authorization` is the expected token). Each fetch issues new keys that expire
//! `lifetime` later, and it can be told to fail or to stop answering.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Keys the responder gave out.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_key_id: String,
    pub expires: SystemTime,
}

#[derive(Default)]
struct State {
    issued: Mutex<Vec<Issued>>,
    next: AtomicU64,
    failing: AtomicBool,
    silent: AtomicBool,
    /// Give out keys that expired a minute ago.
    stale: AtomicBool,
    lifetime_ms: AtomicU64,
    /// The `Authorization` the container endpoint expects.
    container_token: Mutex<String>,
}

pub struct Responder {
    port: u16,
    state: Arc<State>,
}

const ROLE: &str = "blockstore-test-role";

impl Responder {
    /// Starts on a free loopback port; keys live `lifetime`.
    pub fn start(lifetime: Duration, container_token: &str) -> Responder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind responder");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        state
            .lifetime_ms
            .store(lifetime.as_millis() as u64, Ordering::SeqCst);
        *state.container_token.lock().unwrap() = container_token.to_owned();
        let s = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(client, &s));
            }
        });
        Responder { port, state }
    }

    /// `http://127.0.0.1:PORT`: the IMDS endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The container credentials URI.
    pub fn container_uri(&self) -> String {
        format!("{}/v1/credentials", self.endpoint())
    }

    /// Every key given out so far.
    pub fn issued(&self) -> Vec<Issued> {
        self.state.issued.lock().unwrap().clone()
    }

    /// While on, every request is answered 500.
    pub fn fail(&self, on: bool) {
        self.state.failing.store(on, Ordering::SeqCst);
    }

    /// While on, the keys given out expired a minute before they are given.
    pub fn give_stale_keys(&self, on: bool) {
        self.state.stale.store(on, Ordering::SeqCst);
    }

    /// While on, requests are read and never answered.
    pub fn go_silent(&self, on: bool) {
        self.state.silent.store(on, Ordering::SeqCst);
    }

    /// The token the container endpoint expects from now on.
    pub fn expect_container_token(&self, token: &str) {
        *self.state.container_token.lock().unwrap() = token.to_owned();
    }
}

fn reply(client: &mut TcpStream, status: &str, headers: &[String], body: &str) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let _ = client.write_all(head.as_bytes());
    let _ = client.write_all(body.as_bytes());
}

fn keys_json(state: &State) -> String {
    let n = state.next.fetch_add(1, Ordering::SeqCst);
    let lifetime = Duration::from_millis(state.lifetime_ms.load(Ordering::SeqCst));
    let expires = if state.stale.load(Ordering::SeqCst) {
        SystemTime::now() - Duration::from_secs(60)
    } else {
        SystemTime::now() + lifetime
    };
    let access_key_id = format!("ASIARESPONDER{n:06}");
    state.issued.lock().unwrap().push(Issued {
        access_key_id: access_key_id.clone(),
        expires,
    });
    let stamp = httpdate_rfc3339(expires);
    format!(
        "{{\"Code\": \"Success\", \"Type\": \"AWS-HMAC\", \"AccessKeyId\": \"{access_key_id}\", \
         \"SecretAccessKey\": \"secret-{n}\", \"Token\": \"token-{n}\", \"Expiration\": \"{stamp}\", \
         \"LastUpdated\": \"{}\"}}",
        httpdate_rfc3339(SystemTime::now())
    )
}

/// RFC 3339 in UTC with fractional seconds, as AWS writes expirations.
fn httpdate_rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn serve(mut client: TcpStream, state: &State) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    let _ = reader.read_exact(&mut body);
    if state.silent.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    if state.failing.load(Ordering::SeqCst) {
        reply(
            &mut client,
            "500 Internal Server Error",
            &[],
            "failing on purpose",
        );
        return;
    }
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let token_ok = header("x-aws-ec2-metadata-token").as_deref() == Some("imds-session-token");
    match (method, path) {
        ("PUT", "/latest/api/token") => match header("x-aws-ec2-metadata-token-ttl-seconds") {
            Some(ttl) if ttl.parse::<u32>().is_ok_and(|t| (1..=21_600).contains(&t)) => reply(
                &mut client,
                "200 OK",
                &[format!("x-aws-ec2-metadata-token-ttl-seconds: {ttl}")],
                "imds-session-token",
            ),
            _ => reply(
                &mut client,
                "400 Bad Request",
                &[],
                "missing or bad TTL header",
            ),
        },
        ("GET", p) if p.starts_with("/latest/meta-data/iam/security-credentials/") => {
            if !token_ok {
                reply(&mut client, "401 Unauthorized", &[], "");
                return;
            }
            let role = &p["/latest/meta-data/iam/security-credentials/".len()..];
            if role.is_empty() {
                reply(&mut client, "200 OK", &[], ROLE);
            } else if role == ROLE {
                let json = keys_json(state);
                reply(
                    &mut client,
                    "200 OK",
                    &["Content-Type: application/json".into()],
                    &json,
                );
            } else {
                reply(&mut client, "404 Not Found", &[], "");
            }
        }
        ("GET", "/v1/credentials") => {
            let expected = state.container_token.lock().unwrap().clone();
            if header("authorization").as_deref() != Some(expected.as_str()) {
                reply(&mut client, "403 Forbidden", &[], "bad authorization token");
                return;
            }
            let json = keys_json(state);
            reply(
                &mut client,
                "200 OK",
                &["Content-Type: application/json".into()],
                &json,
            );
        }
        _ => reply(&mut client, "404 Not Found", &[], ""),
    }
}
