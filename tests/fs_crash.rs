//! Crash safety: a child process writes and overwrites self-verifying blocks and reports
//! each acknowledged write; the parent kills it with SIGKILL at random moments, reopens
//! the store and checks every key is whole, valid and at least as new as acknowledged.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use blockstore::{BlockStore, FsConfig, FsStore};
use support::{child_command, child_role, temp_files, tree_outside_internal};

const KEYS: u64 = 24;
const KILLS: usize = 60;

fn key(i: u64) -> String {
    format!("crash/d{}/k{i}", i % 5)
}

/// FNV-1a, enough to tell a torn or blended block from a whole one.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// `[key len u16][key][version u64][payload len u32][payload][checksum u64]`.
fn encode(key: &str, version: u64, payload_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + payload_len + 22);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend((0..payload_len).map(|i| (i as u64).wrapping_mul(version | 1) as u8));
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// The version of a block, or a description of why it is not valid.
fn decode(expected_key: &str, block: &[u8]) -> Result<u64, String> {
    if block.len() < 22 {
        return Err(format!("{} bytes is too short", block.len()));
    }
    let (body, sum) = block.split_at(block.len() - 8);
    if checksum(body) != u64::from_le_bytes(sum.try_into().unwrap()) {
        return Err("checksum mismatch".into());
    }
    let klen = u16::from_le_bytes([body[0], body[1]]) as usize;
    let key = std::str::from_utf8(&body[2..2 + klen]).map_err(|e| e.to_string())?;
    if key != expected_key {
        return Err(format!("holds the block of {key}"));
    }
    let version = u64::from_le_bytes(body[2 + klen..10 + klen].try_into().unwrap());
    let plen = u32::from_le_bytes(body[10 + klen..14 + klen].try_into().unwrap()) as usize;
    if body.len() != 14 + klen + plen {
        return Err("length mismatch".into());
    }
    Ok(version)
}

/// The child: continue each key's versions from what is on disk, write forever, and
/// print `ACK key version` after each write returns.
#[test]
fn crash_child() {
    if child_role().as_deref() != Some("crash") {
        return;
    }
    let dir = std::env::var("CRASH_DIR").unwrap();
    let store = FsStore::open(FsConfig::new(&dir)).unwrap();
    let mut versions: Vec<u64> = (0..KEYS)
        .map(|i| {
            store
                .read_block(&key(i))
                .ok()
                .and_then(|b| decode(&key(i), &b).ok())
                .unwrap_or(0)
        })
        .collect();
    let mut rng = std::process::id() as u64 | 1;
    loop {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let i = rng % KEYS;
        versions[i as usize] += 1;
        let len = if rng.is_multiple_of(16) {
            1 << 20
        } else {
            (rng >> 20) as usize % 48_000
        };
        store
            .write_block(&key(i), &encode(&key(i), versions[i as usize], len))
            .unwrap();
        // One write per line, ended by a marker, so a cut line is recognisable.
        let line = format!("ACK {i} {} .\n", versions[i as usize]);
        std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes()).unwrap();
    }
}

fn verify(dir: &Path, acked: &HashMap<u64, u64>) {
    let store = FsStore::open(FsConfig::new(dir)).expect("reopen after kill");
    for i in 0..KEYS {
        let k = key(i);
        match store.read_block(&k) {
            Ok(block) => {
                let version = decode(&k, &block)
                    .unwrap_or_else(|why| panic!("{k} is corrupt after a kill: {why}"));
                let need = acked.get(&i).copied().unwrap_or(0);
                assert!(
                    version >= need,
                    "{k} went back from acknowledged version {need} to {version}"
                );
            }
            Err(e) => assert!(
                !acked.contains_key(&i),
                "{k} was acknowledged but is gone: {e}"
            ),
        }
    }
    for p in tree_outside_internal(dir) {
        let is_block_path =
            p == "crash" || p.starts_with("crash/d") && (p.len() == 8 || p[9..].starts_with('k'));
        assert!(is_block_path, "stray file outside the internal area: {p}");
    }
    assert!(
        temp_files(dir).is_empty(),
        "temporary files left after reopen: {:?}",
        temp_files(dir)
    );
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: HashMap<u64, u64> = HashMap::new();
    let mut total_acks = 0usize;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    for round in 0..KILLS {
        let mut child = child_command("crash_child", "crash")
            .env("CRASH_DIR", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // A kill can cut the last line short: only whole lines count.
                let Some(rest) = line.strip_prefix("ACK ").and_then(|r| r.strip_suffix(" ."))
                else {
                    continue;
                };
                let mut parts = rest.split(' ').map(|s| s.parse::<u64>());
                if let (Some(Ok(i)), Some(Ok(v))) = (parts.next(), parts.next()) {
                    tx.send((i, v)).unwrap();
                }
            }
        });
        // Wait for the first acknowledgement so the kill lands while writing.
        let first = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("child wrote nothing");
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(rng % 40_000));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        for (i, v) in std::iter::once(first).chain(rx.try_iter()) {
            let slot = acked.entry(i).or_insert(0);
            *slot = (*slot).max(v);
            total_acks += 1;
        }
        verify(dir.path(), &acked);
        if round == 0 {
            assert!(total_acks > 0);
        }
    }
    assert!(
        total_acks >= KILLS,
        "only {total_acks} acknowledged writes over {KILLS} kills"
    );
    eprintln!("{KILLS} kills, {total_acks} acknowledged writes verified");
}
