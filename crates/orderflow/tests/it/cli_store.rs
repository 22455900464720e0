//! `orderflow migrate | clients create | config`, run as a user would: the real binary.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn orderflow(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderflow"));
    cmd.args(args).current_dir(dir);
    // The test's own environment must not leak configuration into the child.
    for (k, _) in std::env::vars() {
        if k.starts_with("ORDERFLOW_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run orderflow")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn migrate_then_create_clients() {
    let dir = tempfile::tempdir().unwrap();
    let out = orderflow(dir.path(), &["migrate"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        dir.path().join("orderflow.db").exists(),
        "default store is ./orderflow.db"
    );

    let args = [
        "clients",
        "create",
        "erp-sap",
        "--role",
        "erp",
        "--signing-secret",
        "--json",
    ];
    let out = orderflow(dir.path(), &args, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["name"], "erp-sap");
    assert_eq!(v["role"], "erp");
    assert!(v["token"].as_str().unwrap().starts_with("of_"));
    assert!(v["signing_secret"].as_str().unwrap().starts_with("whsec_"));
    let token = v["token"].as_str().unwrap().to_owned();
    // The token is stored only as a hash.
    let db = std::fs::read(dir.path().join("orderflow.db")).unwrap();
    let wal = std::fs::read(dir.path().join("orderflow.db-wal")).unwrap_or_default();
    let needle = token.as_bytes();
    assert!(!db.windows(needle.len()).any(|w| w == needle));
    assert!(!wal.windows(needle.len()).any(|w| w == needle));

    let out = orderflow(dir.path(), &args, &[]);
    assert!(
        !out.status.success(),
        "a second client with the same name is refused"
    );
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("erp-sap"),
        "{err}"
    );
    let out = orderflow(
        dir.path(),
        &["clients", "create", "x", "--role", "root"],
        &[],
    );
    assert!(!out.status.success());
}

/// `--reissue` makes `clients create` repeatable (a tutorial run twice): the client gets a
/// new token, the old one stops matching, and the role cannot change.
#[tokio::test]
async fn reissue_replaces_the_token_of_a_client() {
    let dir = tempfile::tempdir().unwrap();
    let create = |extra: &[&str]| {
        let mut args = vec!["clients", "create", "shop-web", "--role", "shop", "--json"];
        args.extend_from_slice(extra);
        orderflow(dir.path(), &args, &[])
    };
    let token = |out: &Output| -> String {
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        v["token"].as_str().unwrap().to_owned()
    };
    let first = token(&create(&["--reissue"]));
    let second = token(&create(&["--reissue"]));
    assert_ne!(first, second, "a new token each time");
    let url = format!("sqlite://{}", dir.path().join("orderflow.db").display());
    let store = orderflow::store::Store::open(&url).await.unwrap();
    let client = |t: String| {
        let store = store.clone();
        async move {
            let hash = orderflow::auth::hash_token(&t);
            store.client_by_token_hash(&hash).await.unwrap()
        }
    };
    assert!(
        client(first).await.is_none(),
        "the old token no longer matches"
    );
    let found = client(second).await.expect("the new token matches");
    assert_eq!(
        (found.name.as_str(), found.role.as_str()),
        ("shop-web", "shop")
    );
    store.close().await;

    // Without --reissue an existing name is still an error, and it says what to do.
    let out = create(&[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("shop-web") && err.contains("--reissue"),
        "{err}"
    );

    let out = orderflow(
        dir.path(),
        &[
            "clients",
            "create",
            "shop-web",
            "--role",
            "admin",
            "--reissue",
        ],
        &[],
    );
    assert!(!out.status.success(), "--reissue keeps the role");
    let err = text(&out.stderr);
    assert!(err.contains("has role shop"), "{err}");

    let out = orderflow(
        dir.path(),
        &[
            "clients",
            "create",
            "shop-web",
            "--role",
            "shop",
            "--reissue",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("reissued client shop-web with role shop"));
}

#[test]
fn config_prints_effective_values_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("orderflow.toml"),
        "[worker]\nbatch_size = 7\n",
    )
    .unwrap();
    let env = [
        (
            "ORDERFLOW_DATABASE_URL",
            "postgres://app:hunter2@db.internal:5432/of",
        ),
        ("ORDERFLOW_ERP__DEFAULT_MODE", "wait"),
    ];
    let out = orderflow(dir.path(), &["config"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(!printed.contains("hunter2"), "{printed}");
    let v: toml::Value = toml::from_str(&printed).expect("TOML");
    assert_eq!(
        v["database_url"].as_str(),
        Some("postgres://app:****@db.internal:5432/of")
    );
    assert_eq!(v["erp"]["default_mode"].as_str(), Some("wait"));
    assert_eq!(v["worker"]["batch_size"].as_integer(), Some(7));
    assert_eq!(v["listen"].as_str(), Some("127.0.0.1:8080"));

    let out = orderflow(
        dir.path(),
        &["config", "--database-url", "sqlite://x.db"],
        &env,
    );
    let v: toml::Value = toml::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(
        v["database_url"].as_str(),
        Some("sqlite://x.db"),
        "flag beats env"
    );

    // Without a batch size, each database gets its own default.
    std::fs::write(dir.path().join("empty.toml"), "").unwrap();
    for (url, size) in [("sqlite://x.db", 500), ("postgres://db.internal/of", 100)] {
        let out = orderflow(
            dir.path(),
            &["config", "--config", "empty.toml", "--database-url", url],
            &[],
        );
        let v: toml::Value = toml::from_str(&text(&out.stdout)).unwrap();
        assert_eq!(v["worker"]["batch_size"].as_integer(), Some(size), "{url}");
    }

    std::fs::write(dir.path().join("bad.toml"), "[worker]\nbatch_sise = 7\n").unwrap();
    let out = orderflow(dir.path(), &["config", "--config", "bad.toml"], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("batch_sise"),
        "{}",
        text(&out.stderr)
    );
    let out = orderflow(dir.path(), &["config", "--config", "missing.toml"], &[]);
    assert!(!out.status.success());
}

/// The one line a start-up failure prints: `error: ...`, fast, each cause once.
fn start_error(dir: &Path, url: &str) -> String {
    let started = std::time::Instant::now();
    let out = orderflow(dir, &["migrate", "--database-url", url], &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "took {:?}: {err}",
        started.elapsed()
    );
    let line = err.lines().last().unwrap_or_default().to_owned();
    assert!(line.starts_with("error: "), "{err}");
    line
}

#[test]
fn database_errors_at_start_are_one_clear_sentence() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1.
    let refused = start_error(dir.path(), "postgres://postgres@127.0.0.1:1/test");
    assert_eq!(
        refused,
        "error: cannot connect to PostgreSQL at 127.0.0.1:1: connection refused"
    );
    let missing = dir.path().join("no-such-folder").join("x.db");
    let sqlite = start_error(dir.path(), &format!("sqlite://{}", missing.display()));
    assert!(
        sqlite.contains("cannot open the SQLite database"),
        "{sqlite}"
    );
    assert_eq!(
        sqlite.matches("unable to open database file").count(),
        1,
        "{sqlite}"
    );
}

#[test]
fn unknown_configuration_keys_are_errors_that_say_where() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("orderflow.toml"),
        "[inbox]\ntransport = \"rabbitmq\"\n[inbox.rabbitmq]\nqueue = \"x\"\n",
    )
    .unwrap();
    let out = orderflow(dir.path(), &["config"], &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("`queue`") && err.contains("inbox.rabbitmq") && err.contains("orderflow.toml"),
        "{err}"
    );
    // A Redis transport with a setting out of range is refused with its key.
    std::fs::write(
        dir.path().join("orderflow.toml"),
        "[inbox]\ntransport = \"redis\"\n[inbox.redis]\nshards = 0\n",
    )
    .unwrap();
    let out = orderflow(dir.path(), &["config"], &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("inbox.redis.shards"), "{err}");
    // `--inbox-url redis://` chooses Redis; `config` masks its password.
    std::fs::remove_file(dir.path().join("orderflow.toml")).unwrap();
    let out = orderflow(
        dir.path(),
        &["config", "--inbox-url", "redis://:r3dispw@cache:6379/1"],
        &[],
    );
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(shown.contains("transport = \"redis\""), "{shown}");
    assert!(
        shown.contains("redis://:****@cache:6379/1") && !shown.contains("r3dispw"),
        "{shown}"
    );
    // `--inbox-url` chooses RabbitMQ; `config` masks its password.
    let out = orderflow(
        dir.path(),
        &["config", "--inbox-url", "amqp://app:s3cret@mq:5672/%2f"],
        &[],
    );
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(shown.contains("transport = \"rabbitmq\""), "{shown}");
    assert!(
        shown.contains("amqp://app:****@mq:5672/%2f") && !shown.contains("s3cret"),
        "{shown}"
    );
    std::fs::write(dir.path().join("orderflow.toml"), "").unwrap();

    std::fs::remove_file(dir.path().join("orderflow.toml")).unwrap();
    let out = orderflow(dir.path(), &["config"], &[("ORDERFLOW_WORKR__LEASE", "5s")]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("WORKR") && err.contains("ORDERFLOW_"), "{err}");
    // The tests' own variables are not configuration.
    let out = orderflow(dir.path(), &["config"], &[("ORDERFLOW_CORPUS_DIR", "x")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn http_commands_are_checked_and_their_headers_masked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("orderflow.toml"),
        "[commands.\"Payment/Capture\"]\ntype = \"http\"\nurl = \"https://psp.example/capture\"\n\
         headers = { Authorization = \"Bearer hunter2\" }\non_failure = \"capture failed\"\n",
    )
    .unwrap();
    let out = orderflow(dir.path(), &["config"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(!printed.contains("hunter2"), "{printed}");
    let v: toml::Value = toml::from_str(&printed).expect("TOML");
    let capture = &v["commands"]["Payment/Capture"];
    assert_eq!(capture["headers"]["Authorization"].as_str(), Some("****"));
    assert_eq!(capture["method"].as_str(), Some("POST"));

    std::fs::write(
        dir.path().join("bad.toml"),
        "[commands.\"Payment/Capture\"]\ntype = \"http\"\nurl = \"file:///etc/passwd\"\n",
    )
    .unwrap();
    let out = orderflow(dir.path(), &["config", "--config", "bad.toml"], &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("commands.\"Payment/Capture\".url") && err.contains("http or https"),
        "{err}"
    );
}
