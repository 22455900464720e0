//! The group-commit writer: one task stores the updates of whatever requests queued up
//! while the previous commit was running, in one transaction.
//!
//! Durability: an update is acknowledged only after the transaction that stored it has
//! committed. On SQLite that commit is an fsync of the WAL (`synchronous = FULL`, see
//! `store::Store::connect`), so an acknowledged update survives power loss, not only a
//! crash of the process. The cost of that fsync is shared by the group.

use std::sync::Arc;

use super::batcher::{Batcher, Flush};
use crate::domain::OrderService;
use crate::store::StoreError;
use crate::store::group::GroupWriter;
use crate::store::inbox::{NewUpdate, Stored};

/// The updates of one request, stored together.
pub struct StoreBatch(pub Vec<NewUpdate>);

/// One answer per update of a request, or the store's error for all of them.
pub type Outcome = Result<Vec<Stored>, Arc<StoreError>>;

/// A request's [`Outcome`], and its rows, handed back (see `Writer::flush`).
pub struct BatchAnswer {
    pub stored: Outcome,
    pub rows: Vec<NewUpdate>,
}

/// Requests stored in one transaction at most (a batch request holds up to `max_batch`
/// updates).
const GROUP_REQUESTS: usize = 256;

pub(super) fn spawn_writer(service: OrderService) -> Batcher<StoreBatch, BatchAnswer> {
    let store = service.store().clone();
    let writer = Writer {
        group: GroupWriter::new(store),
    };
    // On a thread of its own: the SQLite group writer runs its statements synchronously
    // (`store::sqlite::group`) and must not block a runtime worker; the PostgreSQL one waits
    // for its commit on a connection of its own (`store::postgres::group`), and the answer
    // wakes it there at once instead of queueing behind the requests on the server's
    // runtime. Either way, the one serial step of the ingest does not wait for a turn.
    spawn_on_own_thread(writer)
}

/// Runs the writer task on a thread of its own, with a runtime of its own; the thread ends
/// with the task, when every handle to the writer is dropped.
fn spawn_on_own_thread(writer: Writer) -> Batcher<StoreBatch, BatchAnswer> {
    let (handle, started) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("inbox-writer".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the inbox writer");
            runtime.block_on(async move {
                let (batcher, task) = Batcher::spawn(GROUP_REQUESTS, 4096, writer);
                let _ = handle.send(batcher);
                let _ = task.await;
            });
        });
    match thread.map(|_| started.recv()) {
        Ok(Ok(batcher)) => batcher,
        _ => panic!("cannot start the inbox writer's thread"),
    }
}

/// The writer task's side: stores the requests of a batch as one group.
struct Writer {
    group: GroupWriter,
}

impl Writer {
    /// Stores a group: `all` holds the updates of requests of `sizes` updates each, in
    /// order. One answer per request.
    async fn store(&mut self, sizes: &[usize], all: &[NewUpdate]) -> Vec<Outcome> {
        metrics::histogram!("orderflow_inbox_group_commit_size").record(all.len() as f64);
        // How long the requests of a group wait for their commit (and every request that
        // queued behind it for the next): a stall of the store shows here first.
        let started = std::time::Instant::now();
        let stored = self.group.insert(all).await;
        metrics::histogram!("orderflow_inbox_group_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        match stored {
            Ok(stored) => {
                // The store's commit woke the worker (Store::wakeups).
                let mut stored = stored.into_iter();
                sizes
                    .iter()
                    .map(|&n| Ok(stored.by_ref().take(n).collect()))
                    .collect()
            }
            Err(e) if sizes.len() > 1 => {
                // One request's bad row must not fail the others that shared its
                // transaction: store each request on its own, so only a request whose own
                // rows fail gets the error.
                tracing::warn!(error = %e, requests = sizes.len(), "storing a group failed; storing its requests one by one");
                let mut answers = Vec::with_capacity(sizes.len());
                let mut start = 0;
                for &n in sizes {
                    answers.push(self.store_one(&all[start..start + n]).await);
                    start += n;
                }
                answers
            }
            Err(e) => {
                tracing::error!(error = %e, updates = all.len(), "storing updates failed");
                vec![Err(Arc::new(e))]
            }
        }
    }

    /// Stores one request's updates in a transaction of their own.
    async fn store_one(&mut self, updates: &[NewUpdate]) -> Outcome {
        match self.group.insert(updates).await {
            Ok(stored) => Ok(stored),
            Err(e) => {
                tracing::error!(error = %e, updates = updates.len(), "storing updates failed");
                Err(Arc::new(e))
            }
        }
    }
}

impl Flush<StoreBatch, BatchAnswer> for Writer {
    /// Stores the requests' updates as one group. Each request gets its rows back, in the
    /// vector it sent them in, and its task drops them: they were made on the server's
    /// runtime threads, and are freed there instead of each of their strings and JSON
    /// values being freed from this thread (a free from another thread than the one that
    /// allocated costs the allocator more, on both threads).
    async fn flush(&mut self, mut requests: Vec<StoreBatch>) -> Vec<BatchAnswer> {
        let sizes: Vec<usize> = requests.iter().map(|g| g.0.len()).collect();
        let mut all = Vec::with_capacity(sizes.iter().sum());
        for request in &mut requests {
            // Moves the rows; the request's vector keeps its capacity for their return.
            all.append(&mut request.0);
        }
        let answers = self.store(&sizes, &all).await;
        let mut rows = all.into_iter();
        requests
            .into_iter()
            .zip(sizes)
            .zip(answers)
            .map(|((StoreBatch(mut back), n), stored)| {
                back.extend(rows.by_ref().take(n));
                BatchAnswer { stored, rows: back }
            })
            .collect()
    }

    async fn idle(&mut self) {
        self.group.release();
    }
}
