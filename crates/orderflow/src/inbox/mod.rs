//! The durable inbox of ERP updates: accepted (stored, then acknowledged), processed by the
//! one processing function, inline in wait mode or by the worker.
//!
//! - [`model`]: the update as the ERP sends it and its status as the API shows it.
//! - [`ingest`]: the typed API transports call: validation, the idempotency rule, and
//!   the answer in async or wait mode.
//! - [`writer`]: group-committed inserts.
//! - [`follow_up`]: the update a command's follow-up event becomes, stored with the change
//!   that caused it.
//! - [`process`]: applies claimed updates to their orders; the outcome is written in the
//!   same transaction as the order change, so an update is never applied twice.
//! - [`worker`]: claims due updates under a lease and processes them.
//! - [`ops`]: what operators do: list, retry, replay by filter, counts for stats and gauges.

pub mod batcher;
pub mod follow_up;
pub mod ingest;
pub mod model;
pub mod ops;
pub mod process;
pub mod transit;
pub mod worker;
pub mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::config::{Config, ErpConfig, EventConfig, EventPolicy, WorkerConfig};
use crate::domain::OrderService;
use crate::store::Store;
use batcher::Batcher;
use writer::StoreBatch;

/// The inbox's settings: the `[erp]`, `[worker]` and `[events]` sections of [`Config`], as
/// read (durations typed), and the few values derived from them.
#[derive(Clone, Debug)]
pub struct InboxSettings {
    pub erp: ErpConfig,
    pub worker: WorkerConfig,
    /// Per event name; events not listed are parked for [`DEFAULT_PARK_TTL`].
    pub events: BTreeMap<String, EventConfig>,
    /// How often a caller waiting for an update (wait mode, a repeated key) reads it again
    /// when no wake-up came: the floor under the store's settled wake-ups.
    pub settle_poll: Duration,
}

/// The default of [`InboxSettings::settle_poll`].
pub const SETTLE_POLL: Duration = Duration::from_secs(1);

/// How long an update is kept parked when its event has no `park_ttl`.
pub const DEFAULT_PARK_TTL: Duration = Duration::from_secs(72 * 3600);

impl InboxSettings {
    pub fn from_config(c: &Config) -> Self {
        Self {
            erp: c.erp.clone(),
            worker: c.worker.clone(),
            events: c.events.clone(),
            settle_poll: SETTLE_POLL,
        }
    }

    /// Wait mode's time without `Prefer: wait=N`.
    pub fn default_wait(&self) -> Duration {
        Duration::from_secs(self.erp.default_wait_seconds)
    }

    /// Updates in one batch request at most.
    pub fn max_batch(&self) -> usize {
        self.erp.max_batch.max(1)
    }

    /// Batches in flight per worker process (at least 1).
    pub fn concurrency(&self) -> u32 {
        self.worker.concurrency.max(1)
    }

    /// Failed attempts before an update goes `dead`.
    pub fn max_attempts(&self) -> u32 {
        self.worker.max_attempts.max(1)
    }

    /// Batches whose process ended that an update may be in before it goes `dead`.
    pub fn max_crashes(&self) -> u32 {
        self.worker.max_crashes.max(1)
    }

    /// The policy and park time limit for an event name (`None`: an update without event).
    pub fn policy(&self, event: Option<&str>) -> (EventPolicy, Duration) {
        event
            .and_then(|e| self.events.get(e))
            .map_or((EventPolicy::Park, DEFAULT_PARK_TTL), |e| {
                (e.policy, e.park_ttl)
            })
    }

    /// The delay before attempt `n + 1` after `n` failed ones: `backoff_base * 2^(n-1)`,
    /// capped at `backoff_max`, with jitter.
    pub fn backoff(&self, n: u32) -> Duration {
        Backoff::new(self.worker.backoff_base, self.worker.backoff_max)
            .jittered()
            .delay(n.saturating_sub(1))
    }
}

/// The inbox: the order service, its settings and the group-commit writer. Cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    service: OrderService,
    settings: Arc<InboxSettings>,
    writer: Batcher<StoreBatch, writer::BatchAnswer>,
    /// Identifies this process's leases.
    owner: Arc<str>,
    /// The broker updates are published to; `None`: the database inbox takes them.
    transit: Option<Arc<transit::Transit>>,
}

impl Inbox {
    /// Starts the inbox's writer task (it ends when the last handle is dropped).
    pub fn new(service: OrderService, settings: InboxSettings) -> Self {
        let writer = writer::spawn_writer(service.clone());
        let owner = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple());
        Self {
            service,
            settings: Arc::new(settings),
            writer,
            owner: owner.into(),
            transit: None,
        }
    }

    /// Accepts updates through `transit` (a broker) instead of the database inbox.
    #[must_use]
    pub fn with_transit(mut self, transit: Option<transit::Transit>) -> Self {
        self.transit = transit.map(Arc::new);
        self
    }

    /// The broker transport, when one is configured.
    pub fn transit(&self) -> Option<&transit::Transit> {
        self.transit.as_deref()
    }

    /// What the transport's id says about update `id`, when it is a transit id this
    /// installation issued (the update may still be in transit).
    pub fn in_transit(&self, id: &str) -> Option<transit::InTransit> {
        self.transit.as_ref()?.ids().verify(id)
    }

    pub fn service(&self) -> &OrderService {
        &self.service
    }

    pub fn store(&self) -> &Store {
        self.service.store()
    }

    pub fn settings(&self) -> &InboxSettings {
        &self.settings
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }
}
