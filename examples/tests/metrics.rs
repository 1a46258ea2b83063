//! The metrics example serves what its store did, and Prometheus can scrape it: the
//! exact counts of its calls, errors and bytes.
#![cfg(feature = "metrics")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};

fn example_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(Path::parent).unwrap();
    debug.join("examples/metrics")
}

fn scrape(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|rest| rest.trim().parse().ok())
}

#[test]
fn the_example_serves_exact_counts() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(example_binary())
        .args(["-", &addr])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the metrics example is built by cargo test --features metrics");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let text = scrape(&addr);
    child.kill().unwrap();
    child.wait().unwrap();
    let get =
        |series: &str| value(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(
        get(r#"blockstore_calls_total{backend="memory",op="write"}"#),
        10.0
    );
    assert_eq!(
        get(r#"blockstore_calls_total{backend="memory",op="read"}"#),
        11.0
    );
    assert_eq!(
        get(r#"blockstore_errors_total{backend="memory",op="read",kind="not_found"}"#),
        1.0
    );
    assert_eq!(
        get(r#"blockstore_bytes_written_total{backend="memory",op="write"}"#),
        10000.0
    );
    assert_eq!(
        get(r#"blockstore_bytes_read_total{backend="memory",op="read"}"#),
        10000.0
    );
    assert_eq!(
        get(r#"blockstore_call_seconds_count{backend="memory",op="write"}"#),
        10.0
    );
    assert_eq!(
        get(r#"blockstore_in_flight{backend="memory",op="read"}"#),
        0.0
    );
}
