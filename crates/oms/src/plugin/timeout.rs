//! Timeout processors: Spryker's `timeoutProcessor="OmsTimeout/Initiation"` on an event
//! names a plugin that computes when the event's timeout is due, instead of "entered the
//! state + `timeout`". They are looked up by name like conditions and commands.
//!
//! Until a processor is bound, the plain timeout applies (and `process check` lists the
//! name among the unbound ones; strict mode refuses it).

use chrono::{DateTime, Utc};

use crate::duration::Timeout;
use crate::engine::{Item, Order};

/// What a timeout processor sees. Time is passed in: `entered_at` is when the item entered
/// the state whose timeout event is being scheduled.
#[derive(Clone, Copy, Debug)]
pub struct TimeoutContext<'a> {
    /// The order the item belongs to.
    pub order: &'a Order,
    /// The item whose timeout is scheduled.
    pub item: &'a Item,
    /// The timeout event's name.
    pub event: &'a str,
    /// The event's own `timeout="..."`, if it has one.
    pub timeout: Option<&'a Timeout>,
    /// When the item entered the state.
    pub entered_at: DateTime<Utc>,
}

impl TimeoutContext<'_> {
    /// Spryker's answer without a processor: `entered_at + timeout`.
    pub fn plain(&self) -> Option<DateTime<Utc>> {
        self.timeout.map(|t| t.after(self.entered_at))
    }
}

/// Decides when an item's timeout event is due.
pub trait TimeoutProcessor: Send + Sync {
    /// The due time; `None` means the processor has no answer for this item and the plain
    /// timeout applies (none at all when the event has no `timeout`).
    fn due_at(&self, ctx: &TimeoutContext<'_>) -> Option<DateTime<Utc>>;

    /// Whether [`TimeoutProcessor::due_at`] may block its thread; as
    /// [`Command::may_block`](crate::plugin::Command::may_block).
    fn may_block(&self) -> bool {
        true
    }
}
