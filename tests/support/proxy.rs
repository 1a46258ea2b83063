//! A fault-injecting TCP proxy between an S3 client and a real S3 server.
//!
//! It reads each HTTP request whole (headers and `Content-Length` body), records it,
//! and either forwards it or answers it itself with a chosen error. Faults on the way
//! back (reset, early end, delay) apply to the response of the next request forwarded.
//! It can also refuse connections, swallow requests without answering, and count the
//! connections it accepted. A client may also use it as its HTTP proxy (absolute
//! request targets): that is how a test reaches virtual-hosted bucket names such as
//! `bucket.localhost` that no resolver here knows.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// What the proxy did to it: `None` forwarded cleanly, else the fault's name
    /// (`"503 SlowDown"`, `"reset"`, `"truncate"`, `"delay"`, `"blackhole"`, `"corrupt"`).
    pub fault: Option<String>,
    /// Whether the request carried a `Content-MD5` header.
    pub content_md5: bool,
    /// Every header of the request, names in lower case, in order.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// The value of header `name` (lower case), if the request had it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Send N bytes of the response, then an RST.
    Reset(usize),
    /// Send N bytes of the response, then close cleanly (a short body).
    Truncate(usize),
}

#[derive(Default)]
struct Plan {
    /// Errors to answer with: (only for this method, or any; status; code).
    errors: VecDeque<(Option<String>, u16, String)>,
    cuts: VecDeque<Cut>,
    delays: VecDeque<Duration>,
    /// Request bodies still to corrupt (one byte flipped) on the way to the server.
    corrupt: usize,
    /// GET responses still to corrupt (one byte of the body flipped) on the way back.
    corrupt_responses: usize,
    /// Whole responses to answer with instead of the server.
    canned: VecDeque<Canned>,
    /// Hold every forwarded response back this long (a slow server).
    delay_each: Option<Duration>,
}

/// A response the proxy gives instead of the server.
struct Canned {
    /// Only for requests with this method.
    method: String,
    /// Only for requests whose target contains this.
    target: Option<String>,
    /// The raw HTTP response.
    raw: Vec<u8>,
    /// Then this many zero bytes (a huge body), streamed.
    zeros: usize,
    /// Close the connection after it (a body that ends at close).
    close: bool,
}

struct Shared {
    upstream: SocketAddr,
    plan: Mutex<Plan>,
    seen: Mutex<Vec<Seen>>,
    accepted: AtomicUsize,
    /// Bytes of canned huge bodies the client took.
    streamed: AtomicUsize,
    blackhole: AtomicBool,
    down: AtomicBool,
    stop: AtomicBool,
    /// Open client connections, to cut them all when the server "goes away".
    clients: Mutex<Vec<(usize, TcpStream)>>,
    /// When set, requests above this rate are answered 503 SlowDown.
    rate: Mutex<Option<TokenBucket>>,
}

/// A request rate with a burst of a tenth of a second's worth.
struct TokenBucket {
    per_second: f64,
    tokens: f64,
    last: std::time::Instant,
}

impl TokenBucket {
    fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let burst = (self.per_second / 10.0).max(1.0);
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_second)
            .min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The proxy; stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let hostport = upstream.trim_start_matches("http://").trim_end_matches('/');
        let upstream: SocketAddr = hostport.parse().unwrap_or_else(|_| {
            std::net::ToSocketAddrs::to_socket_addrs(hostport)
                .expect("resolve upstream")
                .next()
                .expect("an address")
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            plan: Mutex::new(Plan::default()),
            seen: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            streamed: AtomicUsize::new(0),
            blackhole: AtomicBool::new(false),
            down: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            clients: Mutex::new(Vec::new()),
            rate: Mutex::new(None),
        });
        let s = shared.clone();
        thread::spawn(move || accept_loop(listener, addr, s));
        Proxy { addr, shared }
    }

    /// The endpoint to give the client.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next `n` requests with `status` and S3 error `code`, after reading
    /// each whole.
    pub fn fail_next(&self, n: usize, status: u16, code: &str) {
        let mut plan = self.shared.plan.lock().unwrap();
        for _ in 0..n {
            plan.errors.push_back((None, status, code.to_owned()));
        }
    }

    /// Like [`Proxy::fail_next`], for requests with this method only; others pass.
    pub fn fail_next_method(&self, method: &str, n: usize, status: u16, code: &str) {
        let mut plan = self.shared.plan.lock().unwrap();
        for _ in 0..n {
            plan.errors
                .push_back((Some(method.to_owned()), status, code.to_owned()));
        }
    }

    /// Answers the next request with this method with `status`, the extra `headers`
    /// (`Name: value` lines) and `body`, instead of the server: a reply a real server
    /// would rarely give (per-key DeleteObjects errors, odd ETags).
    pub fn reply_next_method(&self, method: &str, status: u16, headers: &[&str], body: &str) {
        let mut raw = format!(
            "HTTP/1.1 {status} Canned\r\nContent-Length: {}\r\n",
            body.len()
        );
        for h in headers {
            raw.push_str(h);
            raw.push_str("\r\n");
        }
        raw.push_str("\r\n");
        if method != "HEAD" {
            raw.push_str(body);
        }
        self.can(method, None, raw.into_bytes(), 0, false);
    }

    /// Answers the next request with this method (and, if given, a target containing
    /// `target`) with exactly `raw`, then closes the connection if `close` is set: for
    /// replies whose headers lie, or whose body ends at close without a length.
    pub fn reply_raw_next(&self, method: &str, target: Option<&str>, raw: &str, close: bool) {
        self.can(method, target, raw.as_bytes().to_vec(), 0, close);
    }

    /// Answers the next `n` requests with this method and target with `status` and
    /// `body` (a listing page that repeats, say).
    pub fn reply_next_n(&self, n: usize, method: &str, target: &str, status: u16, body: &str) {
        for _ in 0..n {
            let raw = format!(
                "HTTP/1.1 {status} Canned\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            self.can(method, Some(target), raw.into_bytes(), 0, false);
        }
    }

    /// Answers the next request with this method with `status` and a body of `size`
    /// zero bytes, streamed as long as the client reads.
    pub fn huge_error_next(&self, method: &str, status: u16, size: usize) {
        let head = format!(
            "HTTP/1.1 {status} Huge\r\nContent-Type: application/xml\r\nContent-Length: {size}\r\n\r\n"
        );
        self.can(method, None, head.into_bytes(), size, true);
    }

    /// Answers requests beyond `per_second` (with a burst of a tenth of a second's
    /// worth) with 503 SlowDown on a connection kept open, as a throttling server
    /// does; `None` lifts the limit.
    pub fn limit_rate(&self, per_second: Option<f64>) {
        *self.shared.rate.lock().unwrap() = per_second.map(|per_second| TokenBucket {
            per_second,
            tokens: (per_second / 10.0).max(1.0),
            last: std::time::Instant::now(),
        });
    }

    /// Holds every forwarded response back for `delay` (`None`: no more).
    pub fn delay_each_response(&self, delay: Option<Duration>) {
        self.shared.plan.lock().unwrap().delay_each = delay;
    }

    fn can(&self, method: &str, target: Option<&str>, raw: Vec<u8>, zeros: usize, close: bool) {
        self.shared.plan.lock().unwrap().canned.push_back(Canned {
            method: method.to_owned(),
            target: target.map(str::to_owned),
            raw,
            zeros,
            close,
        });
    }

    /// Resets the connection after `bytes` bytes of the next forwarded response.
    pub fn reset_next_response_after(&self, bytes: usize) {
        self.shared
            .plan
            .lock()
            .unwrap()
            .cuts
            .push_back(Cut::Reset(bytes));
    }

    /// Ends the next forwarded response cleanly after `bytes` bytes.
    pub fn truncate_next_response_after(&self, bytes: usize) {
        self.shared
            .plan
            .lock()
            .unwrap()
            .cuts
            .push_back(Cut::Truncate(bytes));
    }

    /// Holds the next forwarded response back for `delay`.
    pub fn delay_next_response(&self, delay: Duration) {
        self.shared.plan.lock().unwrap().delays.push_back(delay);
    }

    /// Flips one byte in the body of each of the next `n` requests that have one, on the
    /// way to the server (a body damaged in transit).
    pub fn corrupt_next_bodies(&self, n: usize) {
        self.shared.plan.lock().unwrap().corrupt += n;
    }

    /// Flips one byte in the body of each of the next `n` GET responses on the way back
    /// to the client (past the first 2 KiB of the response, so bodies of at least that).
    pub fn corrupt_next_response_bodies(&self, n: usize) {
        self.shared.plan.lock().unwrap().corrupt_responses += n;
    }

    /// While on, requests are read and never answered (a hung server).
    pub fn blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::SeqCst);
    }

    /// Closes every connection and refuses new ones (a server that went away).
    pub fn go_down(&self) {
        self.shared.down.store(true, Ordering::SeqCst);
        for (_, c) in self.shared.clients.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so it closes the listener.
        let _ = TcpStream::connect(self.addr);
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Accepts connections again on the same port.
    pub fn come_back(&self) {
        self.shared.down.store(false, Ordering::SeqCst);
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_err() {
            thread::sleep(Duration::from_millis(10));
        }
        // That probe connection counted; do not report it.
        self.shared.accepted.fetch_sub(1, Ordering::SeqCst);
    }

    /// Bytes of huge canned bodies (see [`Proxy::huge_error_next`]) written so far.
    pub fn streamed(&self) -> usize {
        self.shared.streamed.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// The requests seen so far, and forgets them.
    pub fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.shared.seen.lock().unwrap())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for (_, c) in self.shared.clients.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        let _ = TcpStream::connect(self.addr);
    }
}

fn accept_loop(listener: TcpListener, addr: SocketAddr, shared: Arc<Shared>) {
    let mut listener = Some(listener);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if shared.down.load(Ordering::SeqCst) {
            listener = None;
            thread::sleep(Duration::from_millis(5));
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            None => match TcpListener::bind(addr) {
                Ok(l) => listener.insert(l),
                Err(_) => {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                }
            },
        };
        let Ok((client, _)) = l.accept() else {
            continue;
        };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if shared.down.load(Ordering::SeqCst) {
            continue;
        }
        let id = shared.accepted.fetch_add(1, Ordering::SeqCst);
        if let Ok(c) = client.try_clone() {
            shared.clients.lock().unwrap().push((id, c));
        }
        let s = shared.clone();
        thread::spawn(move || {
            serve(client, &s);
            s.clients.lock().unwrap().retain(|(i, _)| *i != id);
        });
    }
}

/// The fault for the response being forwarded on one connection.
#[derive(Default)]
struct Pending {
    cut: Option<Cut>,
    delay: Option<Duration>,
    sent: usize,
    /// Flip a byte of this response past its head (bodies of at least 2 KiB).
    corrupt: bool,
}

fn serve(mut client: TcpStream, shared: &Shared) {
    let _ = client.set_nodelay(true);
    let Ok(upstream) = TcpStream::connect(shared.upstream) else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let pending = Arc::new(Mutex::new(Pending::default()));
    {
        let (mut up, mut down, pending) = (
            upstream.try_clone().unwrap(),
            client.try_clone().unwrap(),
            pending.clone(),
        );
        thread::spawn(move || pump_responses(&mut up, &mut down, &pending));
    }
    let mut upstream = upstream;
    let mut buf = Vec::new();
    loop {
        let Some((request, method, target, has_body)) = read_request(&mut client, &mut buf) else {
            let _ = upstream.shutdown(Shutdown::Both);
            return;
        };
        if shared.blackhole.load(Ordering::SeqCst) {
            record(shared, &request, &method, &target, Some("blackhole"));
            // Never answer; hold the connection until the client gives up.
            let mut sink = [0u8; 4096];
            while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
            return;
        }
        let over_rate = shared
            .rate
            .lock()
            .unwrap()
            .as_mut()
            .is_some_and(|bucket| !bucket.take());
        if over_rate {
            record(
                shared,
                &request,
                &method,
                &target,
                Some("rate 503 SlowDown"),
            );
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>\
                        <Message>Please reduce your request rate.</Message><RequestId>proxy-rate</RequestId></Error>";
            let body = if method == "HEAD" { "" } else { body };
            let head = format!(
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            if client.write_all(head.as_bytes()).is_err()
                || client.write_all(body.as_bytes()).is_err()
            {
                return;
            }
            continue;
        }
        let canned = {
            let mut plan = shared.plan.lock().unwrap();
            let fits = plan.canned.front().is_some_and(|c| {
                c.method == method
                    && c.target
                        .as_ref()
                        .is_none_or(|t| target.contains(t.as_str()))
            });
            if fits {
                plan.canned.pop_front()
            } else {
                None
            }
        };
        if let Some(canned) = canned {
            record(shared, &request, &method, &target, Some("canned"));
            let delay = shared.plan.lock().unwrap().delay_each;
            if let Some(d) = delay {
                thread::sleep(d);
            }
            let mut ok = client.write_all(&canned.raw).is_ok();
            let zeros = vec![0u8; 64 * 1024];
            let mut left = canned.zeros;
            while ok && left > 0 {
                let n = left.min(zeros.len());
                ok = client.write_all(&zeros[..n]).is_ok();
                if ok {
                    shared.streamed.fetch_add(n, Ordering::SeqCst);
                }
                left -= n;
            }
            if !ok || canned.close {
                let _ = client.shutdown(Shutdown::Both);
                let _ = upstream.shutdown(Shutdown::Both);
                return;
            }
            continue;
        }
        let injected = {
            let mut plan = shared.plan.lock().unwrap();
            match plan.errors.front() {
                Some((Some(only), _, _)) if *only != method => None,
                Some(_) => plan
                    .errors
                    .pop_front()
                    .map(|(_, status, code)| (status, code)),
                None => None,
            }
        };
        if let Some((status, code)) = injected {
            let fault = format!("{status} {code}");
            record(shared, &request, &method, &target, Some(&fault));
            let token = header(&request, "x-amz-security-token").unwrap_or_default();
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>\
                 <Message>injected by the test proxy</Message><RequestId>proxy</RequestId>\
                 <EchoedToken>{token}</EchoedToken></Error>"
            );
            let body = if method == "HEAD" {
                String::new()
            } else {
                body
            };
            let head = format!(
                "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = client.write_all(head.as_bytes());
            let _ = client.write_all(body.as_bytes());
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
            return;
        }
        let (cut, delay, corrupt) = {
            let mut plan = shared.plan.lock().unwrap();
            let corrupt = has_body && plan.corrupt > 0;
            if corrupt {
                plan.corrupt -= 1;
            }
            let delay = plan.delays.pop_front().or(plan.delay_each);
            let corrupt_response = method == "GET" && plan.corrupt_responses > 0;
            if corrupt_response {
                plan.corrupt_responses -= 1;
            }
            (plan.cuts.pop_front(), delay, (corrupt, corrupt_response))
        };
        let (corrupt, corrupt_response) = corrupt;
        let mut request = request;
        if corrupt {
            if let Some(last) = request.last_mut() {
                *last ^= 0x01;
            }
        }
        let fault = match (cut, delay, corrupt) {
            (Some(Cut::Reset(_)), _, _) => Some("reset"),
            (Some(Cut::Truncate(_)), _, _) => Some("truncate"),
            (None, Some(_), _) => Some("delay"),
            (None, None, true) => Some("corrupt"),
            (None, None, false) if corrupt_response => Some("corrupt response"),
            (None, None, false) => None,
        };
        record(shared, &request, &method, &target, fault);
        *pending.lock().unwrap() = Pending {
            cut,
            delay,
            sent: 0,
            corrupt: corrupt_response,
        };
        if upstream.write_all(&request).is_err() {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn record(shared: &Shared, request: &[u8], method: &str, target: &str, fault: Option<&str>) {
    shared.seen.lock().unwrap().push(Seen {
        method: method.to_owned(),
        target: target.to_owned(),
        fault: fault.map(str::to_owned),
        content_md5: header(request, "content-md5").is_some(),
        headers: headers(request),
    });
}

/// Forwards bytes from the server to the client, applying the pending fault.
fn pump_responses(up: &mut TcpStream, down: &mut TcpStream, pending: &Mutex<Pending>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match up.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = down.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        let mut p = pending.lock().unwrap();
        if let Some(d) = p.delay.take() {
            thread::sleep(d);
        }
        match p.cut {
            Some(Cut::Reset(limit) | Cut::Truncate(limit)) if p.sent + n >= limit => {
                let allowed = limit - p.sent;
                let _ = down.write_all(&buf[..allowed]);
                if let Some(Cut::Reset(_)) = p.cut {
                    // Linger 0: closing sends an RST instead of a FIN.
                    let _ = socket2::SockRef::from(&*down).set_linger(Some(Duration::ZERO));
                }
                let _ = down.shutdown(Shutdown::Both);
                let _ = up.shutdown(Shutdown::Both);
                return;
            }
            _ => {
                if p.corrupt && p.sent + n > 2048 {
                    buf[n - 1] ^= 0x10;
                    p.corrupt = false;
                }
                p.sent += n;
                if down.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads one request (head and `Content-Length` body) from `client`; returns its bytes,
/// method, target and whether it had a body. `None` when the client closed.
fn read_request(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(Vec<u8>, String, String, bool)> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 16 * 1024];
        match client.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut first = head.lines().next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let target = first.next().unwrap_or_default().to_owned();
    let length: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = vec![0u8; (head_end + length - buf.len()).min(1 << 20)];
        match client.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    let mut request: Vec<u8> = buf.drain(..head_end + length).collect();
    // A client that uses us as its HTTP proxy names the whole URL
    // (`GET http://bucket.localhost:9000/key`): the server gets the path, and the
    // `Host` header, which the client set to the URL's host, is left as it is.
    if let Some(rest) = target.strip_prefix("http://") {
        let path = rest.find('/').map_or("/", |i| &rest[i..]);
        let line_end = find(&request, b"\r\n").unwrap_or(0);
        let line = format!("{method} {path} HTTP/1.1");
        request.splice(..line_end, line.into_bytes());
    }
    Some((request, method, target, length > 0))
}

fn header<T: AsRef<[u8]>>(request: T, name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(request.as_ref());
    let head = text.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

fn headers(request: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(request);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .skip(1)
        .filter_map(|line| {
            let (k, v) = line.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
