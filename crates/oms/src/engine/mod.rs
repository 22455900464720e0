//! The pure engine: given an order's items, a process and an event (or the time), it decides
//! how items move, runs commands, and lists the timers to drop and set. It returns
//! [`Decisions`]; the caller persists them in one transaction.
//!
//! Target choice follows Spryker's `StateMachine\Finder`/`Trigger`: the event's command runs
//! first (per item or once per source state), then among the transitions with that event a
//! true condition wins (the last one defined when several are true), a transition without a
//! condition is the fallback (the first one defined), and none means the item stays.

mod decisions;
mod step;

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::model::{EventId, Process, StateId, TransitionId};
use crate::plugin::{
    AttributeChange, CommandContext, CommandMode, PluginKind, Registry, TimeoutContext,
};

pub use decisions::{
    Cause, CommandOutcome, CommandRun, Decisions, EngineError, Outcome, StayReason, Step, Timer,
    TimerKind,
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
