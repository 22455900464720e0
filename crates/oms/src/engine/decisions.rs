//! What one engine call decided: the steps per item (moved, stayed, not applicable), the
//! commands it ran, the timers to drop and set, and the effects for after the commit.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{EventId, StateId, TransitionId};
use crate::plugin::{AttributeChange, Effect, PluginError, PluginKind};

/// Why an event fired. Future triggers (e.g. a scheduled event) may add causes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Cause {
    /// Triggered by the caller (API, ERP update, manual event).
    Trigger,
    /// The onEnter event of the state an item just entered.
    OnEnter,
    /// A timeout elapsed.
    Timeout,
    /// An event-less transition whose condition held (or had none).
    Condition,
}

impl Cause {
    /// The cause as it is serialized (`trigger`, `on_enter`, `timeout`, `condition`): a
    /// stable label for history and logs, so callers need not match every cause.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::OnEnter => "on_enter",
            Self::Timeout => "timeout",
            Self::Condition => "condition",
        }
    }
}

/// One decision about one item.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The item's id.
    pub item: i64,
    /// `None` for event-less transitions.
    pub event: Option<EventId>,
    /// Why the event fired (or the event-less transition was tried).
    pub cause: Cause,
    /// What happened to the item.
    pub outcome: Outcome,
}

/// What one step did to one item. New outcomes may be added; read moves through
/// [`Decisions::moves`] when only they matter.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// The item took `transition` from `from` to `to`.
    Moved {
        /// The state it left.
        from: StateId,
        /// The state it entered.
        to: StateId,
        /// The transition taken.
        transition: TransitionId,
    },
    /// No transition out of the item's state has the event.
    NotApplicable {
        /// The item's state.
        state: StateId,
    },
    /// The event applies but the item did not move.
    Stayed {
        /// The item's state.
        state: StateId,
        /// Why it did not move.
        reason: StayReason,
    },
}

/// Why an item an event applies to did not move. New reasons may be added.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum StayReason {
    /// Every transition has a condition and none held.
    NoConditionHeld,
    /// The event's command failed; its staged changes were dropped.
    CommandFailed {
        /// The command's name.
        command: String,
        /// What the command said.
        error: PluginError,
    },
    /// A condition could not answer.
    ConditionFailed {
        /// The condition's name.
        condition: String,
        /// What the condition said.
        error: PluginError,
    },
    /// A condition or command name has no plugin and the policy is
    /// [`UnboundPolicy::Fail`].
    Unbound {
        /// Condition or command.
        kind: PluginKind,
        /// The name the process uses.
        name: String,
    },
    /// The event repeated more than [`EngineOptions::max_event_repeats`] times.
    LoopGuard,
}

impl std::fmt::Display for StayReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoConditionHeld => f.write_str("no condition held"),
            Self::CommandFailed { command, error } => {
                write!(f, "command {command} failed: {error}")
            }
            Self::ConditionFailed { condition, error } => {
                write!(f, "condition {condition} failed: {error}")
            }
            Self::Unbound { kind, name } => write!(f, "{kind} {name} is not bound"),
            Self::LoopGuard => f.write_str("event repeated too often (loop guard)"),
        }
    }
}

/// One run of an event's command.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandRun {
    /// The command's name.
    pub command: String,
    /// The event whose command it is.
    pub event: EventId,
    /// Ids of the items it ran for (one, or an order's items in one source state).
    pub items: Vec<i64>,
    /// How it went.
    pub outcome: CommandOutcome,
}

/// How a command run went. New outcomes may be added.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum CommandOutcome {
    /// It succeeded; its changes and effects are in the decisions.
    Ok,
    /// It failed; its items stay where they are.
    Failed(PluginError),
    /// Nothing is bound to the name and the policy is lenient: skipped.
    Skipped,
}

/// What a timer fires. Exhaustive on purpose: a caller stores and fires every timer, and a
/// kind it does not know would be a timer silently lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// The event's timeout.
    Timeout(EventId),
    /// Re-check the state's event-less transitions.
    Condition,
}

/// A timer to set for an item in `state`; it is void once the item leaves that state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    /// The item's id.
    pub item: i64,
    /// The state the item is in; the timer only counts while it stays there.
    pub state: StateId,
    /// What to do when it is due.
    pub kind: TimerKind,
    /// When to call [`Engine::check`] for the item.
    pub due_at: DateTime<Utc>,
}

/// Everything one engine call decided. The order passed in has already been updated
/// (states, entry times, attributes); these are the rows to write beside it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decisions {
    /// What happened to each item, in order (moves, stays, not applicable).
    pub steps: Vec<Step>,
    /// The commands that ran, in order.
    pub commands: Vec<CommandRun>,
    /// Items whose state changed: drop all their timers.
    pub timers_dropped: Vec<i64>,
    /// Timers for the states items are in now (set after dropping).
    pub timers_set: Vec<Timer>,
    /// Work for the caller to carry out with or after its transaction.
    pub effects: Vec<Effect>,
    /// Attribute writes of successful commands, already applied to the order passed in.
    pub attribute_changes: Vec<AttributeChange>,
}

impl Decisions {
    /// The moves, in the order they happened.
    pub fn moves(&self) -> impl Iterator<Item = (i64, StateId, StateId)> + '_ {
        self.steps.iter().filter_map(|s| match s.outcome {
            Outcome::Moved { from, to, .. } => Some((s.item, from, to)),
            _ => None,
        })
    }

    /// Items for which the triggered event was not applicable.
    pub fn not_applicable(&self) -> impl Iterator<Item = (i64, StateId)> + '_ {
        self.steps.iter().filter_map(|s| match s.outcome {
            Outcome::NotApplicable { state } => Some((s.item, state)),
            _ => None,
        })
    }

    /// True when the order changed: an item moved or an attribute was set.
    pub fn changed(&self) -> bool {
        self.moves().next().is_some() || !self.attribute_changes.is_empty()
    }

    /// The first retryable plugin failure, if any: a worker may roll back and try again.
    pub fn retryable_failure(&self) -> Option<&PluginError> {
        self.commands.iter().find_map(|c| match &c.outcome {
            CommandOutcome::Failed(e) if e.retryable => Some(e),
            _ => None,
        })
    }

    /// The first command that failed for good (not retryable), by name, with its error:
    /// triggering the same event again fails the same way.
    pub fn fatal_command_failure(&self) -> Option<(&str, &PluginError)> {
        self.commands.iter().find_map(|c| match &c.outcome {
            CommandOutcome::Failed(e) if !e.retryable => Some((c.command.as_str(), e)),
            _ => None,
        })
    }
}

/// A call the engine refuses before deciding anything; the order is unchanged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineError {
    /// The triggered event is not defined by the process.
    #[error("process {process} has no event {event:?}")]
    UnknownEvent {
        /// The process's name.
        process: String,
        /// The event asked for.
        event: String,
    },
    /// An item id asked for is not an item of the order.
    #[error("order {order} has no item {item}")]
    UnknownItem {
        /// The order's reference.
        order: String,
        /// The id asked for.
        item: i64,
    },
}
