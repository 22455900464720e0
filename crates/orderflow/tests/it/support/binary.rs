//! The real `orderflow` binary as an operator runs it: `clients create`, and `serve` in its
//! own process, which a test can kill with SIGKILL.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// `orderflow clients create NAME --role ROLE --json`: the token.
pub(crate) async fn create_client(url: &str, dir: &Path, name: &str, role: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args([
            "clients",
            "create",
            name,
            "--role",
            role,
            "--json",
            "--database-url",
            url,
        ])
        .current_dir(dir)
        .output()
        .await
        .expect("orderflow clients create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v["token"].as_str().expect("token").to_owned()
}

/// `orderflow serve` on a free port, in `dir` with the configuration `dir/orderflow.toml`;
/// its log goes to `server-<generation>.log` in `dir`.
pub(crate) struct Server {
    child: Child,
    pub base: String,
    log: PathBuf,
}

impl Server {
    pub(crate) async fn start(
        url: &str,
        dir: &Path,
        processes: &Path,
        generation: usize,
    ) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_orderflow"))
            .arg("--log-format=json")
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--database-url", url])
            .arg("--processes")
            .arg(processes)
            .arg("--config")
            .arg(dir.join("orderflow.toml"))
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start orderflow serve");
        let log = dir.join(format!("server-{generation}.log"));
        let addr = listening_addr(child.stderr.take().expect("stderr"), log.clone());
        let addr = tokio::time::timeout(Duration::from_secs(60), addr)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("server did not start:\n{}", read(&log)));
        let base = format!("http://{addr}");
        let http = reqwest::Client::new();
        super::eventually(Duration::from_secs(30), "server ready", || async {
            let r = http.get(format!("{base}/readyz")).send().await.ok()?;
            (r.status() == StatusCode::OK).then_some(())
        })
        .await;
        Server { child, base, log }
    }

    /// The last `lines` lines of the server's log, warnings and errors only: what a failed
    /// test shows of the server.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let text = read(&self.log);
        let notable: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(r#""level":"WARN""#) || l.contains(r#""level":"ERROR""#))
            .collect();
        notable[notable.len().saturating_sub(lines)..].join("\n")
    }

    /// Every JSON line the server has logged so far.
    pub(crate) fn log_lines(&self) -> Vec<Value> {
        read(&self.log)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }

    /// SIGKILL: no shutdown, no flush, no lease released.
    pub(crate) async fn kill(mut self) {
        self.child.kill().await.expect("kill orderflow");
    }
}

/// Copies the server's JSON log lines to `log` and returns the address from its
/// "orderflow serving" line (`None` if the server exits first).
async fn listening_addr(stderr: tokio::process::ChildStderr, log: PathBuf) -> Option<String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut file = tokio::fs::File::create(&log).await.expect("log file");
        let mut lines = BufReader::new(stderr).lines();
        let mut tx = Some(tx);
        while let Ok(Some(line)) = lines.next_line().await {
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            if v["fields"]["message"] == "orderflow serving"
                && let (Some(tx), Some(addr)) = (tx.take(), v["fields"]["addr"].as_str())
            {
                let _ = tx.send(addr.to_owned());
            }
            let _ = file.write_all(format!("{line}\n").as_bytes()).await;
            let _ = file.flush().await;
        }
    });
    rx.await.ok()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
