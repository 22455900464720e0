//! Starts the real `orderflow` binary on a free loopback port against a fresh database,
//! the way an operator would, so benchmarks measure what users run.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub(crate) struct Server {
    child: Child,
    pub base: String,
    pub dir: PathBuf,
    pub database_url: String,
    binary: PathBuf,
}

/// The release binary next to this benchmark's own executable.
pub(crate) fn default_binary() -> PathBuf {
    let me = std::env::current_exe().unwrap_or_default();
    me.with_file_name("orderflow")
}

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The repository's `orderflow.toml` (the bindings of the example processes).
pub(crate) fn default_config() -> PathBuf {
    repo_root().join("orderflow.toml")
}

impl Server {
    /// Starts `orderflow serve` in a new temporary folder with the process definitions in
    /// `processes` and the configuration file `config` (see [`default_config`]).
    /// `database_url` defaults to a SQLite file in that folder.
    pub(crate) fn start_with(
        binary: &Path,
        database_url: Option<&str>,
        processes: &Path,
        config: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        if !binary.exists() {
            bail!(
                "{} not found: build it with `cargo build --release`",
                binary.display()
            );
        }
        let dir = std::env::temp_dir().join(format!(
            "orderflow-bench-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir)?;
        let database_url = database_url
            .map(str::to_owned)
            .unwrap_or_else(|| format!("sqlite://{}", dir.join("orderflow.db").display()));
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut args = vec![
            "serve".to_owned(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--database-url".into(),
            database_url.clone(),
            "--processes".into(),
            processes.display().to_string(),
            "--config".into(),
            config.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(binary)
            .args(&args)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.join("server.log"))?))
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
            database_url,
            binary: binary.to_owned(),
        };
        server.wait_ready(Duration::from_secs(30))?;
        Ok(server)
    }

    fn wait_ready(&self, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let url = format!("{}/readyz", self.base);
        while start.elapsed() < limit {
            if let Ok(r) = reqwest::blocking_get(&url)
                && r
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "server not ready after {limit:?}; see {}",
            self.dir.join("server.log").display()
        )
    }

    /// `orderflow ARGS --database-url URL` on the server's database; its standard output,
    /// or an error with its standard error.
    pub(crate) fn cli(&self, args: &[&str]) -> anyhow::Result<Vec<u8>> {
        let out = self
            .command()
            .args(args)
            .args(["--database-url", &self.database_url])
            .output()?;
        if !out.status.success() {
            bail!(
                "{} failed: {}",
                args.iter().take(2).copied().collect::<Vec<_>>().join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out.stdout)
    }

    /// `orderflow clients create NAME --role ROLE --reissue --json`; returns the token. With
    /// `--reissue` a benchmark can run again on a database given to it (`--database-url`),
    /// where its clients already exist.
    pub(crate) fn create_client(&self, name: &str, role: &str) -> anyhow::Result<String> {
        let out = self.cli(&[
            "clients",
            "create",
            name,
            "--role",
            role,
            "--reissue",
            "--json",
        ])?;
        let v: serde_json::Value = serde_json::from_slice(&out)?;
        v["token"]
            .as_str()
            .map(str::to_owned)
            .context("no token in clients create output")
    }
}

impl Server {
    /// Stops the server with SIGTERM, as an operator would, and waits for it; the folder
    /// (and a SQLite database in it) stays until the server is dropped.
    pub(crate) fn terminate(&mut self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let status = self.child.wait()?;
        if !status.success() {
            bail!("server exited with {status}");
        }
        Ok(())
    }

    /// A command running the same `orderflow` binary in the server's folder.
    /// The server's resident memory now and at its peak (`VmRSS`, `VmHWM`), in MiB (Linux;
    /// `None` elsewhere).
    pub(crate) fn memory(&self) -> Option<(f64, f64)> {
        crate::machine::memory_of(self.child.id())
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.current_dir(&self.dir);
        cmd
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// The configuration of one transport's server; a broker's queues or streams (named by a
/// prefix of this run) are deleted on drop.
pub(crate) struct Transport {
    pub(crate) name: &'static str,
    /// The broker's URL, for `--inbox-url` (`None`: the database).
    pub(crate) url: Option<String>,
    prefix: String,
    config: tempfile::TempDir,
}

impl Transport {
    /// `inbox`: `database`, `amqp://...` or `redis://...`.
    pub(crate) fn new(inbox: &str) -> anyhow::Result<Self> {
        let name = match inbox {
            "database" => "database",
            u if u.starts_with("amqp") => "rabbitmq",
            u if u.starts_with("redis") => "redis",
            other => bail!("--inbox {other}: database, amqp://... or redis://..."),
        };
        let prefix = format!("bench-{}-{name}", std::process::id());
        let config = tempfile::tempdir()?;
        let mut toml = std::fs::read_to_string(crate::server::default_config())?;
        // The database transport runs the default configuration as it is, so a build from
        // before the transports existed (which refuses their sections) runs it too, for
        // before/after figures.
        if name != "database" {
            toml.push_str(&format!(
                "\n[inbox.rabbitmq]\nprefix = \"{prefix}\"\n\n[inbox.redis]\nprefix = \"{prefix}\"\n\
                 accept_loss = \"a benchmark on a Redis without persistence\"\n"
            ));
        }
        std::fs::write(config.path().join("orderflow.toml"), toml)?;
        Ok(Self {
            name,
            url: (name != "database").then(|| inbox.to_owned()),
            prefix,
            config,
        })
    }
}

impl Transport {
    /// The configuration file of its servers and workers.
    pub(crate) fn config(&self) -> PathBuf {
        self.config.path().join("orderflow.toml")
    }

    /// `--inbox-url URL` for a broker, nothing for the database.
    pub(crate) fn args(&self) -> Vec<&str> {
        match &self.url {
            Some(url) => vec!["--inbox-url", url],
            None => Vec::new(),
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        let url = self.url.clone().unwrap_or_default();
        match self.name {
            "rabbitmq" => {
                let listed = Command::new("rabbitmqctl")
                    .args(["-q", "list_queues", "name"])
                    .output();
                if let Ok(out) = listed {
                    for q in String::from_utf8_lossy(&out.stdout).lines() {
                        if q.starts_with(&self.prefix) {
                            let _ = Command::new("rabbitmqctl")
                                .args(["-q", "delete_queue", q])
                                .output();
                        }
                    }
                }
            }
            "redis" => {
                let pattern = format!("{}:*", self.prefix);
                let keys = Command::new("redis-cli")
                    .args(["-u", &url, "--scan", "--pattern", &pattern])
                    .output();
                if let Ok(out) = keys {
                    for k in String::from_utf8_lossy(&out.stdout).lines() {
                        let _ = Command::new("redis-cli")
                            .args(["-u", &url, "del", k])
                            .output();
                    }
                }
            }
            _ => {}
        }
    }
}

mod reqwest {
    //! A tiny blocking readiness probe without pulling reqwest's blocking feature.
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    pub(super) fn blocking_get(url: &str) -> std::io::Result<bool> {
        let rest = url.trim_start_matches("http://");
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut s = TcpStream::connect(host)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            s,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf.starts_with("HTTP/1.1 200"))
    }
}

/// The value of the unlabelled series `name` on the server's `/metrics` (`None`: not there
/// yet, or the server did not answer).
pub(crate) async fn metric(base: &str, name: &str) -> Option<f64> {
    series(&metrics(base).await?, name)
}

/// The server's `/metrics` text (`None`: the server did not answer).
pub(crate) async fn metrics(base: &str) -> Option<String> {
    ::reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The value of the unlabelled series `name` in a `/metrics` text.
pub(crate) fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
}
