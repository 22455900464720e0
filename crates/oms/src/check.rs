//! Warnings about what Spryker silently gets wrong: duplicate state or event names across
//! subprocesses, more than one onEnter event out of a state, a state that mixes manual,
//! timeout and event-less transitions, unreachable states.

use std::fmt;

use serde::Serialize;

use crate::model::{EventId, Origin, Process, StateId};

/// Stable warning codes, for `--json` output and tests. New checks add codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WarningCode {
    /// Two (sub)processes declare a state of the same name; the first declaration is kept.
    DuplicateState,
    /// Two (sub)processes declare an event of the same name; the last one wins.
    DuplicateEvent,
    /// A state has several onEnter events; only the first fires.
    SeveralOnEnter,
    /// A state mixes manual, timeout and event-less ways out.
    MixedTransitions,
    /// A state cannot be reached from the initial state.
    Unreachable,
    /// An event no transition uses.
    UnusedEvent,
}

/// Something that loads but probably does not do what its author meant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// What kind of problem, for tools.
    pub code: WarningCode,
    /// The definition it is about.
    #[serde(serialize_with = "crate::check::ser_origin")]
    pub origin: Origin,
    /// The problem in words, naming the states or events involved.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: warning: {}", self.origin, self.message)
    }
}

pub(crate) fn ser_origin<S: serde::Serializer>(o: &Origin, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(o)
}

/// Warnings about the shape of a loaded process, in state order then event order:
/// several onEnter events out of one state, states that mix manual, timeout and
/// event-less ways out, states not reachable from the initial state, and events no
/// transition uses. Duplicate names are found while loading (see [`crate::parse`]).
pub fn warnings(process: &Process) -> Vec<Warning> {
    let mut out = Vec::new();
    let reachable = reachable(process);
    for (i, state) in process.states().iter().enumerate() {
        let id = StateId(i as u32);
        let on_enter: Vec<&str> = process
            .events_from(id)
            .map(|e| process.event(e))
            .filter(|e| e.on_enter)
            .map(|e| e.name.as_str())
            .collect();
        if on_enter.len() > 1 {
            out.push(Warning {
                code: WarningCode::SeveralOnEnter,
                origin: state.origin.clone(),
                message: format!(
                    "state {:?} has {} onEnter events ({}); only {:?} fires on entry",
                    state.name,
                    on_enter.len(),
                    on_enter.join(", "),
                    on_enter[0]
                ),
            });
        }
        if let Some(kinds) = mixed_ways_out(process, id) {
            out.push(Warning {
                code: WarningCode::MixedTransitions,
                origin: state.origin.clone(),
                message: format!("state {:?} mixes {kinds} transitions", state.name),
            });
        }
        if !reachable[i] {
            out.push(Warning {
                code: WarningCode::Unreachable,
                origin: state.origin.clone(),
                message: format!(
                    "state {:?} cannot be reached from the initial state {:?}",
                    state.name,
                    process.state(process.initial()).name
                ),
            });
        }
    }
    let mut used = vec![false; process.events().len()];
    for t in process.transitions() {
        if let Some(e) = t.event {
            used[e.0 as usize] = true;
        }
    }
    for (event, used) in process.events().iter().zip(used) {
        if !used {
            out.push(Warning {
                code: WarningCode::UnusedEvent,
                origin: event.origin.clone(),
                message: format!("event {:?} is used by no transition", event.name),
            });
        }
    }
    out
}

/// States reachable from the initial state through any transition.
fn reachable(process: &Process) -> Vec<bool> {
    let mut seen = vec![false; process.states().len()];
    let mut stack = vec![process.initial()];
    seen[process.initial().0 as usize] = true;
    while let Some(s) = stack.pop() {
        for (_, t) in process.outgoing(s) {
            let i = t.target.0 as usize;
            if !seen[i] {
                seen[i] = true;
                stack.push(t.target);
            }
        }
    }
    seen
}

/// The kinds a state's ways out mix, e.g. `"manual and timeout"`, when two different ways
/// out (events, or the event-less transitions together) are of different kinds. One event
/// that is both manual and timeout is a single way out and does not mix with itself.
fn mixed_ways_out(process: &Process, state: StateId) -> Option<String> {
    const MANUAL: usize = 0;
    const TIMEOUT: usize = 1;
    const EVENTLESS: usize = 2;
    const NAMES: [&str; 3] = ["manual", "timeout", "event-less"];
    let mut ways: Vec<[bool; 3]> = process
        .events_from(state)
        .map(|e: EventId| {
            let ev = process.event(e);
            [ev.manual, ev.has_timeout(), false]
        })
        .collect();
    if !process.eventless_from(state).is_empty() {
        let mut k = [false; 3];
        k[EVENTLESS] = true;
        ways.push(k);
    }
    let mut mixed = [false; 3];
    for (a, wa) in ways.iter().enumerate() {
        for wb in &ways[a + 1..] {
            for x in [MANUAL, TIMEOUT, EVENTLESS] {
                for y in [MANUAL, TIMEOUT, EVENTLESS] {
                    if x != y && wa[x] && wb[y] {
                        mixed[x] = true;
                        mixed[y] = true;
                    }
                }
            }
        }
    }
    let kinds: Vec<&str> = (0..3).filter(|&k| mixed[k]).map(|k| NAMES[k]).collect();
    match kinds.as_slice() {
        [] | [_] => None,
        [a, b] => Some(format!("{a} and {b}")),
        _ => Some(format!("{}, {} and {}", kinds[0], kinds[1], kinds[2])),
    }
}
