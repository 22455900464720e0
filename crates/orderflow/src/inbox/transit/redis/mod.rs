//! The Redis transport: durability check, publishing with `XADD`, and the shard consumers.
//!
//! Keys (all under `<prefix>:`):
//! - `<prefix>:shard:<n>`, a stream per shard; an update of order `r` is added to shard
//!   `hash(r) % shards` (the same hash as RabbitMQ's shards). Each stream has the consumer
//!   group `orderflow`; an entry is acknowledged (`XACK`) and deleted (`XDEL`) once the
//!   database committed what it carried, so a stream's length is what is still in transit.
//! - `<prefix>:lease:<n>`, the shard's consumer lease (`SET NX PX`, renewed every third of
//!   `lease`): only its holder reads the shard, so an order's updates are applied in order
//!   however many processes consume. A holder that takes a shard first claims what earlier
//!   holders had read and not acknowledged (`XAUTOCLAIM`), in stream order, before reading
//!   new entries: a consumer that died mid-batch leaves its entries to be redelivered.
//! - `<prefix>:dead`, a stream of entries that cannot be read (poison), added there before
//!   the original is acknowledged.
//!
//! Durability is read from the server at start (`CONFIG GET appendonly, appendfsync,
//! save`): Redis answers `XADD` after it wrote the entry to its append-only file, and
//! with `appendfsync always` after that file was fsynced, so only then is an acknowledged
//! update safe from a Redis crash. Anything else is refused unless `accept_loss` says
//! what loss the operator accepts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, Value};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

mod consume;

use super::{Delivered, TransitError, TransitMessage, TransitStats};
use crate::backoff::Backoff;
use crate::config::{RedisConfig, mask_url_password};
use crate::inbox::Inbox;

/// The consumer group of every shard stream.
const GROUP: &str = "orderflow";

/// The stream field an update's JSON is stored in.
const FIELD: &str = "m";

/// How long a consumer's `XREADGROUP` blocks before it looks at its lease and shutdown.
const BLOCK: Duration = Duration::from_secs(1);

/// How long any command may take before the connection is considered lost (an `XADD`
/// under `appendfsync always` waits for the disk).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Redis keeps an update until a consumer applied it or moved it into the database inbox:
/// there is no in-transit TTL, so none is passed to [`Inbox::settle_transit`].
const NO_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Renews the lease when `ARGV[1]` holds it.
const RENEW: &str = r"if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0";

/// Gives the lease up when `ARGV[1]` holds it.
const RELEASE: &str = r"if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0";

/// What an acknowledged `XADD` survives, as read from the server at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `appendonly yes` with `appendfsync always`: acknowledged entries are on disk.
    FsyncAlways,
    /// Anything else, started because `accept_loss` says what loss is accepted.
    AcceptedLoss,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FsyncAlways => "fsync_always",
            Self::AcceptedLoss => "accepted_loss",
        }
    }
}

/// The Redis transport of one process: its configuration and publishing connection.
pub struct Redis {
    config: RedisConfig,
    client: Client,
    durability: Durability,
    /// The connection updates are published on (multiplexed: concurrent requests share
    /// it); opened again after it failed.
    publisher: Mutex<Option<MultiplexedConnection>>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("url", &mask_url_password(&self.config.url))
            .field("prefix", &self.config.prefix)
            .field("shards", &self.config.shards)
            .field("durability", &self.durability)
            .finish()
    }
}

fn redis_error(e: redis::RedisError) -> TransitError {
    TransitError::Redis(e)
}

impl Redis {
    /// Connects, checks the server's persistence against `accept_loss`, and creates the
    /// shard streams and their consumer group (a no-op when they exist).
    pub async fn connect(config: RedisConfig) -> Result<Self, TransitError> {
        let url = mask_url_password(&config.url);
        let client = Client::open(config.url.as_str()).map_err(|e| TransitError::RedisConnect {
            url: url.clone(),
            source: e,
        })?;
        let mut redis = Self {
            config,
            client,
            durability: Durability::AcceptedLoss,
            publisher: Mutex::new(None),
        };
        let mut con = redis.open().await?;
        redis.durability = redis.check_durability(&mut con).await?;
        for n in 0..redis.config.shards {
            redis.ensure_group(&mut con, n).await?;
        }
        *redis.publisher.lock().await = Some(con);
        tracing::info!(
            url = %url,
            prefix = %redis.config.prefix,
            shards = redis.config.shards,
            durability = redis.durability.as_str(),
            "Redis inbox transport ready"
        );
        Ok(redis)
    }

    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    fn key(&self, what: &str) -> String {
        format!("{}:{what}", self.config.prefix)
    }

    fn shard_key(&self, n: u16) -> String {
        self.key(&format!("shard:{n}"))
    }

    fn lease_key(&self, n: u16) -> String {
        self.key(&format!("lease:{n}"))
    }

    /// Creates shard `n`'s stream and consumer group unless they exist (again after a
    /// Redis restart that lost them: entries added since are read from the start).
    async fn ensure_group(
        &self,
        con: &mut MultiplexedConnection,
        n: u16,
    ) -> Result<(), TransitError> {
        let created: Result<Value, _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.shard_key(n))
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(con)
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(redis_error(e)),
        }
    }

    /// A new connection of its own.
    async fn open(&self) -> Result<MultiplexedConnection, TransitError> {
        let options = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        self.client
            .get_multiplexed_async_connection_with_config(&options)
            .await
            .map_err(|e| TransitError::RedisConnect {
                url: mask_url_password(&self.config.url),
                source: e,
            })
    }

    /// The publishing connection, opened again when it failed before.
    async fn connection(&self) -> Result<MultiplexedConnection, TransitError> {
        let mut held = self.publisher.lock().await;
        if let Some(con) = held.as_ref() {
            return Ok(con.clone());
        }
        let con = self.open().await?;
        *held = Some(con.clone());
        Ok(con)
    }

    /// Forgets the publishing connection after `e` (unless Redis answered with an error),
    /// so the next call opens another.
    async fn failed(&self, e: redis::RedisError) -> TransitError {
        if e.code().is_none() {
            *self.publisher.lock().await = None;
        }
        redis_error(e)
    }

    /// Reads `appendonly`, `appendfsync` and `save`; refuses anything short of
    /// `appendonly yes` + `appendfsync always` unless `accept_loss` is set, then warns.
    async fn check_durability(
        &self,
        con: &mut MultiplexedConnection,
    ) -> Result<Durability, TransitError> {
        let mut found = Vec::new();
        for name in ["appendonly", "appendfsync", "save"] {
            let pair: Result<Vec<String>, _> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(con)
                .await;
            let value = match pair {
                Ok(pair) => pair.get(1).cloned().unwrap_or_else(|| "(not set)".into()),
                Err(e) => format!("(unreadable: {e})"),
            };
            found.push(format!("{name} {value:?}"));
        }
        let fsync_always = found[0] == "appendonly \"yes\"" && found[1] == "appendfsync \"always\"";
        if fsync_always {
            return Ok(Durability::FsyncAlways);
        }
        let found = found.join(", ");
        match &self.config.accept_loss {
            Some(accepted) => {
                tracing::warn!(
                    url = %mask_url_password(&self.config.url),
                    settings = %found,
                    accept_loss = %accepted,
                    "Redis does not fsync acknowledged updates (appendonly yes with appendfsync \
                     always): a Redis crash or restart can lose updates already answered with \
                     202; started because inbox.redis.accept_loss accepts that"
                );
                Ok(Durability::AcceptedLoss)
            }
            None => Err(TransitError::Durability(format!(
                "Redis at {} does not fsync acknowledged writes ({found}): a Redis crash or \
                 restart would lose updates already answered with 202. Run it with appendonly \
                 yes and appendfsync always, or set [inbox.redis] accept_loss = \"<the loss \
                 you accept>\"",
                mask_url_password(&self.config.url)
            ))),
        }
    }

    /// Adds the messages, each to its order's shard stream, in one pipeline, and returns
    /// once Redis answered every `XADD` (under `appendfsync always`, after its fsync).
    pub async fn publish(&self, messages: &[TransitMessage]) -> Result<(), TransitError> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for m in messages {
            let body = serde_json::to_vec(m).map_err(|e| TransitError::Encode(e.to_string()))?;
            let shard = super::rabbit::shard_of(&m.order_reference, self.config.shards);
            pipe.cmd("XADD")
                .arg(self.shard_key(shard))
                .arg("*")
                .arg(FIELD)
                .arg(body);
        }
        let mut con = self.connection().await?;
        let ids: Result<Vec<String>, _> = pipe.query_async(&mut con).await;
        match ids {
            Ok(ids) if ids.len() == messages.len() => {}
            Ok(_) => return Err(TransitError::Nacked),
            Err(e) => return Err(self.failed(e).await),
        }
        metrics::counter!("orderflow_transit_published_total", "transport" => "redis")
            .increment(messages.len() as u64);
        Ok(())
    }

    /// Entries in the shard streams (not yet applied), in the dead-letter stream, and the
    /// shards whose lease is held.
    pub async fn stats(&self) -> Result<TransitStats, TransitError> {
        let mut con = self.connection().await?;
        let mut pipe = redis::pipe();
        for n in 0..self.config.shards {
            pipe.cmd("XLEN").arg(self.shard_key(n));
        }
        pipe.cmd("XLEN").arg(self.key("dead"));
        let leases: Vec<String> = (0..self.config.shards).map(|n| self.lease_key(n)).collect();
        pipe.cmd("EXISTS").arg(&leases);
        let counts: Result<Vec<u64>, _> = pipe.query_async(&mut con).await;
        let counts = match counts {
            Ok(c) => c,
            Err(e) => return Err(self.failed(e).await),
        };
        let shards = usize::from(self.config.shards);
        Ok(TransitStats {
            transport: "redis",
            durability: self.durability.as_str(),
            in_transit: counts[..shards].iter().sum(),
            overdue: 0,
            dead_lettered: counts[shards],
            consumers: counts[shards + 1],
            redeliveries: super::REDELIVERIES.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_names_are_stable() {
        assert_eq!(Durability::FsyncAlways.as_str(), "fsync_always");
        assert_eq!(Durability::AcceptedLoss.as_str(), "accepted_loss");
    }
}
