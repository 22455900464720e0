//! A real server on port 0 against a fresh database (SQLite temp file or a new PostgreSQL
//! database), with one client per role. [`binary`]: the real binary in its own process.

pub(crate) mod binary;
pub(crate) mod receiver;
pub(crate) mod webhook_receiver;

use std::future::Future;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use oms::Registry;
use orderflow::config::Config;
use orderflow::domain::types::Role;
use orderflow::domain::types::{OrderReference, Quantity, Sku};
use orderflow::domain::{NewItemInput, NewOrderInput, OrderService, ProcessSet};
use orderflow::store::Store;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
    /// PostgreSQL with the RabbitMQ inbox transport (queues of the test's own prefix).
    RabbitPostgres,
    /// PostgreSQL with the Redis inbox transport (keys of the test's own prefix).
    RedisPostgres,
}

impl Backend {
    /// Updates go through a broker (RabbitMQ or Redis) before the database has them.
    pub(crate) fn is_broker(self) -> bool {
        matches!(self, Self::RabbitPostgres | Self::RedisPostgres)
    }
}

/// The Redis of the Redis tests (the service on this machine and in CI, without
/// persistence: the tests accept that loss, `transit_redis.rs` starts its own Redis with
/// `appendfsync always` where durability matters).
pub(crate) const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// What the tests on the shared, unpersisted Redis accept.
pub(crate) const TEST_ACCEPT_LOSS: &str = "tests: the shared test Redis has no persistence";

/// A test's Redis keys (`<prefix>:*`); dropping it deletes them.
pub(crate) struct RedisKeys {
    pub url: String,
    pub prefix: String,
}

impl RedisKeys {
    pub(crate) fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            prefix: format!("orderflow_test_{:016x}", rand::random::<u64>()),
        }
    }
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        let (url, pattern) = (self.url.clone(), format!("{}:*", self.prefix));
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    let Ok(client) = redis::Client::open(url.as_str()) else {
                        return;
                    };
                    let Ok(mut con) = client.get_multiplexed_async_connection().await else {
                        return;
                    };
                    let keys: Vec<String> = redis::cmd("KEYS")
                        .arg(&pattern)
                        .query_async(&mut con)
                        .await
                        .unwrap_or_default();
                    if !keys.is_empty() {
                        let _: Result<i64, _> =
                            redis::cmd("DEL").arg(&keys).query_async(&mut con).await;
                    }
                });
            }
        })
        .join();
    }
}

/// The broker of the RabbitMQ tests (the service on this machine and in CI).
pub(crate) const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Generates `<name>::sqlite`, `<name>::postgres`, `<name>::rabbitmq` (the RabbitMQ
/// transport on PostgreSQL) and `<name>::redis` (the Redis transport on PostgreSQL) tests
/// from `async fn <name>(Backend)`.
macro_rules! transport_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(orderflow_no_test_postgres, ignore = "PostgreSQL: set ORDERFLOW_TEST_DATABASE_URL to run it")]
            async fn postgres() {
                super::$name($crate::support::Backend::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(orderflow_no_test_postgres, ignore = "PostgreSQL: set ORDERFLOW_TEST_DATABASE_URL to run it")]
            async fn rabbitmq() {
                super::$name($crate::support::Backend::RabbitPostgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(orderflow_no_test_postgres, ignore = "PostgreSQL: set ORDERFLOW_TEST_DATABASE_URL to run it")]
            async fn redis() {
                super::$name($crate::support::Backend::RedisPostgres).await
            }
        }
    )*};
}
pub(crate) use transport_tests;

/// Generates `<name>::sqlite` and `<name>::postgres` tests from `async fn <name>(Backend)`.
/// Without `ORDERFLOW_TEST_DATABASE_URL` (outside CI) the PostgreSQL ones are built as
/// ignored (see `build.rs`): `cargo test` lists each as "ignored, PostgreSQL: set
/// ORDERFLOW_TEST_DATABASE_URL to run it" and counts them in its summary line.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(orderflow_no_test_postgres, ignore = "PostgreSQL: set ORDERFLOW_TEST_DATABASE_URL to run it")]
            async fn postgres() {
                super::$name($crate::support::Backend::Postgres).await
            }
        }
    )*};
}
pub(crate) use backend_tests;

/// Body limit of test servers, small so 413 is cheap to provoke.
pub(crate) const MAX_BODY: usize = 16 * 1024;

pub(crate) struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub admin: String,
    pub shop: String,
    pub erp: String,
    /// The server's store, for tests that change it behind the API's back.
    pub store: Store,
    /// The server's service, for driving background steps (with an injected clock).
    pub service: OrderService,
    /// The store's URL, for the command line against the same database.
    pub database_url: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The RabbitMQ queue prefix of this test, when it uses that transport.
    pub rabbit_prefix: Option<String>,
    _queues: Option<Queues>,
    /// The Redis keys of this test, when it uses that transport.
    _redis_keys: Option<RedisKeys>,
    _db: Db,
}

/// A test's RabbitMQ queues; dropping it deletes them.
pub(crate) struct Queues {
    pub prefix: String,
    pub shards: u16,
}

impl Drop for Queues {
    fn drop(&mut self) {
        let mut names: Vec<String> = (0..self.shards)
            .map(|n| format!("{}.shard.{n}", self.prefix))
            .collect();
        names.push(format!("{}.overdue", self.prefix));
        names.push(format!("{}.dead", self.prefix));
        let exchanges = [
            format!("{}.updates", self.prefix),
            format!("{}.overdue-exchange", self.prefix),
        ];
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
                    let Ok(c) = lapin::Connection::connect(
                        AMQP_URL,
                        lapin::ConnectionProperties::default(),
                    )
                    .await
                    else {
                        return;
                    };
                    if let Ok(ch) = c.create_channel().await {
                        for q in names {
                            let _ = ch
                                .queue_delete(q.into(), QueueDeleteOptions::default())
                                .await;
                        }
                        for x in exchanges {
                            let _ = ch
                                .exchange_delete(x.into(), ExchangeDeleteOptions::default())
                                .await;
                        }
                    }
                    let _ = c.close(200, "test done".into()).await;
                });
            }
        })
        .join();
    }
}

/// A test database; dropping it removes it (the temp folder, or the PostgreSQL database).
pub(crate) enum Db {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Db::Postgres { admin_url, name } = self {
            let (url, name) = (admin_url.clone(), name.clone());
            // Drop may run inside the test's runtime: use a thread with its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(mut c) = sqlx::PgConnection::connect(&url).await {
                            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                                .execute(&mut c)
                                .await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// A fresh database URL, or `None` when PostgreSQL is not configured outside CI.
pub(crate) async fn database(backend: Backend) -> Option<(String, Db)> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("orderflow.db").display());
            Some((url, Db::Sqlite(dir)))
        }
        Backend::Postgres | Backend::RabbitPostgres | Backend::RedisPostgres => {
            let Ok(admin_url) = std::env::var("ORDERFLOW_TEST_DATABASE_URL") else {
                if std::env::var_os("CI").is_some() {
                    panic!("ORDERFLOW_TEST_DATABASE_URL must be set in CI");
                }
                // Reached only when ignored tests are run on purpose (`--include-ignored`).
                // Straight to stderr: the test harness captures `eprintln!`.
                let name = std::thread::current().name().unwrap_or("?").to_owned();
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED {name}: set ORDERFLOW_TEST_DATABASE_URL \
                     (e.g. postgres://postgres@127.0.0.1:5432/test) to run it"
                );
                return None;
            };
            let name = format!("orderflow_test_{:016x}", rand::random::<u64>());
            let mut c = sqlx::PgConnection::connect(&admin_url)
                .await
                .expect("connect to ORDERFLOW_TEST_DATABASE_URL");
            let sql = format!("CREATE DATABASE {name}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .expect("create db");
            let (base, _) = admin_url
                .rsplit_once('/')
                .expect("URL with a database name");
            let url = format!("{base}/{name}");
            Some((url, Db::Postgres { admin_url, name }))
        }
    }
}

/// Configuration for the fixture processes on `url`, with `Test/Stamp` (the command of
/// Test01's onEnter event `start`) bound.
pub(crate) fn test_config(url: &str) -> Config {
    let mut config = Config {
        database_url: url.to_owned(),
        ..Config::default()
    };
    config.commands.insert(
        "Test/Stamp".into(),
        serde_json::from_value(
            json!({"type": "set_attributes", "scope": "order", "values": {"stamped": true}}),
        )
        .unwrap(),
    );
    config
}

/// A new order `reference` of `process` with one item, `SKU-1` × 1.
pub(crate) fn one_item_order(reference: &str, process: &str) -> NewOrderInput {
    NewOrderInput {
        reference: OrderReference::parse(reference).unwrap(),
        process: process.into(),
        currency: None,
        attributes: Map::new(),
        items: vec![NewItemInput {
            sku: Sku::parse("SKU-1").unwrap(),
            quantity: Quantity::parse(1).unwrap(),
            unit_price: None,
            attributes: Map::new(),
        }],
    }
}

pub(crate) fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixtures"))
}

/// The fixture processes under `config`, with the test's own plugins in `registry`.
pub(crate) fn fixture_processes(config: &Config, registry: Registry) -> ProcessSet {
    ProcessSet::load_with_options(
        &fixtures().join("processes"),
        &config.bindings(),
        registry,
        &config.load_options(),
    )
    .expect("processes")
}

/// Starts a server; `None` means the backend is skipped (message printed).
pub(crate) async fn start(backend: Backend) -> Option<TestServer> {
    start_with(backend, |_| {}).await
}

/// Like [`start`], after `configure` has changed the test configuration (e.g. client rate
/// limits). The clients are `admin`, `shop` and `erp`.
pub(crate) async fn start_with(
    backend: Backend,
    configure: impl FnOnce(&mut Config),
) -> Option<TestServer> {
    start_with_plugins(backend, configure, Registry::new()).await
}

/// Like [`start_with`], with the test's own conditions and commands in `registry` (as an
/// embedder registers them), e.g. a command that fails while a flag is set.
pub(crate) async fn start_with_plugins(
    backend: Backend,
    configure: impl FnOnce(&mut Config),
    registry: Registry,
) -> Option<TestServer> {
    let (url, db) = database(backend).await?;
    let mut config = Config {
        max_body_bytes: MAX_BODY,
        ..test_config(&url)
    };
    config.commands.insert(
        "Test/EmitShip".into(),
        serde_json::from_value(json!({"type": "emit_event", "event": "ship"})).unwrap(),
    );
    config.conditions.insert(
        "Test/Approved".into(),
        serde_json::from_value(json!({"type": "attribute", "path": "approved"})).unwrap(),
    );
    let queues = matches!(backend, Backend::RabbitPostgres).then(|| {
        let prefix = format!("orderflow_test_{:016x}", rand::random::<u64>());
        config.inbox.transport = orderflow::config::TransportKind::Rabbitmq;
        config.inbox.rabbitmq.url = AMQP_URL.into();
        config.inbox.rabbitmq.prefix = prefix.clone();
        config.inbox.rabbitmq.shards = 2;
        Queues { prefix, shards: 2 }
    });
    let redis_keys = matches!(backend, Backend::RedisPostgres).then(|| {
        let keys = RedisKeys::new(REDIS_URL);
        config.inbox.transport = orderflow::config::TransportKind::Redis;
        config.inbox.redis.url = REDIS_URL.into();
        config.inbox.redis.prefix = keys.prefix.clone();
        config.inbox.redis.shards = 2;
        config.inbox.redis.accept_loss = Some(TEST_ACCEPT_LOSS.into());
        keys
    });
    configure(&mut config);
    let mut queues = queues;
    if let Some(q) = &mut queues {
        q.shards = config.inbox.rabbitmq.shards;
    }
    let processes = fixture_processes(&config, registry);
    let store = Store::open(&url).await.expect("open store");
    let mut tokens = Vec::new();
    for (name, role) in [
        ("admin", Role::Admin),
        ("shop", Role::Shop),
        ("erp", Role::Erp),
    ] {
        let c = orderflow::auth::create_client(&store, name, role, false)
            .await
            .unwrap();
        tokens.push(c.token);
    }
    let service = OrderService::new(store.clone(), std::sync::Arc::new(processes));
    let server_service = service.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task =
        tokio::spawn(
            async move { orderflow::app::run(server_service, listener, &config, token).await },
        );
    let mut tokens = tokens.into_iter();
    Some(TestServer {
        base,
        http: reqwest::Client::new(),
        admin: tokens.next().unwrap(),
        shop: tokens.next().unwrap(),
        erp: tokens.next().unwrap(),
        store,
        service,
        database_url: url,
        shutdown,
        task,
        rabbit_prefix: queues.as_ref().map(|q| q.prefix.clone()),
        _queues: queues,
        _redis_keys: redis_keys,
        _db: db,
    })
}

impl TestServer {
    /// Sends JSON (when `body` is given) with a bearer token; returns status and JSON body.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// Runs `sql` on the server's database behind the API's back (to plant what the API
    /// would refuse).
    pub(crate) async fn execute_sql(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if self.database_url.starts_with("postgres") {
            let mut c = sqlx::PgConnection::connect(&self.database_url)
                .await
                .unwrap();
            sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        } else {
            let mut c = sqlx::SqliteConnection::connect(&self.database_url)
                .await
                .unwrap();
            sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        }
    }

    /// The rows of `table` in the server's database, counted behind the API's back.
    pub(crate) async fn count_rows(&self, table: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
        if self.database_url.starts_with("postgres") {
            let mut c = sqlx::PgConnection::connect(&self.database_url)
                .await
                .unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
        } else {
            let mut c = sqlx::SqliteConnection::connect(&self.database_url)
                .await
                .unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
        }
    }

    /// The text body of an unauthenticated `GET path` (`/metrics`, `/docs/`).
    pub(crate) async fn text(&self, path: &str) -> String {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await;
        resp.expect("request").text().await.expect("text body")
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    pub(crate) async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub(crate) async fn patch(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, token, Some(body)).await
    }

    /// Creates an order of process Test01 with the given (sku, quantity) items.
    pub(crate) async fn create_order(&self, reference: &str, items: &[(&str, i64)]) -> Value {
        let items: Vec<Value> = items
            .iter()
            .map(|(sku, q)| json!({"sku": sku, "quantity": q}))
            .collect();
        let body = json!({"reference": reference, "process": "Test01", "currency": "EUR",
            "items": items});
        let (status, order) = self.post("/v1/orders", &self.shop, body).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        order
    }

    /// The shop's event `event` on the order `id`, answered `200 OK`: the answer.
    pub(crate) async fn event(&self, id: &Value, event: &str) -> Value {
        let path = format!("/v1/orders/{id}/events");
        let (status, r) = self.post(&path, &self.shop, json!({"event": event})).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        r
    }

    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        result
            .expect("server stops within 10 s")
            .expect("join")
            .expect("server result");
    }
}

impl TestServer {
    /// `POST /v1/erp/order-updates` as the ERP client with extra `headers`: the status and
    /// the JSON body.
    pub(crate) async fn post_update(
        &self,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/erp/order-updates", self.base))
            .bearer_auth(&self.erp)
            .json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let code = resp.status();
        (code, resp.json().await.unwrap())
    }

    /// Waits (at most `within`) until the ERP update `id` has `status`; its JSON.
    pub(crate) async fn until_update_status(
        &self,
        id: &str,
        status: &str,
        within: Duration,
    ) -> Value {
        eventually(within, status, || async {
            let (code, v) = self
                .get(&format!("/v1/erp/order-updates/{id}"), &self.erp)
                .await;
            assert_eq!(code, StatusCode::OK, "{v}");
            (v["status"] == status).then_some(v)
        })
        .await
    }
}

/// Whether the Redis the transport tests use (`127.0.0.1:6379`, `.ci/run` starts it) and a
/// `redis-server` binary (for servers of a test's own) are here. Outside CI their absence
/// skips the test loudly, as a missing corpus does; in CI it fails. The PostgreSQL-backed
/// transport tests need `ORDERFLOW_TEST_DATABASE_URL` anyway.
pub(crate) fn redis_here() -> bool {
    let up = std::net::TcpStream::connect("127.0.0.1:6379").is_ok()
        && std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !up {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs Redis on 127.0.0.1:6379 and redis-server (.ci/run starts it)"
        );
        // Straight to stderr: the test harness captures `eprintln!` of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: no Redis on 127.0.0.1:6379 or no redis-server; the Redis transport test did not run"
        );
    }
    up
}

/// Polls `check` until it returns `Some`, failing after `within`.
pub(crate) async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
