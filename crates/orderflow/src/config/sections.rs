//! The sections of [`super::Config`], each field with its meaning and default. Durations
//! are written as text (`250ms`, `30s`, `10m`, `72h`, `7d`) and held as [`Duration`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// `[server]`: what one client, or many, may hold of the HTTP server.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Open connections at most (also kept below the process's open-file limit). At the
    /// limit a new connection closes the oldest idle one; when none is idle, it is closed.
    /// Default 2048.
    pub max_connections: usize,
    /// A request head must be complete this long after the connection starts waiting for
    /// it (slow or partial headers are cut off). Default `10s`.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// A request body must be read completely within this (408 `body_timeout`). Default
    /// `30s`.
    #[serde(with = "duration")]
    pub body_read_timeout: Duration,
    /// A connection with no request in flight is closed after this. Default `5s`.
    #[serde(with = "duration")]
    pub keep_alive_timeout: Duration,
    /// A request is answered within this (503 `timeout`), except in ERP wait mode, whose
    /// own deadline (`Prefer: wait=N`, at most 60 s) applies. Default `30s`.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 2048,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// How an ERP update is answered when the request does not say (`Prefer`).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErpMode {
    /// 202 as soon as the update is stored.
    Async,
    /// Process inline and answer with the outcome, within `default_wait_seconds`.
    Wait,
}

/// `[erp]`: the ERP inbox's API.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErpConfig {
    /// Mode of a request without `Prefer: respond-async` or `Prefer: wait=N`. Default
    /// `async`.
    pub default_mode: ErpMode,
    /// Wait time of wait mode without `Prefer: wait=N`, in seconds (at most 60); also the
    /// least time a repeated idempotency key waits for the first request's answer.
    /// Default 5.
    pub default_wait_seconds: u64,
    /// Updates in one batch request at most (422 above). Default 1000.
    pub max_batch: usize,
    /// How long settled updates, and so their idempotency keys, are kept. Default `7d`.
    #[serde(with = "duration")]
    pub idempotency_retention: Duration,
}

impl Default for ErpConfig {
    fn default() -> Self {
        Self {
            default_mode: ErpMode::Async,
            default_wait_seconds: 5,
            max_batch: 1000,
            idempotency_retention: Duration::from_secs(7 * 86_400),
        }
    }
}

/// What to do with an ERP update whose event does not apply to the order now.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum EventPolicy {
    /// Keep it (`parked`) and try again when the order changes, until `park_ttl`.
    #[default]
    Park,
    /// Settle it as `ignored`.
    Ignore,
    /// Settle it as `rejected`.
    Reject,
}

/// `[events."ship"]`: the policy of one OMS event name.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventConfig {
    /// Default `park`.
    pub policy: EventPolicy,
    /// A parked update goes `dead` after this. Default `72h`.
    #[serde(with = "duration")]
    pub park_ttl: Duration,
}

impl Default for EventConfig {
    fn default() -> Self {
        Self {
            policy: EventPolicy::Park,
            park_ttl: Duration::from_secs(72 * 3600),
        }
    }
}

/// `[worker]`: the inbox worker and the check-condition loop.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// `serve` runs the inbox worker and check-condition loop in its process (`--no-worker`
    /// turns this off, for a fleet of separate `orderflow worker` processes). Default
    /// true.
    pub in_process: bool,
    /// Updates claimed per batch (at most one per order). Default 100 on PostgreSQL, 500 on
    /// SQLite ([`WorkerConfig::batch_size`]).
    pub batch_size: Option<u32>,
    /// Batches a worker process has in flight at once on PostgreSQL, each claimed and
    /// processed by a loop of its own (its own lease owner), so the worker and the database
    /// work at the same time instead of waiting on each other. SQLite has one writer, which
    /// a batch holds from claim to commit: there it is always 1. Default 2.
    pub concurrency: u32,
    /// The worker is woken when updates are stored; this is the floor for what becomes due
    /// by time alone. Also the first back-off of a timer that moved nothing. Default `1s`.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// How long a claimed update is held before another worker may take it over.
    /// Default `30s`.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// Failed attempts before an update goes `dead`. Default 10.
    pub max_attempts: u32,
    /// Batches whose process ended before their commit (an abort, a crash, the OOM killer)
    /// that one update may be in, tried alone after the first, before it goes `dead`
    /// without running again. Default 3.
    pub max_crashes: u32,
    /// Delay after the first failed attempt; doubled per attempt, with jitter. Default
    /// `1s`.
    #[serde(with = "duration")]
    pub backoff_base: Duration,
    /// The longest delay between attempts. Default `10m`.
    #[serde(with = "duration")]
    pub backoff_max: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            in_process: true,
            batch_size: None,
            concurrency: 2,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(30),
            max_attempts: 10,
            max_crashes: 3,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
        }
    }
}

impl WorkerConfig {
    /// Updates claimed per batch on `backend` (at least 1). On SQLite a batch is one
    /// transaction on the one writer, and most of its cost is the pages it writes (four an
    /// update at random places, each a 4 KiB WAL frame): the larger the batch, the more of
    /// its updates share an order's, an item's or an index's page, so the default is five
    /// times PostgreSQL's. On PostgreSQL several workers claim side by side, and a batch
    /// holds its orders until it commits (with slow commands, longer), so it stays small.
    pub fn batch_size(&self, backend: crate::store::Backend) -> u32 {
        let default = match backend {
            crate::store::Backend::Sqlite => 500,
            crate::store::Backend::Postgres => 100,
        };
        self.batch_size.unwrap_or(default).max(1)
    }
}

/// `[projector]`: the list projection, built from the change feed.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectorConfig {
    /// Change-feed rows per projector transaction. Default 500.
    pub batch_size: u32,
    /// The projector is woken after each commit in this process; this is the floor for
    /// changes made by other processes. Default `1s`.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// `[clients."erp-sap"]`: limits of one API client, by name.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Requests per second, with bursts of up to the same number; over it the API answers
    /// 429 with `retry-after`. No limit when absent.
    pub rate_limit_per_second: Option<u32>,
}

/// `[subscriptions]`: order events sent to subscribers (`orderflow subscriptions`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionsConfig {
    /// `serve` and `orderflow worker` deliver events in their process. Default true.
    pub in_process: bool,
    /// When a delivery is attempted, counted from when it was created (the first entry)
    /// and after each failed attempt; after the last one fails it is `dead`. Svix's
    /// schedule by default: at once, `5s`, `5m`, `30m`, `2h`, `5h`, `10h`, `10h`.
    #[serde(with = "duration::list")]
    pub retry_schedule: Vec<Duration>,
    /// One HTTP attempt may take this long (then it failed); the connection and the
    /// address guard are `[outbound]`'s. Default `10s`.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// A claimed delivery is held this long before another instance may send it again;
    /// longer than `timeout`. Default `1m`.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// Deliveries in flight at once, per process (one per subscription and order).
    /// Default 128.
    pub concurrency: usize,
    /// Change-feed rows read per subscription and pass. Default 500.
    pub batch_size: u32,
    /// The worker is woken after each commit in this process; this is the floor for
    /// changes made by other processes and for retries that become due. Default `1s`.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// A subscription is disabled after this many failed attempts in a row ...
    /// Default 50.
    pub disable_after_failures: u32,
    /// ... that went on for at least this long. Default `5d`.
    #[serde(with = "duration")]
    pub disable_after: Duration,
}

impl Default for SubscriptionsConfig {
    fn default() -> Self {
        let (s, m, h) = (1, 60, 3600);
        Self {
            in_process: true,
            retry_schedule: [0, 5 * s, 5 * m, 30 * m, 2 * h, 5 * h, 10 * h, 10 * h]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            timeout: Duration::from_secs(10),
            lease: Duration::from_secs(60),
            concurrency: 128,
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            disable_after_failures: 50,
            disable_after: Duration::from_secs(5 * 86_400),
        }
    }
}

/// `[outbound]`: the HTTP client of everything orderflow sends (after-commit HTTP
/// commands, webhook deliveries).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// A connection must be established within this. Default `5s`.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// A whole request (connect, send, response head and body excerpt) must finish within
    /// this, unless the sender sets its own (a command's `timeout`). Default `30s`.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// A guard against server-side request forgery: refuse outbound URLs whose host is or
    /// resolves to a loopback, private, link-local, shared or otherwise internal address,
    /// when the URL is configured or submitted and again at every connection (so a name
    /// that later resolves inside is caught). Off by default, since a local receiver on
    /// loopback is the usual test setup; turn it on where URLs come from API clients.
    pub block_private_addresses: bool,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            block_private_addresses: false,
        }
    }
}

/// `[effects]`: the executor of after-commit effects (HTTP commands).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EffectsConfig {
    /// `serve` and `worker` run the effects executor. Default true.
    pub enabled: bool,
    /// Effects claimed and sent at once (at most one per order). Default 32.
    pub batch_size: u32,
    /// The executor is woken when effects are committed; this is the floor for retries
    /// that become due and for effects of other processes. Default `1s`.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// How long a claimed effect is held before another executor may take it over; at
    /// least the longest request timeout (a command's `timeout`, else `outbound.timeout`)
    /// plus 5 s is used. Default `60s`.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// Attempts before an effect is `dead`. Default 10.
    pub max_attempts: u32,
    /// Delay after the first failed attempt; doubled per attempt, with jitter. A
    /// `Retry-After` of the receiver replaces it. Default `1s`.
    #[serde(with = "duration")]
    pub backoff_base: Duration,
    /// The longest delay between attempts (also caps `Retry-After`). Default `10m`.
    #[serde(with = "duration")]
    pub backoff_max: Duration,
}

impl Default for EffectsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            batch_size: 32,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(60),
            max_attempts: 10,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
        }
    }
}

/// Where accepted ERP updates wait before they are applied.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    /// The store's inbox table: the update is committed to the database before the 202.
    #[default]
    Database,
    /// RabbitMQ quorum queues (`[inbox.rabbitmq]`): the update is confirmed by the broker
    /// before the 202; consumers apply it and move what must wait into the database inbox.
    Rabbitmq,
    /// Redis streams (`[inbox.redis]`): the update is added to its shard stream before the
    /// 202, under the persistence Redis runs with (checked at start); consumers apply it and
    /// move what must wait into the database inbox.
    Redis,
}

/// `[inbox]`: the transport of accepted ERP updates.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboxConfig {
    /// `database` (default), `rabbitmq` or `redis`. `--inbox-url amqp://...` selects
    /// `rabbitmq`, `--inbox-url redis://...` selects `redis`, with that URL.
    pub transport: TransportKind,
    /// The RabbitMQ transport's broker and topology.
    pub rabbitmq: RabbitConfig,
    /// The Redis transport's server, streams and durability.
    pub redis: RedisConfig,
}

/// `[inbox.rabbitmq]`: the RabbitMQ transport.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RabbitConfig {
    /// AMQP URL with credentials and vhost (`%2f` is `/`); the password is masked in
    /// `orderflow config` and logs. Default `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: String,
    /// Prefix of every exchange and queue name, so several installations (or tests) can
    /// share a vhost. Default `orderflow`.
    pub prefix: String,
    /// Shard queues; an order's updates always go to shard `hash(order_reference) % shards`
    /// and each shard has one active consumer, so an order's updates are applied in order.
    /// Changing it moves orders to other shards: drain the queues first. Default 8.
    pub shards: u16,
    /// How long an update may wait in a shard queue; past it the broker dead-letters it to
    /// the overdue queue and it is moved into the database inbox as `accepted` (the
    /// database worker finishes it). Default `5m`.
    #[serde(with = "duration")]
    pub in_transit_ttl: Duration,
    /// Unacknowledged deliveries per shard consumer, and the most updates applied in one
    /// transaction. Default 100.
    pub prefetch: u16,
}

impl Default for RabbitConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            prefix: "orderflow".into(),
            shards: 8,
            in_transit_ttl: Duration::from_secs(300),
            prefetch: 100,
        }
    }
}

/// `[inbox.redis]`: the Redis transport.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Redis URL (`redis://[user:password@]host:port[/db]`); the password is masked in
    /// `orderflow config` and logs. Default `redis://127.0.0.1:6379`.
    pub url: String,
    /// Prefix of every key (streams, leases, dead-letter stream), so several
    /// installations (or tests) can share a Redis database. Default `orderflow`.
    pub prefix: String,
    /// Shard streams; an order's updates always go to stream `hash(order_reference) %
    /// shards` and each shard has one active consumer (the holder of its lease), so an
    /// order's updates are applied in order. Changing it moves orders to other shards:
    /// drain the streams first. Default 8.
    pub shards: u16,
    /// How long a shard's consumer lease lasts without renewal (it is renewed every third
    /// of it). When a consumer dies, another process takes the shard after this and
    /// claims what the dead one had received and not acknowledged (`XAUTOCLAIM`).
    /// Default `10s`.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// The most entries a shard consumer reads at once and applies in one transaction.
    /// Default 100.
    pub batch: u16,
    /// Start although Redis does not fsync every write (`appendonly yes` with
    /// `appendfsync always`): the loss the operator accepts, in words (for example
    /// `"up to 1s of acknowledged updates on a Redis crash"`). Logged as a warning at
    /// every start; without it such a Redis is refused. Default: not set.
    pub accept_loss: Option<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "orderflow".into(),
            shards: 8,
            lease: Duration::from_secs(10),
            batch: 100,
            accept_loss: None,
        }
    }
}
