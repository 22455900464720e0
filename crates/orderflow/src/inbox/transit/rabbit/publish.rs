//! Publishing with group confirms. The updates of requests that arrive while earlier
//! publishes wait for their confirms travel together: one message per shard, holding a
//! JSON array of the updates in their order of arrival. A quorum queue's cost is per
//! message (it appends, replicates and confirms each one), so under load many updates share
//! it, as many inbox rows share a commit on the database transport. An idle system
//! publishes a lone update at once. Nothing is answered before the broker confirmed the
//! messages holding it, and each request is answered from its own shards' confirms (a
//! shard the broker refused fails only the requests with updates on it); at most
//! [`IN_FLIGHT`] groups wait for confirms at a time, and requests arriving meanwhile form
//! the next group.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, PublisherConfirm};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::super::TransitError;
use crate::config::{RabbitConfig, mask_url_password};

/// Groups waiting for their confirms at one time.
const IN_FLIGHT: usize = 2;
/// Requests in one group at most (a batch request counts once, with all its updates).
const GROUP_REQUESTS: usize = 256;

/// How long opening a connection with its confirm channel may take. A broker that takes
/// the TCP connection and never completes the handshake (a hung broker, a stalled network;
/// lapin before 4.12 also waited forever on a broker refusing `connection.open`,
/// amqp-rs/lapin#470) must not hold every request and consumer behind it.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a group may take from the start of its publishing to its last confirm. Past
/// it, its requests are answered 503 `transport_unavailable` (never a 202 without a
/// confirm; a repeat is harmless, their update ids make it so) and the next group opens a
/// new connection: a channel that lost its confirms may still call itself connected
/// (amqp-rs/lapin#409).
pub(super) const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// The broker connection updates are published on, opened again when it was lost.
pub(super) struct Link {
    config: RabbitConfig,
    held: Mutex<Held>,
}

/// The open connection, if any, and how many were opened: a group published on an older
/// one cannot close a newer one.
#[derive(Default)]
struct Held {
    opened: u64,
    open: Option<(Connection, Channel)>,
}

impl Link {
    pub(super) fn new(config: RabbitConfig) -> Self {
        Self {
            config,
            held: Mutex::new(Held::default()),
        }
    }

    /// A new connection with a confirm channel, within [`OPEN_TIMEOUT`].
    pub(super) async fn open(&self) -> Result<(Connection, Channel), TransitError> {
        let open = async {
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
        };
        tokio::time::timeout(OPEN_TIMEOUT, open)
            .await
            .map_err(|_| TransitError::Timeout(OPEN_TIMEOUT, "opening a connection"))?
    }

    /// The publishing channel, opened again when the broker connection was lost.
    pub(super) async fn channel(&self) -> Result<Channel, TransitError> {
        self.current().await.map(|(_, ch)| ch)
    }

    /// The publishing channel and the number of the connection it belongs to.
    async fn current(&self) -> Result<(u64, Channel), TransitError> {
        let mut held = self.held.lock().await;
        if let Some((conn, ch)) = held.open.as_ref()
            && conn.status().connected()
            && ch.status().connected()
        {
            return Ok((held.opened, ch.clone()));
        }
        held.open = None;
        let (conn, ch) = self.open().await?;
        held.opened += 1;
        held.open = Some((conn, ch.clone()));
        Ok((held.opened, ch))
    }

    /// Gives up connection number `opened` (when it is still the current one): the next
    /// group opens a new one. It is closed in the background, as the broker may not answer.
    async fn reset(&self, opened: u64) {
        let mut held = self.held.lock().await;
        if held.opened != opened {
            return;
        }
        if let Some((conn, _)) = held.open.take() {
            tracing::warn!("the message broker stopped confirming; opening a new connection");
            tokio::spawn(async move {
                let close = conn.close(200, "no confirms".into());
                let _ = tokio::time::timeout(OPEN_TIMEOUT, close).await;
            });
        }
    }

    /// Publishes one message per shard (persistent, mandatory), in order, and returns the
    /// number of the connection used and each shard's confirm to wait for. A shard not
    /// published has the error that stopped the group (an earlier one may still arrive:
    /// its requests hear of the error too and retry, which their update id makes harmless).
    async fn send_group(
        &self,
        exchange: &str,
        group: u64,
        shards: BTreeMap<u16, Vec<u8>>,
        deadline: Instant,
    ) -> (Option<u64>, Vec<Confirm>) {
        let (opened, ch) = match self.current().await {
            Ok(current) => current,
            Err(e) => {
                let e = Arc::new(e);
                return (
                    None,
                    shards.into_keys().map(|s| (s, Err(e.clone()))).collect(),
                );
            }
        };
        let mut confirms = Vec::with_capacity(shards.len());
        let mut failed: Option<Arc<TransitError>> = None;
        for (shard, body) in shards {
            if let Some(e) = &failed {
                confirms.push((shard, Err(e.clone())));
                continue;
            }
            let publish = ch.basic_publish(
                exchange.into(),
                format!("shard.{shard}").into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_message_id(message_id(group, shard).into()),
            );
            let published = match tokio::time::timeout_at(deadline, publish).await {
                Ok(published) => published.map_err(|e| Arc::new(TransitError::Broker(e))),
                Err(_) => Err(Arc::new(TransitError::Timeout(
                    CONFIRM_TIMEOUT,
                    "publishing",
                ))),
            };
            if let Err(e) = &published {
                failed = Some(e.clone());
            }
            confirms.push((shard, published));
        }
        (Some(opened), confirms)
    }
}

/// A shard's confirm to wait for, or why its message was not published.
type Confirm = (u16, Result<PublisherConfirm, Arc<TransitError>>);

/// The id of a group's message to a shard: a message the broker returns (unroutable) is
/// known by it, whichever confirm the client library hands the return to.
fn message_id(group: u64, shard: u16) -> String {
    format!("{group}.{shard}")
}

/// The group and shard a [`message_id`] names.
fn parse_message_id(id: &str) -> Option<(u64, u16)> {
    let (group, shard) = id.split_once('.')?;
    Some((group.parse().ok()?, shard.parse().ok()?))
}

/// A published group waiting for its confirms.
struct Sent {
    group: u64,
    /// The number of the connection it went out on (none when none could be opened).
    opened: Option<u64>,
    /// When its confirms are overdue.
    deadline: Instant,
    confirms: Vec<Confirm>,
    /// Updates per shard.
    counts: BTreeMap<u16, u64>,
    /// Each request's reply and the shards its updates went to.
    replies: Vec<(Reply, Vec<u16>)>,
    slot: OwnedSemaphorePermit,
}

/// Answers the groups in the order they were published, each request from its own
/// shards' confirms (one shard's failure is not another's, though they went together).
/// In order, because the broker returns an unroutable message just before its ack, and
/// the client library hands the return to the first confirm it completes next, which may
/// be an earlier message's: by the time a group's last confirm is in, every return of its
/// messages has been seen, and the message id says whose it is.
async fn reap(link: Arc<Link>, mut sent: mpsc::UnboundedReceiver<Sent>) {
    // (group, shard) of the messages returned and not yet matched to their group.
    let mut returned: BTreeSet<(u64, u16)> = BTreeSet::new();
    while let Some(s) = sent.recv().await {
        let mut outcomes: BTreeMap<u16, Result<(), Arc<TransitError>>> = BTreeMap::new();
        for (shard, confirm) in s.confirms {
            let outcome = match confirm {
                Err(e) => Err(e),
                Ok(c) => match tokio::time::timeout_at(s.deadline, c).await {
                    Err(_) => Err(Arc::new(TransitError::Timeout(
                        CONFIRM_TIMEOUT,
                        "confirming",
                    ))),
                    Ok(Err(e)) => Err(Arc::new(TransitError::Broker(e))),
                    Ok(Ok(confirmation)) => {
                        let acked = confirmation.is_ack();
                        if let Some(m) = confirmation.take_message()
                            && let Some(id) = m.delivery.properties.message_id()
                            && let Some(at) = parse_message_id(id.as_str())
                        {
                            returned.insert(at);
                        }
                        if acked {
                            Ok(())
                        } else {
                            Err(Arc::new(TransitError::Nacked))
                        }
                    }
                },
            };
            outcomes.insert(shard, outcome);
        }
        // Publishing or confirming took too long: the next group goes on a new connection.
        let timed_out = outcomes.values().any(|o| {
            o.as_ref()
                .is_err_and(|e| matches!(**e, TransitError::Timeout(..)))
        });
        if let (true, Some(opened)) = (timed_out, s.opened) {
            link.reset(opened).await;
        }
        for (shard, outcome) in outcomes.iter_mut() {
            if returned.remove(&(s.group, *shard)) && outcome.is_ok() {
                *outcome = Err(Arc::new(TransitError::Unroutable));
            }
        }
        // Returns of groups already answered cannot come any more.
        returned = returned.split_off(&(s.group + 1, 0));
        let published: u64 = outcomes
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(shard, _)| s.counts.get(shard).copied().unwrap_or(0))
            .sum();
        metrics::counter!("orderflow_transit_published_total", "transport" => "rabbitmq")
            .increment(published);
        for (reply, own) in s.replies {
            let result = own
                .iter()
                .find_map(|shard| outcomes.get(shard).and_then(|r| r.clone().err()))
                .map_or(Ok(()), Err);
            let _ = reply.send(result);
        }
        drop(s.slot);
    }
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
    pub(super) async fn publish(&self, updates: Vec<Encoded>) -> Result<(), Arc<TransitError>> {
        let (reply, answer) = oneshot::channel();
        let stopped = || Arc::new(TransitError::Encode("the publisher has stopped".into()));
        self.tx
            .send((updates, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

async fn run(link: Arc<Link>, exchange: String, mut rx: mpsc::Receiver<(Vec<Encoded>, Reply)>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let (reaper, confirms) = mpsc::unbounded_channel();
    tokio::spawn(reap(Arc::clone(&link), confirms));
    let mut group = 0_u64;
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
        let mut counts: BTreeMap<u16, u64> = BTreeMap::new();
        let mut replies = Vec::with_capacity(jobs.len());
        for (encoded, reply) in jobs {
            let mut own: Vec<u16> = Vec::with_capacity(encoded.len());
            for (shard, json) in encoded {
                let body = shards.entry(shard).or_insert_with(|| vec![b'[']);
                if body.len() > 1 {
                    body.push(b',');
                }
                body.extend_from_slice(&json);
                *counts.entry(shard).or_default() += 1;
                if !own.contains(&shard) {
                    own.push(shard);
                }
            }
            replies.push((reply, own));
        }
        for body in shards.values_mut() {
            body.push(b']');
        }
        metrics::histogram!("orderflow_transit_group_size", "transport" => "rabbitmq")
            .record(counts.values().sum::<u64>() as f64);
        // Published here, one group after the other (the channel keeps their order, so
        // a shard's, so an order's); confirmed by the reaper, so the next group can form
        // and go meanwhile.
        group += 1;
        let deadline = Instant::now() + CONFIRM_TIMEOUT;
        let (opened, confirms) = link.send_group(&exchange, group, shards, deadline).await;
        let sent = Sent {
            group,
            opened,
            deadline,
            confirms,
            counts,
            replies,
            slot,
        };
        if reaper.send(sent).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{message_id, parse_message_id};

    #[test]
    fn a_message_id_names_its_group_and_shard() {
        assert_eq!(parse_message_id(&message_id(7, 3)), Some((7, 3)));
        assert_eq!(parse_message_id("not an id"), None);
        assert_eq!(parse_message_id("7.x"), None);
    }
}
