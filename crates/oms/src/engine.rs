//! The pure engine: given an order's items, a process and an event (or the time), it decides
//! how items move, runs commands, and lists the timers to drop and set. It returns
//! [`Decisions`]; the caller persists them in one transaction.
//!
//! Target choice follows Spryker's `StateMachine\Finder`/`Trigger`: the event's command runs
//! first (per item or once per source state), then among the transitions with that event a
//! true condition wins (the last one defined when several are true), a transition without a
//! condition is the fallback (the first one defined), and none means the item stays.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::{EventId, Process, StateId, TransitionId};
use crate::plugin::{
    AttributeChange, CommandContext, CommandMode, Effect, PluginError, PluginKind, Registry,
    TimeoutContext,
};

/// Spryker's guard: one event may repeat at most this often within one trigger.
pub const MAX_EVENT_REPEATS: u32 = 10;

/// The engine's view of an order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Order {
    /// The caller's order reference; errors and plugins see it.
    pub reference: String,
    /// Order attributes that conditions read and commands write.
    pub attributes: Map<String, Value>,
    /// The items, each moving on its own.
    pub items: Vec<Item>,
}

/// The engine's view of an order item.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// The caller's item id; decisions refer to items by it.
    pub id: i64,
    /// For plugins; the engine does not read it.
    pub sku: String,
    /// For plugins; the engine does not read it.
    pub quantity: i64,
    /// The item's current state; the engine updates it when the item moves.
    pub state: StateId,
    /// When the item entered `state`: timeouts count from here.
    pub state_entered_at: DateTime<Utc>,
    /// Item attributes that conditions read and commands write.
    pub attributes: Map<String, Value>,
}

/// What to do with a condition or command name nothing is registered for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnboundPolicy {
    /// The item stays and the step says which name is unbound (Spryker throws).
    #[default]
    Fail,
    /// An unbound condition is false and an unbound command does nothing; both are reported
    /// in the decisions. For simulations and for trying out foreign processes.
    Lenient,
}

/// How the engine behaves where Spryker leaves a choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// How often one event may fire within one call before the loop guard stops it
    /// (default [`MAX_EVENT_REPEATS`]).
    pub max_event_repeats: u32,
    /// What to do with names nothing is registered for.
    pub unbound: UnboundPolicy,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_event_repeats: MAX_EVENT_REPEATS,
            unbound: UnboundPolicy::Fail,
        }
    }
}

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

/// A process, its plugins and options: everything needed to decide.
#[derive(Clone, Copy, Debug)]
pub struct Engine<'a> {
    /// The process items move through.
    pub process: &'a Process,
    /// The plugins its names are looked up in.
    pub registry: &'a Registry,
    /// Choices where Spryker leaves one.
    pub options: EngineOptions,
}

struct Run {
    decisions: Decisions,
    /// Per item index: its state changed in this call.
    moved: Vec<bool>,
    repeats: Vec<(EventId, u32)>,
    queue: VecDeque<(EventId, Vec<usize>, Cause)>,
}

impl Run {
    fn new(items: usize) -> Self {
        Self {
            decisions: Decisions::default(),
            moved: vec![false; items],
            repeats: Vec::new(),
            queue: VecDeque::new(),
        }
    }
}

impl<'a> Engine<'a> {
    /// An engine with default options (unbound names fail, Spryker's loop guard).
    pub fn new(process: &'a Process, registry: &'a Registry) -> Self {
        Self {
            process,
            registry,
            options: EngineOptions::default(),
        }
    }

    /// The same engine with other options.
    pub fn with_options(mut self, options: EngineOptions) -> Self {
        self.options = options;
        self
    }

    /// Puts every item of a new order into the initial state, sets its timers and runs the
    /// initial state's onEnter chain.
    pub fn start(&self, order: &mut Order, now: DateTime<Utc>) -> Decisions {
        let initial = self.process.initial();
        for item in &mut order.items {
            item.state = initial;
            item.state_entered_at = now;
        }
        let all: Vec<usize> = (0..order.items.len()).collect();
        let mut run = Run::new(order.items.len());
        run.moved.fill(true);
        self.queue_on_enter(&mut run, order, &all);
        self.drain(order, &mut run, now);
        self.finish(order, run, now)
    }

    /// Puts the given items into `state` as if they had just entered it, whatever state
    /// they were in (an operator's move, e.g. out of a state a new version of the process
    /// no longer has): their timers are dropped, the state's timers set and its onEnter
    /// chain runs. The move itself is not a step of the decisions (the caller records it);
    /// what onEnter does after it is.
    pub fn enter(
        &self,
        order: &mut Order,
        items: &[i64],
        state: StateId,
        now: DateTime<Utc>,
    ) -> Result<Decisions, EngineError> {
        let idxs = self.select(order, Some(items))?;
        let mut run = Run::new(order.items.len());
        for &i in &idxs {
            order.items[i].state = state;
            order.items[i].state_entered_at = now;
            run.moved[i] = true;
        }
        self.queue_on_enter(&mut run, order, &idxs);
        self.drain(order, &mut run, now);
        Ok(self.finish(order, run, now))
    }

    /// Triggers `event` on the given items (all items when `items` is `None`).
    pub fn trigger(
        &self,
        order: &mut Order,
        items: Option<&[i64]>,
        event: &str,
        now: DateTime<Utc>,
    ) -> Result<Decisions, EngineError> {
        let event_id = self
            .process
            .event_id(event)
            .ok_or_else(|| EngineError::UnknownEvent {
                process: self.process.name().to_owned(),
                event: event.to_owned(),
            })?;
        let idxs = self.select(order, items)?;
        let mut run = Run::new(order.items.len());
        run.queue.push_back((event_id, idxs, Cause::Trigger));
        self.drain(order, &mut run, now);
        Ok(self.finish(order, run, now))
    }

    /// Moves what time and conditions allow: for the given items (all when `None`), first
    /// the event-less transitions of their state, then the timeout events that are due
    /// (`state_entered_at + timeout <= now`, or the due time of the event's bound timeout
    /// processor). Items with neither are not touched.
    pub fn check(
        &self,
        order: &mut Order,
        items: Option<&[i64]>,
        now: DateTime<Utc>,
    ) -> Result<Decisions, EngineError> {
        let idxs = self.select(order, items)?;
        let mut run = Run::new(order.items.len());
        let mut by_target: Vec<usize> = Vec::new();
        for &i in &idxs {
            let state = order.items[i].state;
            let ts = self.process.eventless_from(state);
            if ts.is_empty() {
                continue;
            }
            match self.choose(order, i, ts, now) {
                Ok(Some(t)) => {
                    self.apply_move(order, &mut run, i, None, Cause::Condition, t, now);
                    by_target.push(i);
                }
                Ok(None) => {}
                Err(reason) => run.decisions.steps.push(Step {
                    item: order.items[i].id,
                    event: None,
                    cause: Cause::Condition,
                    outcome: Outcome::Stayed { state, reason },
                }),
            }
        }
        self.queue_on_enter(&mut run, order, &by_target);
        self.drain(order, &mut run, now);

        // Timeouts, for items that have not moved above: group due items by event.
        let mut due: Vec<(EventId, Vec<usize>)> = Vec::new();
        for &i in &idxs {
            if run.moved[i] {
                continue;
            }
            let state = order.items[i].state;
            for &e in self.process.timeout_events_from(state) {
                if self.due_at(order, i, e).is_some_and(|due| due <= now) {
                    match due.iter_mut().find(|(ev, _)| *ev == e) {
                        Some((_, v)) => v.push(i),
                        None => due.push((e, vec![i])),
                    }
                }
            }
        }
        for (e, members) in due {
            // An item moved by an earlier timeout event no longer waits for this one.
            let members: Vec<usize> = members.into_iter().filter(|&i| !run.moved[i]).collect();
            if !members.is_empty() {
                run.queue.push_back((e, members, Cause::Timeout));
                self.drain(order, &mut run, now);
            }
        }
        Ok(self.finish(order, run, now))
    }

    fn select(&self, order: &Order, items: Option<&[i64]>) -> Result<Vec<usize>, EngineError> {
        match items {
            None => Ok((0..order.items.len()).collect()),
            Some(ids) => ids
                .iter()
                .map(|&id| {
                    order
                        .items
                        .iter()
                        .position(|it| it.id == id)
                        .ok_or_else(|| EngineError::UnknownItem {
                            order: order.reference.clone(),
                            item: id,
                        })
                })
                .collect(),
        }
    }

    fn drain(&self, order: &mut Order, run: &mut Run, now: DateTime<Utc>) {
        while let Some((event, idxs, cause)) = run.queue.pop_front() {
            self.fire(order, run, event, idxs, cause, now);
        }
    }

    /// Queues the onEnter event of each state that `entered` items are now in.
    fn queue_on_enter(&self, run: &mut Run, order: &Order, entered: &[usize]) {
        let mut groups: Vec<(EventId, Vec<usize>)> = Vec::new();
        for &i in entered {
            if let Some(e) = self.process.on_enter_event(order.items[i].state) {
                match groups.iter_mut().find(|(ev, _)| *ev == e) {
                    Some((_, v)) => v.push(i),
                    None => groups.push((e, vec![i])),
                }
            }
        }
        for (e, v) in groups {
            run.queue.push_back((e, v, Cause::OnEnter));
        }
    }

    fn fire(
        &self,
        order: &mut Order,
        run: &mut Run,
        event: EventId,
        idxs: Vec<usize>,
        cause: Cause,
        now: DateTime<Utc>,
    ) {
        let repeats = match run.repeats.iter_mut().find(|(e, _)| *e == event) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                run.repeats.push((event, 1));
                1
            }
        };
        if repeats > self.options.max_event_repeats {
            for i in idxs {
                let item = &order.items[i];
                run.decisions.steps.push(Step {
                    item: item.id,
                    event: Some(event),
                    cause,
                    outcome: Outcome::Stayed {
                        state: item.state,
                        reason: StayReason::LoopGuard,
                    },
                });
            }
            return;
        }

        // Group applicable items by source state, in order of first appearance.
        let mut groups: Vec<(StateId, Vec<usize>)> = Vec::new();
        for i in idxs {
            let state = order.items[i].state;
            if self.process.transitions_for(state, event).is_empty() {
                run.decisions.steps.push(Step {
                    item: order.items[i].id,
                    event: Some(event),
                    cause,
                    outcome: Outcome::NotApplicable { state },
                });
                continue;
            }
            match groups.iter_mut().find(|(s, _)| *s == state) {
                Some((_, v)) => v.push(i),
                None => groups.push((state, vec![i])),
            }
        }

        let mut entered = Vec::new();
        for (state, members) in groups {
            let ready = self.run_command(order, run, event, cause, state, members, now);
            let transitions = self.process.transitions_for(state, event);
            for i in ready {
                match self.choose(order, i, transitions, now) {
                    Ok(Some(t)) => {
                        self.apply_move(order, run, i, Some(event), cause, t, now);
                        entered.push(i);
                    }
                    Ok(None) => run.decisions.steps.push(Step {
                        item: order.items[i].id,
                        event: Some(event),
                        cause,
                        outcome: Outcome::Stayed {
                            state,
                            reason: StayReason::NoConditionHeld,
                        },
                    }),
                    Err(reason) => run.decisions.steps.push(Step {
                        item: order.items[i].id,
                        event: Some(event),
                        cause,
                        outcome: Outcome::Stayed { state, reason },
                    }),
                }
            }
        }
        self.queue_on_enter(run, order, &entered);
    }

    /// Runs the event's command for one source-state group; returns the items that may move.
    #[allow(clippy::too_many_arguments)]
    fn run_command(
        &self,
        order: &mut Order,
        run: &mut Run,
        event: EventId,
        cause: Cause,
        state: StateId,
        members: Vec<usize>,
        now: DateTime<Utc>,
    ) -> Vec<usize> {
        let ev = self.process.event(event);
        let Some(name) = ev.command.as_deref() else {
            return members;
        };
        let Some(command) = self.registry.command(name) else {
            let ids = members.iter().map(|&i| order.items[i].id).collect();
            if self.options.unbound == UnboundPolicy::Lenient {
                run.decisions.commands.push(CommandRun {
                    command: name.to_owned(),
                    event,
                    items: ids,
                    outcome: CommandOutcome::Skipped,
                });
                return members;
            }
            for &i in &members {
                run.decisions.steps.push(Step {
                    item: order.items[i].id,
                    event: Some(event),
                    cause,
                    outcome: Outcome::Stayed {
                        state,
                        reason: StayReason::Unbound {
                            kind: PluginKind::Command,
                            name: name.to_owned(),
                        },
                    },
                });
            }
            return Vec::new();
        };
        let batches: Vec<Vec<usize>> = match command.mode() {
            CommandMode::ByOrder => vec![members],
            CommandMode::ByItem => members.into_iter().map(|i| vec![i]).collect(),
        };
        let mut ready = Vec::new();
        for batch in batches {
            let mut ctx = CommandContext::new(order, &batch, &ev.name, now);
            let result = command.run(&mut ctx);
            let (changes, effects) = ctx.into_parts();
            let ids: Vec<i64> = batch.iter().map(|&i| order.items[i].id).collect();
            match result {
                Ok(()) => {
                    apply_changes(order, &changes);
                    run.decisions.attribute_changes.extend(changes);
                    run.decisions.effects.extend(effects);
                    run.decisions.commands.push(CommandRun {
                        command: name.to_owned(),
                        event,
                        items: ids,
                        outcome: CommandOutcome::Ok,
                    });
                    ready.extend(batch);
                }
                Err(error) => {
                    for &id in &ids {
                        run.decisions.steps.push(Step {
                            item: id,
                            event: Some(event),
                            cause,
                            outcome: Outcome::Stayed {
                                state,
                                reason: StayReason::CommandFailed {
                                    command: name.to_owned(),
                                    error: error.clone(),
                                },
                            },
                        });
                    }
                    run.decisions.commands.push(CommandRun {
                        command: name.to_owned(),
                        event,
                        items: ids,
                        outcome: CommandOutcome::Failed(error),
                    });
                }
            }
        }
        ready
    }

    /// Spryker's target choice: the last transition whose condition holds, else the first
    /// one without a condition, else none. Conditions are checked from the last one
    /// backwards and the first that holds decides, which gives the same answer with fewer
    /// calls.
    fn choose(
        &self,
        order: &Order,
        i: usize,
        transitions: &[TransitionId],
        now: DateTime<Utc>,
    ) -> Result<Option<TransitionId>, StayReason> {
        let item = &order.items[i];
        let mut fallback = None;
        for &tid in transitions.iter().rev() {
            let t = self.process.transition(tid);
            let Some(name) = t.condition.as_deref() else {
                fallback = Some(tid);
                continue;
            };
            let Some(condition) = self.registry.condition(name) else {
                if self.options.unbound == UnboundPolicy::Lenient {
                    continue;
                }
                return Err(StayReason::Unbound {
                    kind: PluginKind::Condition,
                    name: name.to_owned(),
                });
            };
            match condition.check(order, item, now) {
                Ok(true) => return Ok(Some(tid)),
                Ok(false) => {}
                Err(error) => {
                    return Err(StayReason::ConditionFailed {
                        condition: name.to_owned(),
                        error,
                    });
                }
            }
        }
        Ok(fallback)
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_move(
        &self,
        order: &mut Order,
        run: &mut Run,
        i: usize,
        event: Option<EventId>,
        cause: Cause,
        transition: TransitionId,
        now: DateTime<Utc>,
    ) {
        let to = self.process.transition(transition).target;
        let item = &mut order.items[i];
        let from = item.state;
        item.state = to;
        item.state_entered_at = now;
        run.moved[i] = true;
        run.decisions.steps.push(Step {
            item: item.id,
            event,
            cause,
            outcome: Outcome::Moved {
                from,
                to,
                transition,
            },
        });
    }

    /// When timeout event `e` is due for item `i` in its current state: the answer of the
    /// event's bound `timeoutProcessor`, else (unbound, or no answer for this item) entered
    /// the state + the event's `timeout`. `None`: no timeout at all.
    pub(crate) fn due_at(&self, order: &Order, i: usize, e: EventId) -> Option<DateTime<Utc>> {
        let ev = self.process.event(e);
        let item = &order.items[i];
        let ctx = TimeoutContext {
            order,
            item,
            event: &ev.name,
            timeout: ev.timeout.as_ref(),
            entered_at: item.state_entered_at,
        };
        ev.timeout_processor
            .as_deref()
            .and_then(|name| self.registry.timeout_processor(name))
            .and_then(|p| p.due_at(&ctx))
            .or_else(|| ctx.plain())
    }

    /// Timers for every item whose state changed: drop the old ones and set those of the
    /// state it ended in.
    fn finish(&self, order: &Order, mut run: Run, now: DateTime<Utc>) -> Decisions {
        let moved = std::mem::take(&mut run.moved);
        for i in (0..moved.len()).filter(|&i| moved[i]) {
            let item = &order.items[i];
            run.decisions.timers_dropped.push(item.id);
            for &e in self.process.timeout_events_from(item.state) {
                if let Some(due_at) = self.due_at(order, i, e) {
                    run.decisions.timers_set.push(Timer {
                        item: item.id,
                        state: item.state,
                        kind: TimerKind::Timeout(e),
                        due_at,
                    });
                }
            }
            if !self.process.eventless_from(item.state).is_empty() {
                run.decisions.timers_set.push(Timer {
                    item: item.id,
                    state: item.state,
                    kind: TimerKind::Condition,
                    due_at: now,
                });
            }
        }
        run.decisions
    }
}

fn apply_changes(order: &mut Order, changes: &[AttributeChange]) {
    for c in changes {
        match c {
            AttributeChange::Order { key, value } => {
                order.attributes.insert(key.clone(), value.clone());
            }
            AttributeChange::Item { item, key, value } => {
                if let Some(it) = order.items.iter_mut().find(|it| it.id == *item) {
                    it.attributes.insert(key.clone(), value.clone());
                }
            }
        }
    }
}
