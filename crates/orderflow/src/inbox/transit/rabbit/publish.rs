//! Publishing with group confirms. The updates of requests that arrive while earlier
//! publishes wait for their confirms travel together: one message per shard, holding a
//! JSON array of the updates in their order of arrival. A quorum queue's cost is per
//! message (it appends, replicates and confirms each one), so under load many updates share
//! it, as many inbox rows share a commit on the database transport. An idle system
//! publishes a lone update at once. Nothing is answered before the broker confirmed the
//! message holding it; at most [`IN_FLIGHT`] groups wait for confirms at a time, and
//! requests arriving meanwhile form the next group.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::try_join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, PublisherConfirm};
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};

use super::super::TransitError;
use crate::config::{RabbitConfig, mask_url_password};

/// Groups waiting for their confirms at one time.
const IN_FLIGHT: usize = 2;
/// Requests in one group at most (a batch request counts once, with all its updates).
const GROUP_REQUESTS: usize = 256;

/// The broker connection updates are published on, opened again when it was lost.
pub(super) struct Link {
    config: RabbitConfig,
    held: Mutex<Option<(Connection, Channel)>>,
}

impl Link {
    pub(super) fn new(config: RabbitConfig) -> Self {
        Self {
            config,
            held: Mutex::new(None),
        }
    }

    /// A new connection with a confirm channel.
    pub(super) async fn open(&self) -> Result<(Connection, Channel), TransitError> {
        let conn = Connection::connect(&self.config.url, ConnectionProperties::default())
            .await
            .map_err(|e| TransitError::Connect {
                url: mask_url_password(&self.config.url),
                source: e,
            })?;
        let channel = conn.create_channel().await.map_err(TransitError::Broker)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(TransitError::Broker)?;
        Ok((conn, channel))
    }

    /// The publishing channel, opened again when the broker connection was lost.
    pub(super) async fn channel(&self) -> Result<Channel, TransitError> {
        let mut held = self.held.lock().await;
        if let Some((conn, ch)) = held.as_ref()
            && conn.status().connected()
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        *held = None;
        let (conn, ch) = self.open().await?;
        *held = Some((conn, ch.clone()));
        Ok(ch)
    }

    /// Publishes one message per shard (persistent, mandatory), in order, and returns
    /// the confirms to wait for.
    async fn send_group(
        &self,
        exchange: &str,
        shards: BTreeMap<u16, Vec<u8>>,
    ) -> Result<Vec<PublisherConfirm>, TransitError> {
        let ch = self.channel().await?;
        let mut confirms = Vec::with_capacity(shards.len());
        for (shard, body) in shards {
            let confirm = ch
                .basic_publish(
                    exchange.into(),
                    format!("shard.{shard}").into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &body,
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type("application/json".into()),
                )
                .await
                .map_err(TransitError::Broker)?;
            confirms.push(confirm);
        }
        Ok(confirms)
    }
}

/// Waits for every confirm of a group: each message taken (acked) and routed to a queue.
async fn confirmed(confirms: Vec<PublisherConfirm>) -> Result<(), TransitError> {
    let confirmations = try_join_all(confirms).await.map_err(TransitError::Broker)?;
    for confirmation in confirmations {
        if !confirmation.is_ack() {
            return Err(TransitError::Nacked);
        }
        if confirmation.take_message().is_some() {
            return Err(TransitError::Unroutable);
        }
    }
    Ok(())
}

/// One update ready to go: its shard and its JSON.
pub(super) type Encoded = (u16, Vec<u8>);

type Reply = oneshot::Sender<Result<(), Arc<TransitError>>>;

/// The handle of the group publisher task; the task ends when this is dropped.
pub(super) struct Publisher {
    tx: mpsc::Sender<(Vec<Encoded>, Reply)>,
}

impl Publisher {
    /// Starts the task that publishes groups on `link` to the exchange `exchange`.
    pub(super) fn spawn(link: Arc<Link>, exchange: String) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run(link, exchange, rx));
        Self { tx }
    }

    /// Publishes `updates` (in this order within each shard) and returns once the broker
    /// confirmed all of them.
    pub(super) async fn publish(&self, updates: Vec<Encoded>) -> Result<(), TransitError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || TransitError::Encode("the publisher has stopped".into());
        self.tx
            .send((updates, reply))
            .await
            .map_err(|_| stopped())?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(share(&e)),
            Err(_) => Err(stopped()),
        }
    }
}

async fn run(link: Arc<Link>, exchange: String, mut rx: mpsc::Receiver<(Vec<Encoded>, Reply)>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // A free slot first: while every slot waits for confirms, requests queue up and
        // go together.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut jobs = vec![first];
        while jobs.len() < GROUP_REQUESTS {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut shards: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
        let mut updates = 0_u64;
        let mut replies = Vec::with_capacity(jobs.len());
        for (encoded, reply) in jobs {
            for (shard, json) in encoded {
                let body = shards.entry(shard).or_insert_with(|| vec![b'[']);
                if body.len() > 1 {
                    body.push(b',');
                }
                body.extend_from_slice(&json);
                updates += 1;
            }
            replies.push(reply);
        }
        for body in shards.values_mut() {
            body.push(b']');
        }
        metrics::histogram!("orderflow_transit_group_size", "transport" => "rabbitmq")
            .record(updates as f64);
        // Published here, one group after the other (the channel keeps their order, so
        // a shard's, so an order's); confirmed in a task of its own, so the next group can
        // form and go meanwhile.
        let sent = link.send_group(&exchange, shards).await;
        tokio::spawn(async move {
            let result = match sent {
                Ok(confirms) => confirmed(confirms).await,
                Err(e) => Err(e),
            };
            if result.is_ok() {
                metrics::counter!("orderflow_transit_published_total", "transport" => "rabbitmq")
                    .increment(updates);
            }
            let result = result.map_err(Arc::new);
            for reply in replies {
                let _ = reply.send(result.clone());
            }
            drop(slot);
        });
    }
}

/// A copy of a group's error for each of its requests.
fn share(e: &TransitError) -> TransitError {
    match e {
        TransitError::Nacked => TransitError::Nacked,
        TransitError::Unroutable => TransitError::Unroutable,
        TransitError::Broker(e) => TransitError::Broker(e.clone()),
        TransitError::Connect { url, source } => TransitError::Connect {
            url: url.clone(),
            source: source.clone(),
        },
        other => TransitError::Shared(other.to_string()),
    }
}
