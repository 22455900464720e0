//! The Redis transport's shard consumers: one per shard while it holds the shard's lease,
//! claiming what a dead holder left pending (`XAUTOCLAIM`) before reading new entries,
//! applying through the inbox and acknowledging after the database commit.

use super::*;

impl Redis {
    /// One consumer per shard until `shutdown`, each on its own connection, starting
    /// again with backoff when Redis goes away or the lease was lost.
    pub fn spawn_consumers(
        self: &Arc<Self>,
        inbox: &Inbox,
        shutdown: &CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..self.config.shards)
            .map(|n| {
                let redis = Arc::clone(self);
                let inbox = inbox.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move { redis.consume(n, inbox, shutdown).await })
            })
            .collect()
    }

    async fn consume(&self, shard: u16, inbox: Inbox, shutdown: CancellationToken) {
        let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10)).jittered();
        let mut failures = 0_u32;
        while !shutdown.is_cancelled() {
            match self
                .consume_once(shard, &inbox, &shutdown, &mut failures)
                .await
            {
                Ok(()) => return,
                Err(e) => {
                    failures += 1;
                    let delay = backoff.delay(failures.saturating_sub(1));
                    tracing::warn!(shard, error = %e, retry_in_ms = delay.as_millis() as u64, "Redis consumer stopped; starting again");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Takes the shard's lease (waiting while another process holds it; `failures` is
    /// reset once it has it), claims what earlier holders left pending, then reads new
    /// entries until `shutdown` or the lease is lost.
    async fn consume_once(
        &self,
        shard: u16,
        inbox: &Inbox,
        shutdown: &CancellationToken,
        failures: &mut u32,
    ) -> Result<(), TransitError> {
        let mut con = self.open().await?;
        self.ensure_group(&mut con, shard).await?;
        let me = inbox.owner().to_owned();
        let lease_key = self.lease_key(shard);
        let lease_ms = self.config.lease.as_millis() as u64;
        let renew_every = self.config.lease / 3;
        // Wait for the lease.
        loop {
            let taken: Option<String> = redis::cmd("SET")
                .arg(&lease_key)
                .arg(&me)
                .arg("NX")
                .arg("PX")
                .arg(lease_ms)
                .query_async(&mut con)
                .await
                .map_err(redis_error)?;
            let ours = taken.is_some()
                || redis::Script::new(RENEW)
                    .key(&lease_key)
                    .arg(&me)
                    .arg(lease_ms)
                    .invoke_async::<i64>(&mut con)
                    .await
                    .map_err(redis_error)?
                    == 1;
            if ours {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(renew_every) => {}
                () = shutdown.cancelled() => return Ok(()),
            }
        }
        tracing::debug!(shard, "Redis shard lease taken");
        // Working again: the next failure starts the backoff from its first step.
        *failures = 0;
        // Renewed on a connection of its own while this consumer works.
        let lost = Arc::new(AtomicBool::new(false));
        let renewing = CancellationToken::new();
        let renewal = {
            let mut con = self.open().await?;
            let (lost, renewing, key, me) = (
                Arc::clone(&lost),
                renewing.clone(),
                lease_key.clone(),
                me.clone(),
            );
            tokio::spawn(async move {
                let script = redis::Script::new(RENEW);
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(renew_every) => {}
                        () = renewing.cancelled() => return,
                    }
                    let renewed = script
                        .key(&key)
                        .arg(&me)
                        .arg(lease_ms)
                        .invoke_async::<i64>(&mut con)
                        .await;
                    match renewed {
                        Ok(1) => {}
                        Ok(_) => {
                            lost.store(true, Ordering::Relaxed);
                            return;
                        }
                        // Kept trying: the lease lasts three renewal periods.
                        Err(e) => tracing::warn!(error = %e, "renewing a Redis shard lease failed"),
                    }
                }
            })
        };
        let result = self
            .consume_held(shard, &mut con, &me, &lost, inbox, shutdown)
            .await;
        renewing.cancel();
        let _ = renewal.await;
        if shutdown.is_cancelled() {
            // Given up at once, so another process takes the shard without waiting.
            let _: Result<i64, _> = redis::Script::new(RELEASE)
                .key(&lease_key)
                .arg(&me)
                .invoke_async(&mut con)
                .await;
        }
        result
    }

    async fn consume_held(
        &self,
        shard: u16,
        con: &mut MultiplexedConnection,
        me: &str,
        lost: &AtomicBool,
        inbox: &Inbox,
        shutdown: &CancellationToken,
    ) -> Result<(), TransitError> {
        let stream = self.shard_key(shard);
        let batch = usize::from(self.config.batch);
        // What earlier holders (dead, or this process before it lost its connection) read
        // and did not acknowledge: older than anything new, so applied first.
        let mut start = "0-0".to_owned();
        loop {
            let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(GROUP)
                .arg(me)
                .arg(0)
                .arg(&start)
                .arg("COUNT")
                .arg(batch)
                .query_async(con)
                .await
                .map_err(redis_error)?;
            if !claimed.claimed.is_empty() {
                tracing::info!(
                    shard,
                    entries = claimed.claimed.len(),
                    "claimed entries a previous consumer had not acknowledged"
                );
                if !self
                    .handle(&stream, con, claimed.claimed, true, inbox, shutdown)
                    .await?
                {
                    return Ok(());
                }
            }
            if claimed.next_stream_id == "0-0" {
                break;
            }
            start = claimed.next_stream_id;
        }
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if lost.load(Ordering::Relaxed) {
                return Err(TransitError::LeaseLost);
            }
            let read: Option<StreamReadReply> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(me)
                .arg("COUNT")
                .arg(batch)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&stream)
                .arg(">")
                .query_async(con)
                .await
                .map_err(redis_error)?;
            let entries: Vec<StreamId> = read
                .into_iter()
                .flat_map(|r| r.keys)
                .flat_map(|k| k.ids)
                .collect();
            if entries.is_empty() {
                continue;
            }
            if !self
                .handle(&stream, con, entries, false, inbox, shutdown)
                .await?
            {
                return Ok(());
            }
        }
    }

    /// Applies `entries` through the inbox, dead-letters what cannot be read or stored,
    /// then acknowledges and deletes them. `false`: stopped before the database had them
    /// (nothing acknowledged).
    async fn handle(
        &self,
        stream: &str,
        con: &mut MultiplexedConnection,
        entries: Vec<StreamId>,
        redelivered: bool,
        inbox: &Inbox,
        shutdown: &CancellationToken,
    ) -> Result<bool, TransitError> {
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let mut readable = Vec::with_capacity(entries.len());
        let mut dead: Vec<(String, Vec<u8>)> = Vec::new();
        for e in entries {
            let body = match e.map.get(FIELD) {
                Some(Value::BulkString(b)) => b.clone(),
                Some(Value::SimpleString(s)) => s.clone().into_bytes(),
                _ => Vec::new(),
            };
            match serde_json::from_slice::<TransitMessage>(&body) {
                Ok(message) => readable.push(Delivered {
                    message,
                    redelivered,
                }),
                Err(err) => {
                    tracing::warn!(stream, entry = %e.id, error = %err, bytes = body.len(), "unreadable stream entry; dead-lettered");
                    dead.push((e.id, body));
                }
            }
        }
        let refused = match inbox.settle_transit(readable, true, NO_TTL, shutdown).await {
            Ok(refused) => refused,
            Err(TransitError::Stopped) => return Ok(false),
            Err(e) => return Err(e),
        };
        for m in refused {
            let body = serde_json::to_vec(&m).map_err(|e| TransitError::Encode(e.to_string()))?;
            dead.push((m.id, body));
        }
        // Dead letters, acknowledgement and deletion at once.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (origin, body) in &dead {
            pipe.cmd("XADD")
                .arg(self.key("dead"))
                .arg("*")
                .arg(FIELD)
                .arg(body.as_slice())
                .arg("origin")
                .arg(format!("{stream} {origin}"))
                .ignore();
        }
        pipe.cmd("XACK").arg(stream).arg(GROUP).arg(&ids).ignore();
        pipe.cmd("XDEL").arg(stream).arg(&ids).ignore();
        pipe.query_async::<()>(con).await.map_err(redis_error)?;
        if !dead.is_empty() {
            metrics::counter!("orderflow_transit_dead_lettered_total", "transport" => "redis")
                .increment(dead.len() as u64);
        }
        Ok(true)
    }
}
