//! `credential_process`: a command of the profile's that prints keys as JSON
//! (`Version` 1, `AccessKeyId`, `SecretAccessKey`, optional `SessionToken` and
//! `Expiration`). Run with `sh -c`, bounded by the request time limit.

use std::time::Duration;

use super::{Fetched, JsonKeys};

pub(crate) async fn run(command: &str, limit: Duration) -> Result<Fetched, String> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(limit, child)
        .await
        .map_err(|_| format!("credential_process {command:?} did not finish within {limit:?}"))?
        .map_err(|e| format!("cannot run credential_process {command:?}: {e}"))?;
    if !out.status.success() {
        // Its stderr may say why; its stdout may hold keys and is never shown.
        let why: String = String::from_utf8_lossy(&out.stderr)
            .chars()
            .take(200)
            .collect();
        return Err(format!(
            "credential_process {command:?} failed ({}): {}",
            out.status,
            why.trim()
        ));
    }
    JsonKeys::parse(&out.stdout, &format!("credential_process {command:?}"))
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
        assert!(e.contains("oops") && e.contains("exit status: 3"), "{e}");
        let e = runtime
            .block_on(run("sleep 5", Duration::from_millis(200)))
            .unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
    }
}
