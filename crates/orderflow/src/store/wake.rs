//! Wake-ups behind one seam: "inbox updates may be due" for the worker, "effects may be
//! due" for the effects executor, and "update `seq` settled" (finished an attempt, or its first answer was stored) for callers waiting on
//! an update. A [`super::Tx`] raises them and they are delivered after its commit: in this
//! process through in-memory signals, and on PostgreSQL to every process through `NOTIFY`
//! (see `postgres::notify` and `postgres::listen`). Another transport (a message broker)
//! would deliver here too; the worker and the waiters only see [`Wakeups`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Settled updates kept for waiters that fell behind; one that falls further behind reads
/// its row again (it may have missed its own).
const SETTLED_BACKLOG: usize = 4096;

/// How long a new subscription to settled updates waits for this process's `LISTEN` to be
/// in place (PostgreSQL), so that a wake-up from another process right after it is not
/// lost. Past it (the server is slow or unreachable) the waiter's fallback polling covers.
const LISTEN_READY_WAIT: Duration = Duration::from_secs(2);

/// What a transaction raised, delivered at its commit.
#[derive(Debug, Default)]
pub(crate) struct Raised {
    /// Updates may have become due (stored, woken, retried).
    pub inbox: bool,
    /// Updates (by `seq`) that settled or got their first answer.
    pub settled: Vec<i64>,
    /// After-commit effects may have become due (written, retried).
    pub effects: bool,
}

impl Raised {
    pub(crate) fn is_empty(&self) -> bool {
        !self.inbox && !self.effects && self.settled.is_empty()
    }
}

/// The store's wake-ups; see the module documentation. Shared by every clone of a store.
#[derive(Debug)]
pub struct Wakeups {
    inbox: Notify,
    effects: Notify,
    pub(super) settled: broadcast::Sender<i64>,
    /// PostgreSQL: the pool to `LISTEN` on, started at the first wait.
    listen: Option<PgPool>,
    listening: AtomicBool,
    /// True while the `LISTEN` is in place.
    pub(super) listen_ready: watch::Sender<bool>,
    closed: CancellationToken,
}

impl Wakeups {
    pub(crate) fn new(listen: Option<PgPool>) -> Self {
        Self {
            inbox: Notify::new(),
            effects: Notify::new(),
            settled: broadcast::channel(SETTLED_BACKLOG).0,
            listen,
            listening: AtomicBool::new(false),
            listen_ready: watch::channel(false).0,
            closed: CancellationToken::new(),
        }
    }

    /// Returns when inbox updates may have become due, here or (PostgreSQL) in another
    /// process. A wake-up raised while nobody waits is kept for the next wait.
    pub async fn inbox_due(self: &Arc<Self>) {
        self.start();
        self.inbox.notified().await;
    }

    /// Says, in this process, that updates may be due (a finished update lets the next of
    /// its order go; an order changed).
    pub fn raise_inbox(&self) {
        self.inbox.notify_one();
    }

    /// Returns when after-commit effects may have become due, here or (PostgreSQL) in
    /// another process. A wake-up raised while nobody waits is kept for the next wait.
    pub async fn effects_due(self: &Arc<Self>) {
        self.start();
        self.effects.notified().await;
    }

    /// Says, in this process, that effects may be due.
    pub fn raise_effects(&self) {
        self.effects.notify_one();
    }

    /// Starts listening for settled updates; subscribe before reading the row, so nothing
    /// that settles after the read is missed. On PostgreSQL it returns once this process
    /// listens for other processes' wake-ups (at most [`LISTEN_READY_WAIT`]; the first
    /// subscription of a process starts the listener).
    pub async fn settled(self: &Arc<Self>) -> Settled {
        self.start();
        let settled = Settled {
            rx: self.settled.subscribe(),
        };
        if self.listen.is_some() {
            let mut ready = self.listen_ready.subscribe();
            let _ = tokio::time::timeout(LISTEN_READY_WAIT, ready.wait_for(|r| *r)).await;
        }
        settled
    }

    /// Delivers what a committed transaction raised, in this process.
    pub(crate) fn deliver(&self, raised: &Raised) {
        if raised.inbox {
            self.inbox.notify_one();
        }
        if raised.effects {
            self.effects.notify_one();
        }
        self.publish_settled(&raised.settled);
    }

    pub(crate) fn publish_settled(&self, seqs: &[i64]) {
        if self.settled.receiver_count() == 0 {
            return;
        }
        for &seq in seqs {
            // No receiver left is fine: nobody waits.
            let _ = self.settled.send(seq);
        }
    }

    pub(crate) fn close(&self) {
        self.closed.cancel();
    }

    /// PostgreSQL: starts the one listener task of this store, once.
    fn start(self: &Arc<Self>) {
        let Some(pool) = &self.listen else { return };
        if self.listening.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(super::postgres::listen(
            pool.clone(),
            Arc::downgrade(self),
            self.closed.clone(),
        ));
    }
}

/// A subscription to settled updates (see [`Wakeups::settled`]).
pub struct Settled {
    rx: broadcast::Receiver<i64>,
}

impl Settled {
    /// Returns when any update may have settled, or after `fallback`: for a caller that
    /// waits for an update it knows by id only (a broker transport's update, whose `seq`
    /// is given when its consumer stores it).
    pub async fn any(&mut self, fallback: Duration, deadline: Instant) {
        let until = deadline.min(Instant::now() + fallback);
        if let Ok(Err(broadcast::error::RecvError::Closed)) =
            tokio::time::timeout_at(until, self.rx.recv()).await
        {
            tokio::time::sleep_until(until).await;
        }
    }

    /// Returns when update `seq` may have settled, or after `fallback` (the caller reads
    /// the update's row again either way; the fallback covers a wake-up that was lost, such
    /// as one from another process while the listener reconnected).
    pub async fn wait(&mut self, seq: i64, fallback: Duration, deadline: Instant) {
        let until = deadline.min(Instant::now() + fallback);
        loop {
            match tokio::time::timeout_at(until, self.rx.recv()).await {
                Ok(Ok(s)) if s == seq => return,
                Ok(Ok(_)) => {}
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => return,
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    tokio::time::sleep_until(until).await;
                    return;
                }
                Err(_) => return,
            }
        }
    }
}
