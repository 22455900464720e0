//! Broker transports in front of the database inbox: an accepted update is published to
//! a broker (confirmed before the 202) instead of being committed to the database, and
//! consumers apply it with the inbox's processing function in one database transaction,
//! recording its id there, before acknowledging it. What cannot be applied at once
//! (parked, retried, an order with earlier updates still waiting) stays in the database
//! inbox under its usual rules, so the broker is only a fast front buffer.
//!
//! - [`ids`]: update ids any process can verify it issued, so a GET right after the 202
//!   answers `accepted` while the update is in transit.
//! - [`rabbit`]: RabbitMQ: topology, publisher confirms, shard consumers.
//! - [`redis`]: Redis streams: durability check, `XADD`, shard consumers with leases.
//! - [`settle`]: what a consumer does with what it received, in the database.
//!
//! A broker is one variant of [`Broker`] with the same four operations (connect, publish,
//! stats, consumers); each hands its deliveries to [`Inbox::settle_transit`].

pub mod ids;
pub mod rabbit;
pub mod redis;
mod settle;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::Inbox;
use super::model::{Answer, UpdateStatus};
use crate::config::{Config, TransportKind};
use crate::store::inbox::NewUpdate;
use crate::store::{Store, StoreError};
pub use ids::{InTransit, TransitIds};
use rabbit::Rabbit;
use redis::Redis;

/// Deliveries the broker marked as redelivered (a consumer died or disconnected before
/// acknowledging them), in this process.
pub(crate) static REDELIVERIES: AtomicU64 = AtomicU64::new(0);

/// Why the transport failed: nothing published is acknowledged to the client.
#[derive(Debug, thiserror::Error)]
pub enum TransitError {
    #[error("cannot connect to the message broker at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: lapin::Error,
    },
    #[error("message broker: {0}")]
    Broker(#[source] lapin::Error),
    #[error("cannot connect to Redis at {url}: {source}")]
    RedisConnect {
        url: String,
        #[source]
        source: ::redis::RedisError,
    },
    #[error("Redis: {0}")]
    Redis(#[source] ::redis::RedisError),
    #[error("{0}")]
    Durability(String),
    #[error("another process took this shard's lease")]
    LeaseLost,
    #[error("the message broker refused the topology: {0}")]
    Topology(String),
    #[error("the message broker did not take the update (negative confirm)")]
    Nacked,
    #[error("the message broker could not route the update to a queue")]
    Unroutable,
    #[error("the message broker closed the consumer")]
    Closed,
    #[error("the message broker did not answer within {0:?} ({1})")]
    Timeout(std::time::Duration, &'static str),
    #[error("cannot encode the update: {0}")]
    Encode(String),
    #[error("the database did not take the updates: {0}")]
    Store(#[from] StoreError),
    #[error("stopped before the updates were stored")]
    Stopped,
}

/// An update as it travels through the broker: the inbox row it becomes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransitMessage {
    pub id: String,
    pub client: String,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    pub order_reference: String,
    pub event: Option<String>,
    pub payload: Value,
    pub received_at: DateTime<Utc>,
}

impl From<NewUpdate> for TransitMessage {
    fn from(u: NewUpdate) -> Self {
        Self {
            id: u.id,
            client: u.client,
            idempotency_key: u.idempotency_key,
            request_hash: u.request_hash,
            order_reference: u.order_reference,
            event: u.event,
            payload: u.payload,
            received_at: u.received_at,
        }
    }
}

impl TransitMessage {
    /// The inbox row, with the answer the 202 gave.
    fn into_new_update(self) -> NewUpdate {
        let response = Some(Answer::pending(&self.id, UpdateStatus::Accepted).to_stored());
        NewUpdate {
            id: self.id,
            client: self.client,
            idempotency_key: self.idempotency_key,
            request_hash: self.request_hash,
            order_reference: self.order_reference,
            event: self.event,
            payload: self.payload,
            response,
            received_at: self.received_at,
        }
    }
}

/// A message received from the broker.
#[derive(Debug)]
pub struct Delivered {
    pub message: TransitMessage,
    pub redelivered: bool,
}

/// What a transport holds now, for `/v1/admin/stats` and `/metrics`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TransitStats {
    /// `rabbitmq` or `redis`.
    pub transport: &'static str,
    /// What an acknowledged update survives: `quorum_confirms` (RabbitMQ: on disk on a
    /// majority of the queue's replicas), `fsync_always` (Redis with `appendfsync always`)
    /// or `accepted_loss` (Redis without it, started with `accept_loss`).
    pub durability: &'static str,
    /// Published and not yet applied (consumer lag): RabbitMQ counts messages not
    /// delivered to a consumer yet (a message holds the updates published together, one
    /// or more), Redis updates, also those delivered and not yet acknowledged.
    pub in_transit: u64,
    /// Updates past `in_transit_ttl` waiting to be moved into the database inbox (always 0
    /// with Redis, which has no in-transit TTL).
    pub overdue: u64,
    /// Unreadable messages in the dead-letter queue.
    pub dead_lettered: u64,
    /// Consumers attached to the shard queues (RabbitMQ, one active per shard), or shard
    /// leases held (Redis).
    pub consumers: u64,
    /// Redelivered messages this process received since it started.
    pub redeliveries: u64,
}

/// The broker of a transport.
#[derive(Debug)]
enum Broker {
    Rabbit(Arc<Rabbit>),
    Redis(Arc<Redis>),
}

/// A broker transport: the broker and the key of its update ids.
#[derive(Debug)]
pub struct Transit {
    broker: Broker,
    ids: TransitIds,
}

impl Transit {
    /// The transport `config` chooses, connected and its topology declared; `None` for
    /// the database transport.
    pub async fn from_config(config: &Config, store: &Store) -> Result<Option<Self>, TransitError> {
        let broker = match config.inbox.transport {
            TransportKind::Database => return Ok(None),
            TransportKind::Redis => {
                Broker::Redis(Arc::new(Redis::connect(config.inbox.redis.clone()).await?))
            }
            TransportKind::Rabbitmq => Broker::Rabbit(Arc::new(
                Rabbit::connect(config.inbox.rabbitmq.clone()).await?,
            )),
        };
        let key = store.transit_key(ids::KEY_NAME).await?;
        Ok(Some(Self {
            broker,
            ids: TransitIds::new(&key),
        }))
    }

    pub fn ids(&self) -> &TransitIds {
        &self.ids
    }

    /// `rabbitmq` or `redis`.
    pub fn name(&self) -> &'static str {
        match self.broker {
            Broker::Rabbit(_) => "rabbitmq",
            Broker::Redis(_) => "redis",
        }
    }

    /// What an acknowledged update survives (see [`TransitStats::durability`]).
    pub fn durability(&self) -> &'static str {
        match &self.broker {
            Broker::Rabbit(_) => "quorum_confirms",
            Broker::Redis(r) => r.durability().as_str(),
        }
    }

    /// Publishes, and returns once the broker holds every message durably. The error is
    /// shared: on RabbitMQ one refused message fails every request with updates in it.
    pub async fn publish(&self, messages: &[TransitMessage]) -> Result<(), Arc<TransitError>> {
        match &self.broker {
            Broker::Rabbit(r) => r.publish(messages).await,
            Broker::Redis(r) => r.publish(messages).await.map_err(Arc::new),
        }
    }

    pub async fn stats(&self) -> Result<TransitStats, TransitError> {
        match &self.broker {
            Broker::Rabbit(r) => r.stats().await,
            Broker::Redis(r) => r.stats().await,
        }
    }

    /// Starts this process's consumers; they stop at `shutdown`.
    pub fn spawn_consumers(
        &self,
        inbox: &Inbox,
        shutdown: &CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        match &self.broker {
            Broker::Rabbit(r) => r.spawn_consumers(inbox, shutdown),
            Broker::Redis(r) => r.spawn_consumers(inbox, shutdown),
        }
    }
}
