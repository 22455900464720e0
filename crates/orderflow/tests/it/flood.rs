//! A flood of idle connections against the real binary: health stays reachable, and the
//! memory they took is given back once they close.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::net::TcpStream;

use crate::support::{self, Backend, binary};

/// Idle connections opened at once, none of which ever sends a byte.
const FLOOD: usize = 20_000;

/// Resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// Connections this process can open beside its other files, after raising its soft
/// open-file limit to the hard one.
fn room() -> usize {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let (soft, _) = rlimit::Resource::NOFILE.get().unwrap_or((1024, 1024));
    usize::try_from(soft.saturating_sub(256)).unwrap_or(usize::MAX)
}

/// The environment variable that makes [`hold_idle_connections`] a flood helper.
const HOLD_ADDR: &str = "ORDERFLOW_TEST_FLOOD_ADDR";

/// Opens `n` connections to `addr` that never send anything.
async fn open_idle(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut idle = Vec::with_capacity(n);
    for _ in 0..n {
        match TcpStream::connect(addr).await {
            Ok(c) => idle.push(c),
            Err(e) => panic!("connection {} of the flood failed: {e}", idle.len()),
        }
    }
    idle
}

/// Half of the flood, held by a second process: one process's open-file limit (20,000
/// here, and not raisable without privileges) cannot hold all of it beside its other
/// files. Run by the flood test with the server's address; does nothing otherwise.
#[tokio::test]
#[ignore = "a helper process of idle_connections_do_not_lock_out_health_and_memory_comes_back"]
async fn hold_idle_connections() {
    let Ok(addr) = std::env::var(HOLD_ADDR) else {
        return;
    };
    let idle = open_idle(&addr, (FLOOD / 2).min(room())).await;
    println!("HOLDING {}", idle.len());
    // Until the test closes our stdin.
    let mut rest = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut rest).await;
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_lock_out_health_and_memory_comes_back() {
    let Some((url, _db)) = support::database(Backend::Sqlite).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orderflow.toml"), "").unwrap();
    let server =
        binary::Server::start(&url, dir.path(), &support::fixtures().join("processes"), 0).await;
    let pid = server.pid();
    let addr = server.base.trim_start_matches("http://").to_owned();
    let before = rss_mib(pid);

    let mut helper = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "flood::hold_idle_connections",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(HOLD_ADDR, &addr)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the flood helper");
    let mut out = tokio::io::BufReader::new(helper.stdout.take().unwrap());
    let mut held = 0;
    let mut line = String::new();
    while tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line)
        .await
        .unwrap()
        > 0
    {
        if let Some(n) = line.trim().strip_prefix("HOLDING ") {
            held = n.split(' ').next().unwrap().parse::<usize>().unwrap();
            break;
        }
        line.clear();
    }
    assert!(held > 0, "the helper holds connections");
    let idle = open_idle(&addr, (FLOOD - held).min(room())).await;
    let flood = held + idle.len();
    if flood < FLOOD {
        // A machine with a low hard limit on open files (CI's is 20,000 a process).
        eprintln!("the open-file limit allows a flood of {flood} connections, not {FLOOD}");
    }
    let peak = rss_mib(pid);

    // The kernel completes connections before the server accepts them: let the server
    // work through its accept backlog (each accept at the limit closes the oldest idle
    // connection), then ask for health on a fresh connection with the flood held open.
    let health = || async {
        let http = reqwest::Client::new();
        let started = Instant::now();
        let got = tokio::time::timeout(
            Duration::from_secs(1),
            http.get(format!("{}/healthz", server.base)).send(),
        )
        .await;
        (got, started.elapsed())
    };
    let settle = Instant::now() + Duration::from_secs(60);
    while !matches!(health().await.0, Ok(Ok(_))) {
        assert!(
            Instant::now() < settle,
            "/healthz unreachable for 60 s under the flood"
        );
    }
    let (health, took) = health().await;
    let health = health
        .unwrap_or_else(|_| {
            panic!("/healthz did not answer within 1 s under {flood} idle connections")
        })
        .expect("/healthz");
    assert_eq!(health.status(), StatusCode::OK);

    drop(idle);
    drop(helper.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(30), helper.wait()).await;
    let mut after = rss_mib(pid);
    let deadline = Instant::now() + Duration::from_secs(15);
    while after >= 150 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = rss_mib(pid);
    }
    eprintln!(
        "flood of {flood}: /healthz in {took:?}; RSS {before} MiB before, {peak} MiB with the flood, {after} MiB after"
    );
    assert!(after < 150, "RSS {after} MiB after the flood closed");
    server.kill().await;
}
