//! The RabbitMQ transport: topology, publishing with confirms, and the shard consumers.
//!
//! Topology (declared at every start; declaring what exists is a no-op, declaring it with
//! other arguments is refused by the broker and stops the start with its reason):
//! - `<prefix>.updates`, a direct exchange; update of order `r` goes with routing key
//!   `shard.<hash(r) % shards>` to the durable quorum queue `<prefix>.shard.<n>`, which has
//!   `x-single-active-consumer` (one consumer applies a shard's updates, in order, however
//!   many processes consume it), `x-message-ttl` = `in_transit_ttl`, and dead-letters
//!   (at-least-once) what expires to `<prefix>.overdue`;
//! - `<prefix>.overdue`, a quorum queue whose consumer moves updates into the database
//!   inbox as `accepted`;
//! - `<prefix>.dead`, a quorum queue for messages that cannot be read (poison), published
//!   there with a confirm before the original is acknowledged.
//!
//! A message holds one update (a JSON object) or several (a JSON array, in order): the
//! updates of concurrent requests are published together ([`publish`]).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt as _, StreamExt as _};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{Delivered, TransitError, TransitMessage, TransitStats};
use crate::backoff::Backoff;
use crate::config::{RabbitConfig, mask_url_password};
use crate::inbox::Inbox;

mod publish;

use publish::{CONFIRM_TIMEOUT, Link, Publisher};

/// The RabbitMQ transport of one process: its configuration and publishing channel.
pub struct Rabbit {
    config: RabbitConfig,
    /// The connection and confirm channel updates are published on; opened again after
    /// the broker went away.
    link: Arc<Link>,
    /// Publishes the updates of concurrent requests together.
    publisher: Publisher,
}

impl std::fmt::Debug for Rabbit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rabbit")
            .field("url", &mask_url_password(&self.config.url))
            .field("prefix", &self.config.prefix)
            .field("shards", &self.config.shards)
            .finish()
    }
}

/// The shard of an order: the first 8 bytes of SHA-256 of its reference, modulo `shards`
/// (stable across processes, versions and platforms).
pub fn shard_of(reference: &str, shards: u16) -> u16 {
    let digest = Sha256::digest(reference.as_bytes());
    let mut first = [0_u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(shards.max(1))) as u16
}

impl Rabbit {
    /// Connects, declares the topology and opens the publishing channel.
    pub async fn connect(config: RabbitConfig) -> Result<Self, TransitError> {
        let link = Arc::new(Link::new(config.clone()));
        let exchange = format!("{}.updates", config.prefix);
        let rabbit = Self {
            config,
            publisher: Publisher::spawn(Arc::clone(&link), exchange),
            link,
        };
        rabbit.declare(&rabbit.link.channel().await?).await?;
        tracing::info!(
            url = %mask_url_password(&rabbit.config.url),
            prefix = %rabbit.config.prefix,
            shards = rabbit.config.shards,
            in_transit_ttl_ms = rabbit.config.in_transit_ttl.as_millis() as u64,
            "RabbitMQ inbox transport ready"
        );
        Ok(rabbit)
    }

    pub fn config(&self) -> &RabbitConfig {
        &self.config
    }

    fn name(&self, what: &str) -> String {
        format!("{}.{what}", self.config.prefix)
    }

    fn shard_queue(&self, n: u16) -> String {
        self.name(&format!("shard.{n}"))
    }

    /// Declares exchanges and queues; a no-op when they exist as declared.
    async fn declare(&self, ch: &Channel) -> Result<(), TransitError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let topology = |e: lapin::Error| TransitError::Topology(e.to_string());
        let updates = self.name("updates");
        let overdue_x = self.name("overdue-exchange");
        for (name, kind) in [
            (&updates, ExchangeKind::Direct),
            (&overdue_x, ExchangeKind::Fanout),
        ] {
            ch.exchange_declare(name.as_str().into(), kind, durable, FieldTable::default())
                .await
                .map_err(topology)?;
        }
        for what in ["overdue", "dead"] {
            ch.queue_declare(
                self.name(what).into(),
                QueueDeclareOptions::durable(),
                quorum(&[]),
            )
            .await
            .map_err(topology)?;
        }
        ch.queue_bind(
            self.name("overdue").into(),
            overdue_x.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(topology)?;
        let ttl = i64::try_from(self.config.in_transit_ttl.as_millis()).unwrap_or(i64::MAX);
        for n in 0..self.config.shards {
            let args = quorum(&[
                ("x-single-active-consumer", AMQPValue::Boolean(true)),
                ("x-message-ttl", AMQPValue::LongLongInt(ttl)),
                (
                    "x-dead-letter-exchange",
                    AMQPValue::LongString(LongString::from(overdue_x.as_bytes())),
                ),
                (
                    "x-dead-letter-strategy",
                    AMQPValue::LongString(LongString::from("at-least-once".as_bytes())),
                ),
                // At-least-once dead-lettering needs this overflow behaviour.
                (
                    "x-overflow",
                    AMQPValue::LongString(LongString::from("reject-publish".as_bytes())),
                ),
            ]);
            let queue = self.shard_queue(n);
            ch.queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args)
                .await
                .map_err(topology)?;
            ch.queue_bind(
                queue.into(),
                updates.as_str().into(),
                format!("shard.{n}").into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(topology)?;
        }
        Ok(())
    }

    /// Publishes the messages persistent, mandatory, each to its order's shard (with the
    /// updates of other requests published at the same time), and returns once the broker
    /// confirmed every one (a quorum queue confirms once a majority of its replicas has
    /// the message on disk).
    pub async fn publish(&self, messages: &[TransitMessage]) -> Result<(), Arc<TransitError>> {
        let mut encoded = Vec::with_capacity(messages.len());
        for m in messages {
            let json =
                serde_json::to_vec(m).map_err(|e| Arc::new(TransitError::Encode(e.to_string())))?;
            encoded.push((shard_of(&m.order_reference, self.config.shards), json));
        }
        self.publisher.publish(encoded).await
    }

    /// Publishes a message that cannot be read to the dead-letter queue, confirmed within
    /// [`CONFIRM_TIMEOUT`] (past it the consumer starts again on a new connection).
    async fn dead_letter(&self, ch: &Channel, body: &[u8]) -> Result<(), TransitError> {
        let publish = async {
            ch.basic_publish(
                "".into(),
                self.name("dead").into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await
        };
        let confirm = tokio::time::timeout(CONFIRM_TIMEOUT, publish)
            .await
            .map_err(|_| TransitError::Timeout(CONFIRM_TIMEOUT, "confirming a dead letter"))?
            .map_err(TransitError::Broker)?;
        if !confirm.is_ack() {
            return Err(TransitError::Nacked);
        }
        Ok(())
    }

    /// Messages waiting in the shard queues (ready, not delivered), in the overdue queue,
    /// and in the dead-letter queue, read with passive declares.
    pub async fn stats(&self) -> Result<TransitStats, TransitError> {
        let ch = self.link.channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let count = |name: String| {
            let ch = ch.clone();
            async move {
                ch.queue_declare(name.into(), passive, FieldTable::default())
                    .await
                    .map(|q| u64::from(q.message_count()))
                    .map_err(TransitError::Broker)
            }
        };
        let mut in_transit = 0;
        let mut consumers = 0;
        for n in 0..self.config.shards {
            let q = ch
                .queue_declare(self.shard_queue(n).into(), passive, FieldTable::default())
                .await
                .map_err(TransitError::Broker)?;
            in_transit += u64::from(q.message_count());
            consumers += u64::from(q.consumer_count());
        }
        Ok(TransitStats {
            transport: "rabbitmq",
            durability: "quorum_confirms",
            in_transit,
            overdue: count(self.name("overdue")).await?,
            dead_lettered: count(self.name("dead")).await?,
            consumers,
            redeliveries: super::REDELIVERIES.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Consumes every shard queue and the overdue queue until `shutdown`, each on its own
    /// connection, reconnecting with backoff when the broker goes away.
    pub fn spawn_consumers(
        self: &Arc<Self>,
        inbox: &Inbox,
        shutdown: &CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut queues: Vec<(String, bool)> = (0..self.config.shards)
            .map(|n| (self.shard_queue(n), true))
            .collect();
        queues.push((self.name("overdue"), false));
        queues
            .into_iter()
            .map(|(queue, apply)| {
                let rabbit = Arc::clone(self);
                let inbox = inbox.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move { rabbit.consume(queue, apply, inbox, shutdown).await })
            })
            .collect()
    }

    /// One queue's consumer: connects, consumes, and on a lost connection starts again
    /// after a backoff. Unacknowledged deliveries go back to the queue when a connection
    /// ends (crash or shutdown): the broker redelivers them.
    async fn consume(&self, queue: String, apply: bool, inbox: Inbox, shutdown: CancellationToken) {
        let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10)).jittered();
        let mut failures = 0_u32;
        while !shutdown.is_cancelled() {
            match self
                .consume_once(&queue, apply, &inbox, &shutdown, &mut failures)
                .await
            {
                Ok(()) => return,
                Err(e) => {
                    failures += 1;
                    let delay = backoff.delay(failures.saturating_sub(1));
                    tracing::warn!(queue = %queue, error = %e, retry_in_ms = delay.as_millis() as u64, "RabbitMQ consumer stopped; starting again");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    async fn consume_once(
        &self,
        queue: &str,
        apply: bool,
        inbox: &Inbox,
        shutdown: &CancellationToken,
        failures: &mut u32,
    ) -> Result<(), TransitError> {
        let (conn, ch) = self.link.open().await?;
        ch.basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await
            .map_err(TransitError::Broker)?;
        let tag = format!("{}-{queue}", inbox.owner());
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(TransitError::Broker)?;
        tracing::debug!(queue, "RabbitMQ consumer started");
        // Connected: the next loss starts its backoff from the beginning.
        *failures = 0;
        let limit = usize::from(self.config.prefetch);
        loop {
            let first = tokio::select! {
                d = consumer.next() => d,
                () = shutdown.cancelled() => {
                    // Unacknowledged deliveries are requeued when the connection closes.
                    let _ = conn.close(200, "shutdown".into()).await;
                    return Ok(());
                }
            };
            let Some(first) = first else {
                return Err(TransitError::Closed);
            };
            let mut batch = vec![first.map_err(TransitError::Broker)?];
            // Whatever else is already here, up to the prefetch: one transaction for all.
            while batch.len() < limit {
                match consumer.next().now_or_never() {
                    Some(Some(d)) => batch.push(d.map_err(TransitError::Broker)?),
                    _ => break,
                }
            }
            let last = batch.last().map(|d| d.delivery_tag).unwrap_or_default();
            let mut readable = Vec::with_capacity(batch.len());
            for d in batch {
                match decode(&d.data) {
                    Ok(messages) => readable.extend(messages.into_iter().map(|m| Delivered {
                        message: m,
                        redelivered: d.redelivered,
                    })),
                    Err(e) => {
                        // Dead-lettered with a confirm before the batch is acknowledged.
                        tracing::warn!(queue, error = %e, bytes = d.data.len(), "unreadable message; dead-lettered");
                        self.dead_letter(&ch, &d.data).await?;
                        metrics::counter!("orderflow_transit_dead_lettered_total", "transport" => "rabbitmq").increment(1);
                    }
                }
            }
            let refused = match inbox
                .settle_transit(readable, apply, self.config.in_transit_ttl, shutdown)
                .await
            {
                Ok(refused) => refused,
                Err(TransitError::Stopped) => {
                    let _ = conn.close(200, "shutdown".into()).await;
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            for m in refused {
                let body =
                    serde_json::to_vec(&m).map_err(|e| TransitError::Encode(e.to_string()))?;
                self.dead_letter(&ch, &body).await?;
                metrics::counter!("orderflow_transit_dead_lettered_total", "transport" => "rabbitmq").increment(1);
            }
            ch.basic_ack(last, BasicAckOptions { multiple: true })
                .await
                .map_err(TransitError::Broker)?;
        }
    }
}

/// The updates of a message: one JSON object, or an array of them in order.
fn decode(data: &[u8]) -> Result<Vec<TransitMessage>, serde_json::Error> {
    match data.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(data),
        _ => serde_json::from_slice(data).map(|m| vec![m]),
    }
}

/// Arguments of a quorum queue, with `extra`.
fn quorum(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum".as_bytes())),
    );
    for (k, v) in extra {
        t.insert((*k).into(), v.clone());
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("DE-1", 8), shard_of("DE-1", 8));
        let used: std::collections::HashSet<u16> =
            (0..200).map(|i| shard_of(&format!("DE-{i}"), 8)).collect();
        assert_eq!(used.len(), 8);
        assert!((0..100).all(|i| shard_of(&format!("X{i}"), 3) < 3));
    }
}
