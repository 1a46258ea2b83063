//! `credential_process`: a command of the profile's that prints keys as JSON
//! (`Version` 1, `AccessKeyId`, `SecretAccessKey`, optional `SessionToken` and
//! `Expiration`). Run with `sh -c`, bounded by the request time limit.

use std::time::Duration;

use super::{transient, Failed, Fetched, JsonKeys};

pub(crate) async fn run(command: &str, limit: Duration) -> Result<Fetched, Failed> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // A group of its own: on a time-out everything it started is killed, not
        // only the shell.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failed::from(format!("cannot run credential_process {command:?}: {e}")))?;
    let group = child.id();
    let (out, err, status) = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(output)) => (output.stdout, output.stderr, Ok(output.status)),
        Ok(Err(e)) => (Vec::new(), Vec::new(), Err(e)),
        Err(_) => {
            if let Some(pid) = group.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: signals the process group made for this command only.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            return Err(transient(format!(
                "credential_process {command:?} did not finish within {limit:?}"
            )));
        }
    };
    let status =
        status.map_err(|e| Failed::from(format!("credential_process {command:?}: {e}")))?;
    if !status.success() {
        // Its stderr may say why; its stdout may hold keys and is never shown.
        let why: String = String::from_utf8_lossy(&err).chars().take(200).collect();
        return Err(Failed::from(format!(
            "credential_process {command:?} failed ({status}): {}",
            why.trim()
        )));
    }
    JsonKeys::parse(&out, &format!("credential_process {command:?}")).map_err(Failed::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_the_commands_output() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let json = r#"{"Version": 1, "AccessKeyId": "AKIDPROC", "SecretAccessKey": "s", "SessionToken": "t", "Expiration": "2030-01-01T00:00:00Z"}"#;
        let got = runtime
            .block_on(run(&format!("echo '{json}'"), Duration::from_secs(5)))
            .unwrap();
        assert_eq!(got.keys.access_key_id, "AKIDPROC");
        assert_eq!(got.keys.session_token.as_deref(), Some("t"));
        assert!(got.expires.is_some());
        let e = runtime
            .block_on(run("echo oops >&2; exit 3", Duration::from_secs(5)))
            .unwrap_err();
        assert!(
            e.why.contains("oops") && e.why.contains("exit status: 3"),
            "{e:?}"
        );
        assert!(!e.transient);
    }

    /// Whether a process runs whose command line is exactly `args`.
    fn running(args: &[&str]) -> bool {
        let wanted: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted))
    }

    /// A command that hangs is killed at the time limit, with everything it started.
    #[test]
    fn a_hanging_command_is_killed_with_its_children() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // The shell forks `sleep` (a second command follows), as a wrapper script would.
        let e = runtime
            .block_on(run("sleep 613; true", Duration::from_millis(300)))
            .unwrap_err();
        assert!(e.why.contains("did not finish") && e.transient, "{e:?}");
        let started = std::time::Instant::now();
        while running(&["sleep", "613"]) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "sleep 613 outlived the time-out"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
