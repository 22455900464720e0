//! The in-memory model of one main process with its subprocesses merged in.
//!
//! States, events and transitions live in vectors and refer to each other by index, so
//! the engine's hot path never hashes a name.

mod builder;

pub use builder::{BuildError, ProcessBuilder};

use std::collections::HashMap;
use std::fmt;

use crate::duration::Timeout;

/// Index of a state in [`Process::states`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateId(pub u32);

/// Index of an event in [`Process::events`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub u32);

/// Index of a transition in [`Process::transitions`], in definition order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransitionId(pub u32);

/// Where a definition was read: file (as given to the loader), 1-based line and column.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The file's label (its path, or what a string was loaded as).
    pub file: String,
    /// 1-based line; 0 for definitions built in code.
    pub line: u32,
    /// 1-based column, in characters; 0 for definitions built in code.
    pub column: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A `<state>`.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// Unique within the merged process.
    pub name: String,
    /// `display="..."`: a translation key shops show instead of the name.
    pub display: Option<String>,
    /// Items in this state hold stock (`reserved="true"`).
    pub reserved: bool,
    /// `<flag>` children, any text.
    pub flags: Vec<String>,
    /// The (sub)process that declared the state.
    pub process: String,
    /// Where it is declared.
    pub origin: Origin,
}

/// An `<event>`.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Unique within the merged process.
    pub name: String,
    /// `manual="true"`: a person may trigger it (e.g. from the back office).
    pub manual: bool,
    /// `onEnter="true"`: fires as soon as an item enters a state it leaves.
    pub on_enter: bool,
    /// `command="..."`: the command plugin run when it fires.
    pub command: Option<String>,
    /// `timeout="..."`: fires this long after an item entered the source state.
    pub timeout: Option<Timeout>,
    /// `timeoutProcessor="..."`: the plugin that computes when the timeout is due.
    pub timeout_processor: Option<String>,
    /// The (sub)process that declared the event (the last declaration wins).
    pub process: String,
    /// Where it is declared.
    pub origin: Origin,
}

impl Event {
    /// True when the event fires by time: it has a `timeout` or a `timeoutProcessor`.
    pub fn has_timeout(&self) -> bool {
        self.timeout.is_some() || self.timeout_processor.is_some()
    }
}

/// A `<transition>`.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// The state it leaves.
    pub source: StateId,
    /// The state it enters.
    pub target: StateId,
    /// `None` for an event-less transition, taken by the check-condition worker.
    pub event: Option<EventId>,
    /// `condition="..."`: the condition plugin that must hold for it to be taken.
    pub condition: Option<String>,
    /// `happy="true"`: part of the expected path, drawn and walked as such.
    pub happy: bool,
    /// The (sub)process that declared it.
    pub process: String,
    /// Where it is declared.
    pub origin: Origin,
}

/// Why a process starts in the state it does (see [`crate::parse::LoadOptions`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InitialSource {
    /// `new`, Spryker's default (or the state a [`ProcessBuilder`] was given).
    #[default]
    Default,
    /// Named by configuration (`[initial_states]`, or the loader's options).
    Configured,
    /// The only state no transition enters.
    NotEntered,
}

impl fmt::Display for InitialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Default => "default",
            Self::Configured => "configured",
            Self::NotEntered => "the only state no transition enters",
        })
    }
}

/// A loaded process: one main process with its subprocesses merged, as Spryker merges them.
#[derive(Clone, Debug)]
pub struct Process {
    name: String,
    initial: StateId,
    initial_source: InitialSource,
    states: Vec<State>,
    events: Vec<Event>,
    transitions: Vec<Transition>,
    subprocesses: Vec<String>,
    state_by_name: HashMap<String, StateId>,
    event_by_name: HashMap<String, EventId>,
    /// Per state: its outgoing transitions grouped by event, each group in definition order.
    by_event: Vec<Vec<(EventId, Vec<TransitionId>)>>,
    /// Per state: its outgoing event-less transitions in definition order.
    eventless: Vec<Vec<TransitionId>>,
    /// Per state: events with a timeout on its outgoing transitions, first occurrence order.
    timeout_events: Vec<Vec<EventId>>,
    /// Per state: the onEnter event of its outgoing transitions (the first one defined).
    on_enter: Vec<Option<EventId>>,
    /// Every transition grouped by source state, in definition order within a state; the
    /// transitions out of state `s` are `outgoing[outgoing_start[s]..outgoing_start[s + 1]]`.
    /// Built once (two allocations) so that walks over the graph (reachability, happy path)
    /// are linear in states plus transitions rather than states times transitions.
    outgoing: Vec<TransitionId>,
    outgoing_start: Vec<u32>,
    /// Per state: how many transitions enter it (self-loops included).
    incoming: Vec<u32>,
}

impl Process {
    /// Builds the indexes. Ids in `transitions` must point into `states` and `events`.
    ///
    /// # Panics
    /// When an id is out of range: the parser (or a test) that built the parts is wrong.
    pub fn new(
        name: impl Into<String>,
        initial: StateId,
        states: Vec<State>,
        events: Vec<Event>,
        transitions: Vec<Transition>,
        subprocesses: Vec<String>,
    ) -> Self {
        let n = states.len();
        assert!((initial.0 as usize) < n, "initial state out of range");
        let mut by_event: Vec<Vec<(EventId, Vec<TransitionId>)>> = vec![Vec::new(); n];
        let mut eventless = vec![Vec::new(); n];
        let mut timeout_events: Vec<Vec<EventId>> = vec![Vec::new(); n];
        let mut on_enter = vec![None; n];
        let mut outgoing_start = vec![0u32; n + 1];
        let mut incoming = vec![0u32; n];
        for (i, t) in transitions.iter().enumerate() {
            let tid = TransitionId(i as u32);
            let s = t.source.0 as usize;
            assert!(
                s < n && (t.target.0 as usize) < n,
                "transition state out of range"
            );
            outgoing_start[s + 1] += 1;
            incoming[t.target.0 as usize] += 1;
            match t.event {
                None => eventless[s].push(tid),
                Some(e) => {
                    let ev = &events[e.0 as usize];
                    // Few events leave one state, so this scan stays short.
                    match by_event[s].iter_mut().find(|(id, _)| *id == e) {
                        Some((_, group)) => group.push(tid),
                        None => by_event[s].push((e, vec![tid])),
                    }
                    if ev.has_timeout() && !timeout_events[s].contains(&e) {
                        timeout_events[s].push(e);
                    }
                    if ev.on_enter && on_enter[s].is_none() {
                        on_enter[s] = Some(e);
                    }
                }
            }
        }
        for s in 0..n {
            outgoing_start[s + 1] += outgoing_start[s];
        }
        let mut next: Vec<u32> = outgoing_start[..n].to_vec();
        let mut outgoing = vec![TransitionId(0); transitions.len()];
        for (i, t) in transitions.iter().enumerate() {
            let slot = &mut next[t.source.0 as usize];
            outgoing[*slot as usize] = TransitionId(i as u32);
            *slot += 1;
        }
        let state_by_name = states
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), StateId(i as u32)))
            .collect();
        let event_by_name = events
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), EventId(i as u32)))
            .collect();
        Self {
            name: name.into(),
            initial,
            initial_source: InitialSource::Default,
            states,
            events,
            transitions,
            subprocesses,
            state_by_name,
            event_by_name,
            by_event,
            eventless,
            timeout_events,
            on_enter,
            outgoing,
            outgoing_start,
            incoming,
        }
    }

    /// The main process's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state new items enter (see [`crate::parse::LoadOptions`] for how it is chosen).
    pub fn initial(&self) -> StateId {
        self.initial
    }

    /// Returns a copy whose items start in `state`.
    pub fn with_initial(mut self, state: StateId) -> Self {
        assert!(
            (state.0 as usize) < self.states.len(),
            "initial state out of range"
        );
        self.initial = state;
        self
    }

    /// Why [`Process::initial`] is the initial state.
    pub fn initial_source(&self) -> InitialSource {
        self.initial_source
    }

    /// Returns a copy that records why its initial state was chosen.
    pub(crate) fn with_initial_source(mut self, source: InitialSource) -> Self {
        self.initial_source = source;
        self
    }

    /// All states, indexed by [`StateId`].
    pub fn states(&self) -> &[State] {
        &self.states
    }

    /// All events, indexed by [`EventId`].
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// All transitions in definition order, indexed by [`TransitionId`].
    pub fn transitions(&self) -> &[Transition] {
        &self.transitions
    }

    /// Names of the subprocesses merged into this process, in inclusion order.
    pub fn subprocesses(&self) -> &[String] {
        &self.subprocesses
    }

    /// The state `id` names.
    ///
    /// # Panics
    /// When `id` is not of this process.
    pub fn state(&self, id: StateId) -> &State {
        &self.states[id.0 as usize]
    }

    /// The event `id` names.
    ///
    /// # Panics
    /// When `id` is not of this process.
    pub fn event(&self, id: EventId) -> &Event {
        &self.events[id.0 as usize]
    }

    /// The transition `id` names.
    ///
    /// # Panics
    /// When `id` is not of this process.
    pub fn transition(&self, id: TransitionId) -> &Transition {
        &self.transitions[id.0 as usize]
    }

    /// The state called `name`, if any.
    pub fn state_id(&self, name: &str) -> Option<StateId> {
        self.state_by_name.get(name).copied()
    }

    /// The event called `name`, if any.
    pub fn event_id(&self, name: &str) -> Option<EventId> {
        self.event_by_name.get(name).copied()
    }

    /// Transitions out of `state` that `event` triggers, in definition order. Empty means the
    /// event is not applicable to an item in that state.
    pub fn transitions_for(&self, state: StateId, event: EventId) -> &[TransitionId] {
        self.by_event[state.0 as usize]
            .iter()
            .find(|(e, _)| *e == event)
            .map_or(&[], |(_, ts)| ts.as_slice())
    }

    /// Events that leave `state`, in the order their first transition was defined.
    pub fn events_from(&self, state: StateId) -> impl Iterator<Item = EventId> + '_ {
        self.by_event[state.0 as usize].iter().map(|(e, _)| *e)
    }

    /// Event-less transitions out of `state`, in definition order.
    pub fn eventless_from(&self, state: StateId) -> &[TransitionId] {
        &self.eventless[state.0 as usize]
    }

    /// Events with a timeout (or a timeout processor) that leave `state`.
    pub fn timeout_events_from(&self, state: StateId) -> &[EventId] {
        &self.timeout_events[state.0 as usize]
    }

    /// The onEnter event fired when an item enters `state`.
    pub fn on_enter_event(&self, state: StateId) -> Option<EventId> {
        self.on_enter[state.0 as usize]
    }

    /// All transitions that leave `state`, with or without an event, in definition order.
    pub fn outgoing(&self, state: StateId) -> impl Iterator<Item = (TransitionId, &Transition)> {
        let s = state.0 as usize;
        let range = self.outgoing_start[s] as usize..self.outgoing_start[s + 1] as usize;
        self.outgoing[range]
            .iter()
            .map(|&t| (t, &self.transitions[t.0 as usize]))
    }

    /// How many transitions enter `state` (a self-loop counts).
    pub fn incoming_count(&self, state: StateId) -> usize {
        self.incoming[state.0 as usize] as usize
    }

    /// Condition names used by transitions, sorted and unique.
    pub fn condition_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .transitions
            .iter()
            .filter_map(|t| t.condition.as_deref())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Command names used by events, sorted and unique.
    pub fn command_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .events
            .iter()
            .filter_map(|e| e.command.as_deref())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// True when no transition leaves `state` (with or without an event): an item there
    /// never moves again, so no event can ever apply to it.
    pub fn is_final(&self, state: StateId) -> bool {
        let s = state.0 as usize;
        self.by_event[s].is_empty() && self.eventless[s].is_empty()
    }

    /// The happy transition out of `state` that a walker should follow: the first one with
    /// `happy="true"`.
    pub fn happy_from(&self, state: StateId) -> Option<TransitionId> {
        self.outgoing(state)
            .find(|(_, t)| t.happy)
            .map(|(id, _)| id)
    }

    /// The happy path: from the initial state, the first happy transition out of each state,
    /// until a state has none or one comes round again.
    pub fn happy_path(&self) -> Vec<TransitionId> {
        let mut path = Vec::new();
        let mut seen = vec![false; self.states.len()];
        let mut state = self.initial;
        while !std::mem::replace(&mut seen[state.0 as usize], true) {
            let Some(t) = self.happy_from(state) else {
                break;
            };
            path.push(t);
            state = self.transition(t).target;
        }
        path
    }
}
